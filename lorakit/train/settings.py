"""The settings of a training run, and the checks that refuse a bad one before any work is done.

Introduced in notebooks/06_train_style_lora.ipynb.

:class:`TrainConfig` holds every setting; :meth:`TrainConfig.for_mode` puts a world's preset under
the caller's overrides. :func:`check_config` plays the part of PEFT's ``LoraConfig.__post_init__``:
it names every problem at once, in one ``ValueError``. It runs when a run starts (``prepare``, and
the CLI before it loads a model) rather than when the config is made, because one check needs the
device (fp16's loss scaling is CUDA-only) and a config may be built, changed and estimated
(``lorakit.memory``) before it trains.

Left out: reading settings from files (the CLI's arguments are the one other source).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lorakit import config, formats

__all__ = ["LR_SCHEDULES", "METHODS", "MIXED_PRECISIONS", "TrainConfig", "check_config"]

METHODS = ("lora", "full")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")


def _default_sample_prompts() -> list[str]:
    return ["a red circle", "a blue square"]


@dataclass
class TrainConfig:
    """Everything a LoRA training run needs.

    The field defaults are a plain LoRA run (rank 4 on ``attn2``, no extras). :meth:`for_mode` adds
    a world's preset on top: use it, as the CLI and the lessons do.
    """

    method: str = "lora"  # "lora" | "full": fine-tune every UNet weight, with the same loop
    r: int = 4
    alpha: float | None = None  # None: alpha = r (scaling 1)
    target_modules: str | Sequence[str] = "attn2"
    # also a LoRA on the text encoder (targets.PRESETS["text"], same r and alpha), as kohya
    text_encoder: bool = False
    lora_dropout: float = 0.0  # dropout on the LoRA path's input while training (PEFT's)
    steps: int = 300  # optimizer steps
    # images per micro-batch (over all processes); one step sees batch_size * grad_accum
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2  # AdamW's decoupled weight decay on every trained weight
    warmup_steps: int = 10
    lr_schedule: str = "constant"  # "constant" | "cosine" (after warm-up)
    grad_accum: int = 1
    mixed_precision: str = "no"  # "no" | "fp16" (CUDA only) | "bf16"
    gradient_checkpointing: bool = False
    min_snr_gamma: float | None = None  # e.g. 5.0; None: plain epsilon MSE
    # also train on every image mirrored left-right (for subjects whose sides don't matter)
    flip: bool = False
    # fraction of training pictures shown with the empty prompt instead of their caption
    caption_dropout: float = 0.0
    # e.g. 0.99: the LoRA returned is an exponential moving average of its steps
    ema_decay: float | None = None
    max_grad_norm: float = 1.0  # 0 turns clipping off
    seed: int = 0
    resolution: int | None = None  # None: the UNet's own (sample_size * vae_scale_factor)
    validation_every: int = 0  # 0: no validation loss
    num_validation: int = 8  # fixed (image, timestep, noise) triples of the validation loss
    sample_every: int = 0  # 0: no sample images during training
    sample_prompts: Sequence[str] = field(default_factory=_default_sample_prompts)
    checkpoint_every: int = 0  # 0: a checkpoint only at the end (when output_dir is set)
    output_dir: str | None = None
    resume: bool = True  # continue from output_dir/checkpoint.pt when it exists
    save_format: str = "kohya"  # "kohya" | "diffusers" | "peft" (lorakit.formats)
    progress: bool = True  # a tqdm progress bar

    @classmethod
    def for_mode(cls, mode: str | None = None, **overrides) -> TrainConfig:
        """Training defaults of ``mode`` ("small": the tiny SD's; "full": SD 1.5's), then
        ``overrides``.

        ``mode`` defaults to ``config.get_mode()``; pass it, or ``config.preset_for(pipe).mode``,
        to train a given model with its own defaults. The resolution is left to the model
        (``resolution=None``: the UNet's own, 64 px for the tiny SD, 512 for SD 1.5), so either
        preset gives a valid run on either model; the full preset on the tiny SD is simply slower
        to learn (lr 1e-4 for 1,500 steps).

        The small preset is the best of the settings measured on the outline style set
        (``python -m benchmarks.style_lora --train-seeds 0 1 2 3 4 5``, docs/style-lora.md): LoRA
        on the cross-attention *and* the feed-forward layer after it in each transformer block
        (``"attn2+ff"``, as kohya trains them) learns the hollow drawing far more reliably than
        ``attn2`` alone, which kept breaking shapes; rank 8, min-SNR and mirrored pictures learn
        the style more often and keep more of the shapes than the plain run; caption dropout 0.3
        keeps the colours (guidance's unconditional branch learns the style too); LoRA dropout
        0.1 keeps a little more of the content. The full preset keeps ``attn2``: the ``ff``
        result is the tiny SD's, not measured on SD 1.5.
        """
        preset = config.get_preset(mode)
        small = dict(
            r=8,
            target_modules="attn2+ff",
            min_snr_gamma=2.0,
            flip=True,
            caption_dropout=0.3,
            lora_dropout=0.1,
        )
        full = dict(
            r=16,
            steps=1500,
            batch_size=4,
            lr=1e-4,
            warmup_steps=100,
            lr_schedule="cosine",
            mixed_precision="bf16",
            gradient_checkpointing=True,
            min_snr_gamma=5.0,
            sample_prompts=["a photo of a sks dog"],
        )
        return cls(**{**(full if preset.mode == "full" else small), **overrides})


def check_config(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse a bad setting before any work is done, naming every problem at once."""
    problems = [
        *_count_problems(cfg),
        *_number_problems(cfg),
        *_choice_problems(cfg, device),
        *_extra_problems(cfg),
    ]
    if problems:
        raise ValueError("bad TrainConfig: " + "; ".join(problems) + ".")


def _count_problems(cfg: TrainConfig) -> list[str]:
    """The counts: steps, batch, accumulation and validation pictures positive, the rest >= 0."""
    problems = [
        f"{name} must be a positive integer, got {getattr(cfg, name)!r}"
        for name in ("steps", "batch_size", "grad_accum", "num_validation")
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) <= 0
    ]
    problems += [
        f"{name} must be >= 0, got {getattr(cfg, name)!r}"
        for name in (
            "warmup_steps",
            "validation_every",
            "sample_every",
            "checkpoint_every",
            "max_grad_norm",
            "weight_decay",
        )
        if getattr(cfg, name) < 0
    ]
    if not (isinstance(cfg.r, int) and not isinstance(cfg.r, bool) and cfg.r > 0):
        problems.append(f"r must be a positive integer, got {cfg.r!r}")
    return problems


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _number_problems(cfg: TrainConfig) -> list[str]:
    """alpha, the learning rate, the resolution and the seed."""
    problems = []
    if cfg.alpha is not None and not _positive_number(cfg.alpha):
        problems.append(
            f"alpha must be a positive finite number or None (alpha = r), got {cfg.alpha!r}"
        )
    if not _positive_number(cfg.lr):
        problems.append(f"lr must be a positive finite number, got {cfg.lr!r}")
    if cfg.resolution is not None and not (
        isinstance(cfg.resolution, int) and cfg.resolution > 0 and cfg.resolution % 64 == 0
    ):
        problems.append(
            "resolution must be a positive multiple of 64 (the UNet halves the latents three "
            f"times) or None, got {cfg.resolution!r}"
        )
    if not (isinstance(cfg.seed, int) and 0 <= cfg.seed < 2**63):
        problems.append(f"seed must be an integer from 0 to 2**63 - 1, got {cfg.seed!r}")
    return problems


def _not_one_of(cfg: TrainConfig, name: str, allowed: Sequence[str]) -> list[str]:
    value = getattr(cfg, name)
    return (
        [] if value in allowed else [f"{name} must be one of {', '.join(allowed)}, got {value!r}"]
    )


def _choice_problems(cfg: TrainConfig, device: torch.device) -> list[str]:
    """The settings that name one of a few choices; fp16 needs a CUDA device."""
    problems = _not_one_of(cfg, "method", METHODS) + _not_one_of(cfg, "lr_schedule", LR_SCHEDULES)
    problems += _not_one_of(cfg, "mixed_precision", MIXED_PRECISIONS)
    if cfg.mixed_precision == "fp16" and device.type != "cuda":
        problems.append(
            "mixed_precision='fp16' needs a CUDA GPU (its loss scaling is CUDA-only), but the "
            f"pipeline is on {device.type}: use 'bf16' or 'no'"
        )
    return problems + _not_one_of(cfg, "save_format", formats.FORMATS)


def _extra_problems(cfg: TrainConfig) -> list[str]:
    """The extras: the two dropouts, EMA, min-SNR and the text encoder's LoRA."""
    problems = []
    if not 0 <= cfg.lora_dropout < 1:
        problems.append(f"lora_dropout must be in [0, 1), got {cfg.lora_dropout!r}")
    if not 0 <= cfg.caption_dropout < 1:
        problems.append(f"caption_dropout must be in [0, 1), got {cfg.caption_dropout!r}")
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        problems.append(f"ema_decay must be in (0, 1) or None, got {cfg.ema_decay!r}")
    if cfg.min_snr_gamma is not None and not cfg.min_snr_gamma > 0:
        problems.append(f"min_snr_gamma must be positive or None, got {cfg.min_snr_gamma!r}")
    if not isinstance(cfg.text_encoder, bool):
        problems.append(f"text_encoder must be True or False, got {cfg.text_encoder!r}")
    elif cfg.text_encoder and cfg.method == "full":
        problems.append(
            "text_encoder=True trains a text-encoder LoRA, but method='full' fine-tunes the UNet "
            "alone"
        )
    return problems
