"""What training minimises, and how fast: SD's own loss, min-SNR weights, the lr schedule.

Introduced in notebooks/06_train_style_lora.ipynb.

:func:`epsilon_loss` noises a cached latent to a random timestep and asks the UNet for the noise
(or, for a v-prediction model, the velocity): a mean squared error per picture, optionally weighted
by :func:`min_snr_weights` (Hang et al. 2023, as diffusers' ``train_text_to_image``), which counts
the least noisy timesteps less. :func:`lr_factor` is the schedule AdamW follows: a linear warm-up,
then constant or a cosine down to 0 (:func:`warmup_cosine`, which the tiny SD's pretraining uses
too).

Left out: other prediction types (sample), offset noise, input perturbation, other schedules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from lorakit.train import settings

__all__ = ["epsilon_loss", "lr_factor", "min_snr_weights", "noise_scheduler", "warmup_cosine"]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine from 1 down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lr_factor(step: int, cfg: settings.TrainConfig) -> float:
    """The learning-rate multiplier at optimizer step ``step``: linear warm-up, then constant or
    cosine."""
    if cfg.lr_schedule == "constant" and step >= cfg.warmup_steps:
        return 1.0
    return warmup_cosine(step, cfg.warmup_steps, cfg.steps)


def min_snr_weights(
    alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as diffusers' train_text_to_image:
    min(snr, gamma) / snr."""
    a = alphas_cumprod.to(t.device)[t].float()  # (B,)
    snr = a / (1 - a)  # (B,) signal-to-noise ratio of each timestep
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def epsilon_loss(
    unet, scheduler, latents, context, t, noise, gamma: float | None, dtype=None
) -> torch.Tensor:
    """SD's training loss on one batch: noise ``latents`` to ``t``, predict the noise (or v),
    weighted MSE.

    ``dtype``: the UNet's (None: ``unet.dtype``, which walks every module: the loop passes it).
    """
    dtype = dtype or unet.dtype
    noisy = scheduler.add_noise(latents, noise, t)  # (B, 4, h, w)
    pred = unet(noisy.to(dtype), t, context.to(dtype)).sample.float()  # (B, 4, h, w)
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"lorakit trains epsilon or v_prediction models, this one predicts {kind!r}."
        )
    target = noise if kind == "epsilon" else scheduler.get_velocity(latents, noise, t)
    per_image = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))  # (B,)
    if gamma is not None:
        per_image = per_image * min_snr_weights(scheduler.alphas_cumprod, t, gamma, kind)
    return per_image.mean()


def noise_scheduler(pipe) -> DDPMScheduler:
    """The training noise schedule of ``pipe`` (DDPM, from its scheduler's config), on its
    device."""
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(pipe.device)
    return scheduler
