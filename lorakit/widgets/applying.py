"""A LoRA in the pipeline only while an explorer draws: what the LoRA explorers share.

Introduced in notebooks/07_rank_alpha_lab.ipynb.

The LoRA explorers take LoRAs trained beforehand (a file, or ``formats.LoRAWeights``), and put
one into ``pipe`` only inside :func:`lora_applied` (``formats.apply_lora``, then
``inject.remove_lora``, bit-exact), so the pipeline is left as it was given. A pipeline that
already holds LoRA layers is refused, saying how to pass them instead.

Left out: training from a widget (``outline_loras.train_or_load`` trains the LoRAs beforehand),
several LoRAs applied at once.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from lorakit import formats, inject

__all__ = ["as_lora_weights", "check_no_lora", "lora_applied", "scaling_text"]


def as_lora_weights(lora) -> formats.LoRAWeights:
    """``lora`` as ``formats.LoRAWeights``: read from a file, or as it is."""
    if isinstance(lora, formats.LoRAWeights):
        return lora
    if isinstance(lora, str | os.PathLike):
        return formats.load_lora(lora)
    raise TypeError(
        f"expected a LoRA file path or formats.LoRAWeights, got {type(lora).__name__}; "
        "for a LoRA trained in this notebook pass formats.from_model(pipe.unet), then "
        "inject.remove_lora(pipe.unet)."
    )


def check_no_lora(pipe) -> None:
    """The explorers put their own LoRA into ``pipe.unet`` while they draw: it must hold none."""
    existing = next(inject.lora_layers(pipe), None)
    if existing is not None:
        raise RuntimeError(
            f"pipe.unet already has LoRA layers (e.g. {existing[0]}): keep them with "
            "weights = formats.from_model(pipe.unet), call inject.remove_lora(pipe.unet), "
            "and pass the weights to the explorer."
        )


@contextmanager
def lora_applied(pipe, weights: formats.LoRAWeights, scale: float = 1.0):
    """``weights`` in ``pipe`` (its UNet, and its text encoder if the LoRA has a part for it) at
    ``scale`` inside the ``with`` block; removed (bit-exactly) after it."""
    check_no_lora(pipe)
    formats.apply_lora(pipe, weights, scale)
    try:
        yield pipe
    finally:
        inject.remove_lora(pipe)


def scaling_text(weights: formats.LoRAWeights, alpha: float | None = None) -> str:
    """The scaling as HTML, alpha/r = 8/4 (alpha/&radic;r with rsLoRA), at ``alpha`` if given."""
    alpha = weights.alpha if alpha is None else alpha
    return (
        f"alpha/&radic;r = {alpha:g}/&radic;{weights.r}"
        if weights.use_rslora
        else f"alpha/r = {alpha:g}/{weights.r}"
    )
