"""What every claim's experiment shares: settings, data, training, and giving the model back.

Introduced in notebooks/09_claims_advantages.ipynb.

Each experiment trains with ``lorakit.train`` (:func:`fit`: a LoRA on some modules, on every linear
layer, or a full fine-tune of the UNet with the same loop, data, seeds and objective), on a
committed style set (:func:`style_set`) or pairs drawn from shapes (:func:`pairs_set`), and leaves
the pipeline it was given as it found it (:func:`restored`), so a lesson can run one after another.
Settings: the small preset, quiet (:func:`config`), and ``FULL_LR`` for a full fine-tune.

Left out: drawing and judging the pictures (``claims.judging``), the experiments themselves (one
file a section of lessons 09-10), the GPU (these are the tiny SD's figures).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from lorakit import imagefolder, inject, models, shapes, styles, train

__all__ = [
    "FULL_LR",
    "config",
    "count_lora_weights",
    "fit",
    "load",
    "lora_weights",
    "pairs_set",
    "restored",
    "settings_of",
    "style_set",
    "unet_targets",
]

# full fine-tuning's learning rate: LoRA's 1e-3 on every weight of the UNet wrecks it
FULL_LR = 1e-4


def load(pipe=None):
    """``pipe``, or the tiny SD in float32 (a full fine-tune needs float32 weights)."""
    return pipe if pipe is not None else models.load_pipeline("tiny", dtype="float32")


@contextmanager
def restored(pipe):
    """Run a block that may add LoRA layers or change weights, then put the pipeline back exactly
    as it was (its weights, its modules and which parameters train)."""
    parts = (pipe.unet, pipe.text_encoder)
    saved = [{k: v.detach().clone() for k, v in part.state_dict().items()} for part in parts]
    with inject.keep_requires_grad(*parts):
        try:
            yield pipe
        finally:
            for part, state in zip(parts, saved, strict=True):
                inject.remove_lora(part)
                part.load_state_dict(state)
                part.zero_grad(set_to_none=True)


def config(**overrides) -> train.TrainConfig:
    """The small preset (what lesson 06 trains), quiet; ``method="full"`` defaults to
    ``FULL_LR``."""
    if overrides.get("method") == "full":
        overrides.setdefault("lr", FULL_LR)
    return train.TrainConfig.for_mode("small", progress=False, **overrides)


def style_set(style: str = "outline", size: int | None = None) -> list[tuple[torch.Tensor, str]]:
    """The first ``size`` (default: all) pictures and captions of a committed style set, as
    training pairs."""
    folder = styles.CROSS_DIR if style == "cross" else styles.style_dir(style)
    dataset = imagefolder.ImageFolderDataset(folder, resolution=styles.OUTLINE_RESOLUTION)
    count = len(dataset) if size is None else size
    if not 1 <= count <= len(dataset):
        raise ValueError(
            f"the {style} set has {len(dataset)} pictures, not {size}: ask for 1 to {len(dataset)}."
        )
    return [dataset[i] for i in range(count)]


def pairs_set(pairs: Sequence[tuple[shapes.ShapeSpec, str]]) -> list[tuple[torch.Tensor, str]]:
    """Training pairs drawn from (spec, caption) pairs, e.g. ``styles.concept_examples()``."""
    return [
        (imagefolder.to_tensor(shapes.render(spec, styles.OUTLINE_RESOLUTION)), text)
        for spec, text in pairs
    ]


lora_weights = inject.lora_weights  # every lora_A and lora_B weight, in module order


def count_lora_weights(model: nn.Module) -> int:
    """How many numbers the LoRA of ``model`` holds (every ``lora_A`` and ``lora_B``)."""
    return sum(p.numel() for p in lora_weights(model))


def unet_targets(pipe, where: str | Sequence[str]):
    """LoRA's ``target_modules`` for ``where``: "linear" is every linear layer of the UNet."""
    if where == "linear":
        return [n for n, m in pipe.unet.named_modules() if isinstance(m, nn.Linear)]
    return where


def settings_of(cfg: train.TrainConfig, where: str | Sequence[str] | None = None) -> dict:
    """The effective settings of a run, as every published figure records them: method, rank,
    alpha and the scaling they give, learning rate, steps, targets (``where``, as :func:`fit` was
    given it; "linear": every linear layer), LoRA's and the captions' dropout, weight decay,
    seed."""
    lora = cfg.method == "lora"
    alpha = (cfg.alpha if cfg.alpha is not None else cfg.r) if lora else None
    if not lora:
        targets = "every UNet weight"
    elif where == "linear":
        targets = "every linear"
    else:
        chosen = cfg.target_modules
        targets = chosen if isinstance(chosen, str) else list(chosen)
    return {
        "method": cfg.method,
        "r": cfg.r if lora else None,
        "alpha": alpha,
        "scaling": alpha / cfg.r if lora else None,
        "lr": cfg.lr,
        "steps": cfg.steps,
        "targets": targets,
        "lora_dropout": cfg.lora_dropout if lora else None,
        "caption_dropout": cfg.caption_dropout,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
    }


def fit(pipe, dataset, where: str | Sequence[str] = "attn2+ff", **overrides) -> dict:
    """Train ``where`` (a target for LoRA, "linear": every linear layer, or "full") on ``dataset``;
    seconds and size."""
    if where == "full":
        cfg = config(method="full", **overrides)
    else:
        cfg = config(target_modules=unet_targets(pipe, where), **overrides)
    start = time.perf_counter()
    result = train.train_lora(pipe, dataset, cfg)
    seconds = time.perf_counter() - start
    trained = (
        sum(p.numel() for p in pipe.unet.parameters())
        if where == "full"
        else count_lora_weights(pipe.unet)
    )
    return {
        "settings": settings_of(cfg, where),
        "train_seconds": seconds,
        "trainable_params": trained,
        "final_loss": float(np.mean(result.history[-20:])),
        "step_seconds": result.step_seconds,
    }
