"""One denoiser call for each architecture: what SD 1.5, SDXL, SD3 and Flux take besides latents.

Introduced in notebooks/12_beyond_sd15.ipynb.

SD 1.5's UNet takes the latents, the timestep and the text tokens. SDXL's also takes the pooled
text vector and six numbers (original size, crop corner, target size) as ``added_cond_kwargs``.
SD3's MMDiT takes the pooled vector as ``pooled_projections`` and cuts the latents into 2x2 patches
itself. Flux takes its latents already packed, 2x2 patches as tokens (:func:`pack_latents`), with
a position id per image and text token for its rotary embedding, and the guidance scale as an
input. :func:`denoise` hides these differences so that a lesson can call any of them alike, and
always returns a tensor of the latents' shape.

Left out: classifier-free guidance, the samplers (SD3 and Flux use flow matching), image sizes
other than square, Flux's control and image inputs.
"""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel
from torch import nn

__all__ = ["denoise", "image_ids", "pack_latents", "unpack_latents"]


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, C * 4): Flux's tokens, one a 2x2 patch of latents."""
    b, c, h, w = latents.shape
    patches = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)  # (B, N, 4C)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents`: (B, N, 4C) -> (B, C, H, W)."""
    b, _, packed = tokens.shape
    c = packed // 4
    patches = tokens.reshape(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, c, height, width)


def image_ids(height: int, width: int) -> torch.Tensor:
    """Flux's position ids of the packed image tokens: (N, 3) rows of (0, row, column)."""
    rows, cols = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()


def denoise(
    model: nn.Module,
    latents: torch.Tensor,
    text: torch.Tensor,
    pooled: torch.Tensor,
    timestep: float = 500.0,
) -> torch.Tensor:
    """The output of ``model`` (B, C, H, W) for ``latents`` (B, C, H, W), ``text`` tokens (B, T, D)
    and the ``pooled`` text vector (B, P), at ``timestep`` (0 to 1000)."""
    b, _, h, w = latents.shape
    t = torch.full((b,), float(timestep), device=latents.device)
    if isinstance(model, UNet2DConditionModel):
        extra = None
        if model.config.addition_embed_type == "text_time":
            size = float(h * 8)  # original size, crop corner (0, 0), target size: SDXL's pipeline
            time_ids = torch.tensor([size, size, 0.0, 0.0, size, size]).repeat(b, 1)
            extra = {"text_embeds": pooled, "time_ids": time_ids.to(latents)}
        return model(latents, t, encoder_hidden_states=text, added_cond_kwargs=extra).sample
    if isinstance(model, SD3Transformer2DModel):
        return model(
            hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled, timestep=t
        ).sample
    if isinstance(model, FluxTransformer2DModel):
        out = model(
            hidden_states=pack_latents(latents),
            encoder_hidden_states=text,
            pooled_projections=pooled,
            timestep=t / 1000,  # Flux's pipeline passes t / 1000
            img_ids=image_ids(h, w).to(latents),
            txt_ids=torch.zeros(text.shape[1], 3).to(latents),
            guidance=torch.full((b,), 3.5).to(latents) if model.config.guidance_embeds else None,
        ).sample  # (B, N, 4C)
        return unpack_latents(out, h, w)
    raise TypeError(
        f"denoise takes a diffusers UNet2DConditionModel, SD3Transformer2DModel or "
        f"FluxTransformer2DModel, got {type(model).__name__}."
    )
