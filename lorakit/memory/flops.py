"""How much arithmetic one training step costs: FLOPs counted on the ``meta`` device.

Introduced in notebooks/08_stable_diffusion_gpu.ipynb.

:func:`flops_per_sample` counts one picture's forward through the UNet and the backward to the
UNet's input with ``torch.utils.flop_counter``, on the ``meta`` device (no memory, no time): that
is what a LoRA step runs, since the frozen weights get no gradient but the activations (and so the
LoRA, which sits among them) do. Gradient checkpointing adds one more forward
(:func:`checkpointing_factor`).

Left out: the VAE and text encoder (they run once, before the loop), and the LoRA's own
arithmetic and the optimizer's (a few small matrices next to the UNet's).
"""

from __future__ import annotations

import functools
import json

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from lorakit.memory import activations

__all__ = ["checkpointing_factor", "flops_per_sample"]


@functools.lru_cache(maxsize=8)
def _flops(config_json: str, latent: int, tokens: int) -> tuple[float, float]:
    unet_config = json.loads(config_json)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config).requires_grad_(False)
        x = torch.randn(
            1, unet_config["in_channels"], latent, latent, requires_grad=True
        )  # (1, 4, h, w)
        ctx = torch.randn(1, tokens, unet_config["cross_attention_dim"])  # (1, 77, D)
        t = torch.tensor([500])
    with FlopCounterMode(display=False) as forward:
        out = unet(x, t, ctx).sample
    with FlopCounterMode(display=False) as backward:
        out.sum().backward()
    return float(forward.get_total_flops()), float(backward.get_total_flops())


def flops_per_sample(
    unet_config: dict, latent: int, tokens: int = activations.TEXT_TOKENS
) -> dict[str, float]:
    """Forward and input-gradient backward FLOPs of one picture through the UNet, counted on the
    ``meta`` device.

    ``latent`` is the latent side (64 for SD 1.5 at 512x512). A LoRA step runs both: the frozen
    weights need no gradient, the activations (and so the LoRA, which sits among them) do.
    """
    forward, backward = _flops(json.dumps(unet_config, sort_keys=True), latent, tokens)
    return {"forward": forward, "backward_input": backward}


def checkpointing_factor(flops: dict[str, float]) -> float:
    """How much more arithmetic a step costs with gradient checkpointing: the forward runs
    twice."""
    step = flops["forward"] + flops["backward_input"]
    return (step + flops["forward"]) / step
