"""What the steps of a training run share, and what the run returns.

Introduced in notebooks/06_train_style_lora.ipynb.

:class:`TrainingRun` is the state that ``train_lora``'s steps pass along: the pipeline, the
settings, accelerate's view of the processes, the cached data, the trained parameters, the
optimizer and schedules, and the history so far. :class:`TrainResult` is what ``train_lora``
returns; the trained LoRA itself stays in ``pipe.unet``.

Left out: the steps themselves (``lorakit.train.steps``, ``lorakit.train.loop``) and what a
checkpoint keeps of the run (``lorakit.train.checkpoints``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from lorakit.train import settings

__all__ = ["TrainResult", "TrainingRun"]


@dataclass
class TrainResult:
    """What :func:`train_lora` returns; the trained LoRA itself stays in ``pipe.unet``."""

    history: list[float]  # loss of every optimizer step (mean over its micro-batches)
    val_history: list[tuple[int, float]]  # (step, fixed-seed validation loss)
    samples: list[tuple[int, list]]  # (step, PIL images of cfg.sample_prompts); main process only
    lora_names: list[str]  # paths of the LoRA-wrapped modules (none for method="full")
    step_seconds: list[float] = field(default_factory=list)  # wall time of each step trained


@dataclass
class TrainingRun:
    """What the steps of :func:`train_lora` share: the model, the cached data, the optimizer, the
    history."""

    pipe: object
    # the pipeline's device and the UNet's dtype, read once: each walks every module (2 ms)
    device: torch.device
    dtype: torch.dtype
    cfg: settings.TrainConfig
    accelerator: object
    mine: slice  # this process's rows of every micro-batch
    resolution: int
    latents: torch.Tensor  # (N, 4, h, w)
    embeddings: torch.Tensor  # (C, 77, D)
    rows: torch.Tensor  # (N,) embedding row of each latent
    names: list[str]  # the LoRA-wrapped module paths (the text encoder's as text_encoder.<path>)
    params: list[torch.Tensor]  # every lora_A and lora_B weight, in module order
    optimizer: object
    lr_scheduler: object
    noise_scheduler: DDPMScheduler
    ema: list[torch.Tensor]  # the moving average of params (empty without ema_decay)
    out: Path | None
    history: list[float] = field(default_factory=list)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    samples: list[tuple[int, list]] = field(default_factory=list)
    start: int = 0  # the first step to train (after a resume, the checkpoint's)
    ids: torch.Tensor | None = (
        None  # (C, 77) token ids of the captions, when the text encoder trains
    )
    step_seconds: list[float] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process
