"""SDXL, SD3 and Flux from their published configs, on the meta device, and tiny twins for the CPU.

Introduced in notebooks/12_beyond_sd15.ipynb.

``SDXL_UNET_CONFIG`` is ``stabilityai/stable-diffusion-xl-base-1.0``'s ``unet/config.json``;
``SD3_MEDIUM_TRANSFORMER_CONFIG`` is ``stabilityai/stable-diffusion-3-medium-diffusers``'s
``transformer/config.json`` (SD3 *medium*, not 3.5); ``FLUX_DEV_TRANSFORMER_CONFIG`` is
``black-forest-labs/FLUX.1-dev``'s. :func:`build` makes any of them, or SD 1.5's UNet, on the
``meta`` device: every shape, no memory, no download. :func:`build_tiny` makes a seeded model of
the same class and block layout with small widths (as diffusers' own tests do), whose text width is
the tiny SD's, so that its text encoder can feed all of them.

Left out: the text encoders and VAEs of these models (widths only, in ``TEXT_ENCODERS``), SD 3.5's
dual-attention blocks, Flux's schnell and Kontext variants, loading real weights.
"""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel
from torch import nn

from lorakit.models import SD15_UNET_CONFIG, TINY_TEXT_WIDTH, TINY_UNET_CONFIG, UNET_COMMON

__all__ = [
    "ARCHITECTURES",
    "FLUX_DEV_TRANSFORMER_CONFIG",
    "SD3_MEDIUM_TRANSFORMER_CONFIG",
    "SDXL_UNET_CONFIG",
    "TEXT_ENCODERS",
    "TINY_CONFIGS",
    "build",
    "build_tiny",
]

SDXL_UNET_CONFIG = dict(
    sample_size=128,  # 128x128x4 latents: 1024x1024 pictures
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),  # diffusers' name for the number of heads: 64 wide each
    cross_attention_dim=2048,  # CLIP ViT-L (768) and OpenCLIP ViT-bigG (1280), side by side
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # 6 size/crop numbers x 256 + bigG's pooled 1280
    use_linear_projection=True,
    **UNET_COMMON,  # norm_num_groups 32, act_fn "silu", ...: as SD 1.5's
)
SD3_MEDIUM_TRANSFORMER_CONFIG = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,  # JointTransformerBlocks
    attention_head_dim=64,
    num_attention_heads=24,  # 24 x 64 = 1536 wide
    joint_attention_dim=4096,  # T5-XXL's width (CLIP's 2048 are padded to it)
    caption_projection_dim=1536,
    pooled_projection_dim=2048,  # CLIP ViT-L's 768 + OpenCLIP ViT-bigG's 1280
    pos_embed_max_size=192,
)
FLUX_DEV_TRANSFORMER_CONFIG = dict(
    patch_size=1,
    in_channels=64,  # 16 latent channels x a 2x2 patch, packed before the model
    num_layers=19,  # double-stream FluxTransformerBlocks
    num_single_layers=38,  # single-stream FluxSingleTransformerBlocks
    attention_head_dim=128,
    num_attention_heads=24,  # 24 x 128 = 3072 wide
    joint_attention_dim=4096,  # T5-XXL
    pooled_projection_dim=768,  # CLIP ViT-L's pooled output
    guidance_embeds=True,  # dev is guidance-distilled: the guidance scale is an input
    axes_dims_rope=(16, 56, 56),  # rotary dimensions for (text/id, row, column): 128 in all
)
# The text encoders whose widths the configs above hold (hidden width of each).
TEXT_ENCODERS = {
    "sd15": {"CLIP ViT-L/14": 768},
    "sdxl": {"CLIP ViT-L/14": 768, "OpenCLIP ViT-bigG/14": 1280},
    "sd3": {"CLIP ViT-L/14": 768, "OpenCLIP ViT-bigG/14": 1280, "T5-XXL": 4096},
    "flux": {"CLIP ViT-L/14": 768, "T5-XXL": 4096},
}

# Tiny twins: the same classes and block layouts, small widths, the tiny SD's text width (64).
TINY_CONFIGS = {
    "sd15": TINY_UNET_CONFIG,
    "sdxl": dict(
        SDXL_UNET_CONFIG,
        sample_size=16,
        block_out_channels=(16, 32, 64),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),
        cross_attention_dim=TINY_TEXT_WIDTH,
        addition_embed_type_num_heads=4,
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + TINY_TEXT_WIDTH,
        norm_num_groups=8,
    ),
    "sd3": dict(
        SD3_MEDIUM_TRANSFORMER_CONFIG,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=TINY_TEXT_WIDTH,
        caption_projection_dim=32,
        pooled_projection_dim=TINY_TEXT_WIDTH,
        pos_embed_max_size=16,
    ),
    "flux": dict(
        FLUX_DEV_TRANSFORMER_CONFIG,
        in_channels=16,  # 4 latent channels x 2x2
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_TEXT_WIDTH,
        pooled_projection_dim=TINY_TEXT_WIDTH,
        axes_dims_rope=(4, 6, 6),
    ),
}
ARCHITECTURES = {  # name -> (what it is, diffusers class, its published config)
    "sd15": ("SD 1.5 UNet", UNet2DConditionModel, SD15_UNET_CONFIG),
    "sdxl": ("SDXL base 1.0 UNet", UNet2DConditionModel, SDXL_UNET_CONFIG),
    "sd3": ("SD3 medium MMDiT", SD3Transformer2DModel, SD3_MEDIUM_TRANSFORMER_CONFIG),
    "flux": ("Flux.1-dev transformer", FluxTransformer2DModel, FLUX_DEV_TRANSFORMER_CONFIG),
}


def _known(name: str) -> tuple[str, type, dict]:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: use one of {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[name]


def build(name: str, device: str = "meta") -> nn.Module:
    """The denoiser of ``name`` ("sd15", "sdxl", "sd3", "flux") from its published config, on
    ``device`` (default meta: shapes and parameter counts only, nothing downloaded)."""
    _, cls, config = _known(name)
    with torch.device(device):
        return cls(**config)


def build_tiny(name: str, seed: int = 0) -> nn.Module:
    """A tiny model of ``name``'s class and layout with fresh, seeded weights, on the CPU."""
    _, cls, _ = _known(name)
    torch.manual_seed(seed)
    return cls(**TINY_CONFIGS[name]).eval()
