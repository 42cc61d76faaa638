"""A few training steps on one example, to see a LoRA on SDXL-, SD3- or Flux-shaped models learn.

Introduced in notebooks/12_beyond_sd15.ipynb.

:func:`one_example` makes one seeded training example of each model's own objective: a UNet
(SD 1.5, SDXL) predicts the noise added to the latents at a timestep of the DDPM schedule; SD3 and
Flux are trained by flow matching, ``x_t = (1 - s) x_0 + s noise``, and predict the velocity
``noise - x_0``. :func:`fit_one_example` runs Adam on whatever parameters of the model require
gradients (the LoRA's, after ``inject.inject_lora``; all of them for a full fine-tune) and returns
the loss before each step and after the last. On a tiny, untrained model this shows that the
gradient reaches the adapted layers and that the loss falls; it says nothing about pictures.

Left out: batches, noise and timestep sampling, schedulers, mixed precision, saving.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn
from torch.nn import functional as F

from lorakit.architectures.calling import denoise

__all__ = ["fit_one_example", "one_example"]


def one_example(model: nn.Module, text: torch.Tensor, pooled: torch.Tensor, seed: int = 0) -> dict:
    """``{"inputs": denoise's keyword arguments, "target": what the model should output}`` for a
    seeded latent, noise and timestep, with a prompt's ``text`` (B, T, D) and ``pooled`` (B, P)."""
    g = torch.Generator().manual_seed(seed)
    side = 16
    channels = model.config.in_channels if isinstance(model, UNet2DConditionModel) else 4
    x0 = torch.randn(text.shape[0], channels, side, side, generator=g)  # (B, C, H, W)
    noise = torch.randn(x0.shape, generator=g)
    if isinstance(model, UNet2DConditionModel):
        t = 500
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2  # SD's scaled_linear schedule
        keep = torch.cumprod(1 - betas, dim=0)[t]
        noisy, target = keep.sqrt() * x0 + (1 - keep).sqrt() * noise, noise
    else:
        s = 0.5
        noisy, target, t = (1 - s) * x0 + s * noise, noise - x0, 1000 * s
    inputs = dict(latents=noisy, text=text, pooled=pooled, timestep=t)
    return {"inputs": inputs, "target": target}


def fit_one_example(model: nn.Module, example: dict, steps: int, lr: float = 1e-2) -> list[float]:
    """``steps`` Adam steps on the trainable parameters of ``model`` towards ``example``'s target
    (mean squared error); returns ``steps + 1`` losses: before each step, and after the last."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            "nothing to train: inject a LoRA first (inject.inject_lora), or call "
            "model.requires_grad_(True) for a full fine-tune."
        )
    optimizer = torch.optim.Adam(trainable, lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(denoise(model, **example["inputs"]), example["target"])
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        losses.append(F.mse_loss(denoise(model, **example["inputs"]), example["target"]).item())
    return losses
