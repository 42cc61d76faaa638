"""The real models' module names, built on the meta device, that kohya names resolve through.

Introduced in notebooks/05_inject_lora.ipynb (SD 1.5's); SDXL's in notebooks/12_beyond_sd15.ipynb.

A kohya name has ``_`` where the module path had dots, and which ``_`` was a dot is not guessed:
the names are looked up among a model's real module paths. When no model is given, the model is
the file's architecture built from its published config with no weights (``torch.device("meta")``,
nothing downloaded): SD 1.5's UNet and text encoder (the tiny SD shares every path), or SDXL's
UNet, CLIP ViT-L and OpenCLIP ViT-bigG text encoders, or SD3's or Flux's transformer
(``lora_transformer_<path>``). :func:`module_paths` lists them.

Left out: SD3's and Flux's text encoders, kohya's fused names for their transformers (kept as
they are: ``img_attn_qkv`` is no single module of diffusers'), the mapping (``kohya``).
"""

from __future__ import annotations

import functools

import torch

from lorakit.formats import architectures, lora_weights

__all__ = ["SDXL_TEXT_2_CONFIG", "module_paths"]

SDXL_TEXT_2_CONFIG = dict(  # stabilityai/stable-diffusion-xl-base-1.0, text_encoder_2/config.json
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)


def _paths(prefix: str, model) -> list[str]:
    return [lora_weights.canonical(prefix + n) for n, _ in model.named_modules() if n]


@functools.lru_cache(maxsize=4)
def module_paths(arch: str) -> tuple[str, ...]:
    """Every module path of ``arch``'s UNet and text encoders (``text_encoder.<path>``,
    ``text_encoder_2.<path>``), or of SD3's or Flux's transformer (both, for a transformer too small
    to tell which), from the published configs on the meta device."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lorakit import models
    from lorakit.architectures import configs  # lesson 12's SDXL, imported when asked for

    if arch in architectures.TRANSFORMERS:  # the transformer's paths alone (both: SD3 or Flux)
        names = {architectures.SD3: ("sd3",), architectures.FLUX: ("flux",)}.get(
            arch, ("sd3", "flux")
        )
        return tuple(dict.fromkeys(p for n in names for p in _paths("", configs.build(n))))
    if arch not in (architectures.SD, architectures.SDXL):
        return ()
    sdxl = arch == architectures.SDXL
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            **(configs.SDXL_UNET_CONFIG if sdxl else models.SD15_UNET_CONFIG)
        )
        text = CLIPTextModel(CLIPTextConfig(**models.SD15_TEXT_CONFIG))
        paths = _paths("", unet) + _paths("text_encoder.", text)
        if sdxl:
            text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2_CONFIG))
            paths += _paths("text_encoder_2.", text_2)
    return tuple(paths)
