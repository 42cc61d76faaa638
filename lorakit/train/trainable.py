"""What trains: a LoRA added to the UNet (and to the text encoder), or every UNet weight.

Introduced in notebooks/06_train_style_lora.ipynb.

:func:`add_lora` wraps ``cfg.target_modules`` in LoRA layers (``lorakit.inject``), with A drawn
from the seed; only ``lora_A`` and ``lora_B`` train. ``text_encoder=True`` also trains a LoRA on
CLIP's attention and MLP (:func:`add_text_lora`, the same rank and alpha), as kohya's trainer does
by default; the file then holds both parts. ``method="full"`` fine-tunes every UNet weight
instead (:func:`unfreeze`): the baseline that LoRA's claims are measured against, lessons 09-10.
:func:`trainable_state` is what a checkpoint keeps of either.

Left out: other adapters (DoRA, LoHa, LoKr), training the VAE.
"""

from __future__ import annotations

import torch

from lorakit import inject, targets
from lorakit.train import settings

__all__ = [
    "add_lora",
    "add_text_lora",
    "lora_holder",
    "lora_parameters",
    "trainable_state",
    "unfreeze",
]


def add_lora(unet, cfg: settings.TrainConfig) -> list[str]:
    """Step 3: wrap ``cfg.target_modules`` in LoRA layers (A drawn from ``cfg.seed``), unless the
    UNet has them already.

    Returns the wrapped module paths.
    """
    names = [n for n, _ in inject.lora_layers(unet)]
    if names:
        return names
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the LoRA A init depends on the seed only
        return inject.inject_lora(
            unet,
            r=cfg.r,
            alpha=cfg.alpha,
            target_modules=cfg.target_modules,
            dropout=cfg.lora_dropout,
        )


def add_text_lora(text_encoder, cfg: settings.TrainConfig) -> list[str]:
    """Step 3 with ``cfg.text_encoder``: the same rank and alpha on CLIP's attention and MLP (A
    drawn from the seed); returns the wrapped paths as ``text_encoder.<path>``."""
    names = [n for n, _ in inject.lora_layers(text_encoder)]
    if not names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)  # another draw than the UNet's
            names = inject.inject_lora(
                text_encoder,
                r=cfg.r,
                alpha=cfg.alpha,
                target_modules="text",
                dropout=cfg.lora_dropout,
            )
    return [targets.TEXT_PREFIX + n for n in names]


def lora_holder(pipe, cfg: settings.TrainConfig):
    """What holds the LoRA that trains: the UNet, or the whole pipeline when the text encoder
    trains too."""
    return pipe if cfg.text_encoder else pipe.unet


def lora_parameters(pipe, cfg: settings.TrainConfig) -> list[torch.Tensor]:
    """Every ``lora_A`` and ``lora_B`` weight of :func:`lora_holder`, in module order."""
    return inject.lora_weights(lora_holder(pipe, cfg))


def unfreeze(unet) -> list[torch.Tensor]:
    """Step 3 of a full fine-tune (``method="full"``): every UNet weight trainable; returns them,
    in module order.

    The weights must be float32: AdamW's tiny updates would round away in float16 or bfloat16
    (mixed precision still computes in them, with ``mixed_precision``).
    """
    if next(inject.lora_layers(unet), None) is not None:
        raise ValueError(
            "method='full' fine-tunes the UNet itself, but it has LoRA layers: call "
            "inject.remove_lora(pipe.unet) first."
        )
    dtypes = {p.dtype for p in unet.parameters()}
    if dtypes != {torch.float32}:
        raise ValueError(
            "method='full' needs the UNet's weights in float32, they are "
            f"{sorted(map(str, dtypes))}: load the pipeline with dtype='float32' "
            "(mixed_precision='bf16' still computes in bf16)."
        )
    unet.requires_grad_(True)
    return list(unet.parameters())


def trainable_state(model, cfg: settings.TrainConfig) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the model: the LoRA weights (:func:`lora_holder`), or (full
    fine-tune) every UNet weight."""
    state = inject.lora_state_dict(model) if cfg.method == "lora" else model.state_dict()
    return {k: v.detach().cpu().clone() for k, v in state.items()}
