"""Will it fit? The pre-flight check of a training run, and settings that would fit instead.

Introduced in notebooks/08_stable_diffusion_gpu.ipynb.

:func:`check_fits` raises :class:`WontFitError` when a run's estimate (``estimate_memory``)
exceeds ``HEADROOM`` of the device's memory (:func:`device_memory`: the GPU's, or the machine's
RAM on the CPU), naming settings that would fit (:func:`suggestions`): gradient checkpointing,
half precision, a smaller batch with gradient accumulation (the same pictures a step), a lower
resolution, each found by estimating it again, not by a rule of thumb. ``lorakit.train`` runs it
before a LoRA run on a GPU.

Left out: the CUDA context (a few hundred MB that ``torch.cuda.max_memory_allocated`` does not see
either), fragmentation and what the estimate leaves out: ``HEADROOM`` keeps a margin for them.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import torch

from lorakit import config
from lorakit.language import say
from lorakit.memory import estimation

__all__ = ["HEADROOM", "WontFitError", "check_fits", "device_memory", "suggestions"]

# check_fits keeps 20% of the device free: CUDA context, allocator cache, workspaces, and what the
# estimate leaves out (on an H100 it measured 7-14% below the real peak: benchmarks/RESULTS.md).
HEADROOM = 0.8


class WontFitError(MemoryError):
    """A run that would run out of memory; ``suggestions`` are settings (TrainConfig fields) that
    fit."""

    def __init__(
        self,
        message: str,
        estimate: estimation.MemoryEstimate,
        budget: int,
        suggestions: list[dict],
    ):
        super().__init__(message)
        self.estimate, self.budget, self.suggestions = estimate, budget, suggestions


def device_memory(device: str | torch.device | None = None) -> int | None:
    """Total memory of ``device`` in bytes: the GPU's, or the machine's RAM for the CPU (None if
    unknown)."""
    device = config.get_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None


def _trials(cfg, model, half: str) -> list[dict]:
    """The changes :func:`suggestions` tries, in order of what they cost the result."""
    trials: list[dict] = []
    if not cfg.gradient_checkpointing:
        trials.append(dict(gradient_checkpointing=True))
    if cfg.mixed_precision == "no":
        trials += [
            dict(mixed_precision=half),
            dict(mixed_precision=half, gradient_checkpointing=True),
        ]
    batch = cfg.batch_size
    while batch > 1:
        batch //= 2
        accum = cfg.grad_accum * math.ceil(cfg.batch_size / batch)
        trials += [
            dict(batch_size=batch, grad_accum=accum),
            dict(batch_size=batch, grad_accum=accum, gradient_checkpointing=True),
        ]
    unet_config, _, factor, *_ = estimation.describe_model(model)
    step = factor * 2 ** (len(unet_config["block_out_channels"]) - 1)
    resolution = cfg.resolution or unet_config["sample_size"] * factor
    for smaller in (resolution * 3 // 4, resolution // 2):
        smaller -= smaller % step
        if smaller >= step:
            trials.append(dict(resolution=smaller, gradient_checkpointing=True))
    return trials


def suggestions(
    cfg, model, budget: int, limit: int = 3, half: str = "bf16"
) -> list[tuple[dict, estimation.MemoryEstimate]]:
    """Up to ``limit`` changes of ``cfg`` (dicts of TrainConfig fields) whose estimate fits in
    ``budget``.

    Tried in order of what they cost the result: checkpointing (time only), half precision
    (``half``: "bf16", or "fp16" on GPUs without bfloat16), a smaller batch with gradient
    accumulation (the same images per step), then a lower resolution.
    """
    found, seen = [], set()
    for change in _trials(cfg, model, half):
        change = {k: v for k, v in change.items() if getattr(cfg, k) != v}
        key = tuple(sorted(change.items()))
        if not change or key in seen:
            continue
        seen.add(key)
        estimate = estimation.estimate_memory(replace(cfg, **change), model)
        if estimate.total <= budget:
            found.append((change, estimate))
            if len(found) == limit:
                break
    return found


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _budget(device: torch.device, budget_bytes: int | None) -> tuple[int | None, str]:
    """The bytes a run may take (None: unknown, no check), and where, in words."""
    if budget_bytes is not None:
        return budget_bytes, say("the budget of {size}", size=estimation.format_bytes(budget_bytes))
    total = device_memory(device)
    if total is None:
        return None, ""
    usable = say(
        "{size}, {share} of it usable", size=estimation.format_bytes(total), share=f"{HEADROOM:.0%}"
    )
    return int(total * HEADROOM), f"{_device_name(device)} ({usable})"


def _wont_fit_message(estimate: estimation.MemoryEstimate, where: str, fits: list) -> str:
    format_bytes = estimation.format_bytes
    parts = ", ".join(f"{say(name)} {format_bytes(n)}" for name, n in estimate.rows()[:-1])
    message = say(
        "this run needs about {total} ({parts}), more than {where}. ",
        total=format_bytes(estimate.total),
        parts=parts,
        where=where,
    )
    if not fits:
        return message + say(
            "No smaller batch, checkpointing, precision or resolution fits: use a GPU with more "
            "memory, or a smaller model."
        )
    settings = [
        f"{', '.join(f'{k}={v!r}' for k, v in change.items())} "
        + say("(about {size})", size=format_bytes(e.total))
        for change, e in fits
    ]
    return message + say("Settings that would fit: ") + "; ".join(settings) + "."


def check_fits(
    config, model, device: str | torch.device | None = None, budget_bytes: int | None = None
) -> estimation.MemoryEstimate:
    """The estimate of ``config`` on ``model``; raises :class:`WontFitError` if it would not fit.

    The budget is ``budget_bytes`` if given, else ``HEADROOM`` of the total memory of ``device``
    (default: the model's own device; see ``device_memory``; no check where it is unknown).
    The error names settings that fit.
    """
    cfg = config  # (the parameter hides the lorakit.config module, which the helpers use)
    estimate = estimation.estimate_memory(cfg, model)
    device = _device_of(model, device)
    budget, where = _budget(device, budget_bytes)
    if budget is None or estimate.total <= budget:
        return estimate
    fits = suggestions(cfg, model, budget, half=_half(device))
    message = _wont_fit_message(estimate, where, fits)
    raise WontFitError(message, estimate, budget, [change for change, _ in fits])


def _device_of(model, device: str | torch.device | None) -> torch.device:
    return config.get_device(device if device is not None else getattr(model, "device", None))


def _half(device: torch.device) -> str:
    """The half precision to suggest: fp16 where the device computes in it, else bf16."""
    return "fp16" if config.get_dtype(device) == torch.float16 else "bf16"
