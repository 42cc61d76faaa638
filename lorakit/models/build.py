"""Building SD-shaped models from configs: SD 1.5's real ones, and the tiny SD's smaller widths.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

``SD15_*_CONFIG`` are SD 1.5's configs (the hub's ``unet/``, ``text_encoder/``, ``vae/`` and
``scheduler/`` config.json); ``build_sd15`` builds its parts on the ``meta`` device (shapes and
parameter counts, no download, no memory). ``build_tiny_sd`` makes the tiny SD's parts with fresh
weights (``lorakit.maintainer.pretrain`` trains them): its UNet has SD 1.5's block layout and
``layers_per_block=2``, so every module path (``down_blocks.0.attentions.0.transformer_blocks.0
.attn2.to_q``) and every kohya key is the same as in SD 1.5; only the widths are smaller.

``UNet2DConditionModel`` is diffusers' UNet class, named here for ``from_config``.

Left out: SDXL and SD 2.x layouts; loading trained weights (``models.loading``).
"""

from __future__ import annotations

import functools

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from lorakit import lora
from lorakit.models.tokenizer import build_tokenizer

__all__ = [
    "SD15_SCHEDULER_CONFIG",
    "SD15_TEXT_CONFIG",
    "SD15_UNET_CONFIG",
    "UNET_COMMON",
    "SD15_VAE_CONFIG",
    "TINY_TEXT_WIDTH",
    "TINY_UNET_CONFIG",
    "TINY_VAE_CONFIG",
    "UNet2DConditionModel",
    "build_sd15",
    "build_tiny_sd",
    "count_parameters",
    "tiny_scheduler",
]

# what SD 1.5's and SDXL's published UNet configs both say beyond their shapes
UNET_COMMON = dict(
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
)
SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
    **UNET_COMMON,
)
SD15_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
SD15_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    scaling_factor=0.18215,
)
SD15_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)

# The tiny SD: SD 1.5's layout, small widths. Latents 16x16x4 for 64x64 images.
TINY_TEXT_WIDTH = 64
TINY_UNET_CONFIG = dict(
    SD15_UNET_CONFIG,
    sample_size=16,
    block_out_channels=(32, 64, 128, 128),
    cross_attention_dim=TINY_TEXT_WIDTH,
    attention_head_dim=4,
    norm_num_groups=16,
)
TINY_VAE_CONFIG = dict(
    SD15_VAE_CONFIG,
    layers_per_block=1,
    sample_size=64,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    norm_num_groups=16,
    scaling_factor=1.0,  # pretrain.py measures the real factor
)


def build_tiny_sd(seed: int = 0) -> dict:
    """The tiny SD's parts with fresh (untrained) weights, seeded: tokenizer, text_encoder, vae,
    unet, scheduler."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_TEXT_WIDTH,
        intermediate_size=4 * TINY_TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=TINY_TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return dict(
        tokenizer=tokenizer,
        text_encoder=CLIPTextModel(text_config),
        vae=AutoencoderKL(**TINY_VAE_CONFIG),
        unet=UNet2DConditionModel(**TINY_UNET_CONFIG),
        scheduler=tiny_scheduler(),
    )


def tiny_scheduler() -> DPMSolverMultistepScheduler:
    """SD 1.5's noise schedule with the DPM-Solver++ (2M) sampler: as good in 10 steps as SD 1.5's
    own PNDM sampler in 25 on the tiny SD (benchmarks/tiny_sd_quality.py), so a CPU grid takes
    seconds."""
    return DPMSolverMultistepScheduler.from_config(PNDMScheduler(**SD15_SCHEDULER_CONFIG).config)


def build_sd15(device: str = "meta") -> dict:
    """SD 1.5's UNet, text encoder and VAE from its real configs, on ``device`` (default: meta,
    no memory)."""
    with torch.device(device):
        return dict(
            unet=UNet2DConditionModel(**SD15_UNET_CONFIG),
            text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG)),
            vae=AutoencoderKL(**SD15_VAE_CONFIG),
        )


# ``lora.count_parameters`` counting every parameter by default (a model is counted whole; works
# on the meta device).
count_parameters = functools.partial(lora.count_parameters, trainable_only=False)
count_parameters.__doc__ = """``lora.count_parameters(module, trainable_only=False)``: every
parameter of a model, trained or frozen, by default (works on the meta device)."""
