"""A tiny SDXL pipeline: lesson 12's tiny SDXL UNet with two small CLIP text encoders.

Introduced in notebooks/12_beyond_sd15.ipynb.

diffusers' ``StableDiffusionXLPipeline`` around the tiny SDXL (``configs.build_tiny("sdxl")``:
SDXL's block layout at small widths) and two CLIP text encoders of 2 layers, 32 wide (the second
with its projection, as SDXL's OpenCLIP ViT-bigG has), seeded. Its LoRA loaders are diffusers'
own, so a LoRA file for SDXL can be read by diffusers and by lorakit on the same small model and
compared.

Left out: the VAE and the tokenizers (``None``: the pipeline is a holder of the parts that LoRA
files adapt; nothing is drawn with it).
"""

from __future__ import annotations

import torch

from lorakit import models
from lorakit.architectures import configs

__all__ = ["TINY_TEXT_CONFIG", "tiny_sdxl_pipeline"]

TINY_TEXT_CONFIG = dict(  # SD 1.5's CLIP at small sizes (its special tokens inside the vocabulary)
    models.SD15_TEXT_CONFIG,
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    projection_dim=32,
)


def tiny_sdxl_pipeline(seed: int = 0):
    """The tiny SDXL UNet and two tiny text encoders in a ``StableDiffusionXLPipeline``."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    text = CLIPTextConfig(**TINY_TEXT_CONFIG)
    return StableDiffusionXLPipeline(
        vae=None,
        text_encoder=CLIPTextModel(text),
        text_encoder_2=CLIPTextModelWithProjection(text),
        tokenizer=None,
        tokenizer_2=None,
        unet=configs.build_tiny("sdxl", seed),
        scheduler=EulerDiscreteScheduler(),
    )
