"""Claims 2 and 3, a small file and less time and compute: LoRA against a full fine-tune.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`size_and_speed` trains the small preset's LoRA, or a full fine-tune of the UNet, for a few
steps and measures what each costs: trainable parameters, the file it saves, AdamW's state
(:func:`optimizer_bytes`, read from the run's checkpoint by :func:`saved_sizes`) and the median
step time.

Left out: the process's peak memory and the steps each needs to a style rate (the benchmark's,
``python -m benchmarks.claims --claim 2``, each run in its own process).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from lorakit import train
from lorakit.claims import harness

__all__ = ["optimizer_bytes", "saved_sizes", "size_and_speed"]


def optimizer_bytes(optimizer_state: dict) -> int:
    """Bytes of AdamW's moments in an optimizer ``state_dict()["state"]`` (the step counters left
    out)."""
    return sum(
        t.numel() * t.element_size()
        for s in optimizer_state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )


def size_and_speed(
    method: str = "lora", seed: int = 0, steps: int = 20, pipe=None, output_dir=None
) -> dict:
    """Claims 2 and 3 in small: train ``method`` ("lora": the small preset; "full") for ``steps``
    and measure its trainable parameters, the file it saves, AdamW's state and the median step
    time."""
    if method not in ("lora", "full"):
        raise ValueError(f"method is 'lora' or 'full', not {method!r}.")
    pipe = harness.load(pipe)
    with harness.restored(pipe), tempfile.TemporaryDirectory() as scratch:
        out = Path(output_dir or scratch)
        cfg = harness.config(method=method, seed=seed, steps=steps, output_dir=str(out))
        result = train.train_lora(pipe, harness.style_set(), cfg)
        return {
            "method": method,
            "seed": seed,
            "lr": cfg.lr,
            **saved_sizes(pipe, method, out),
            "step_seconds_median": float(np.median(result.step_seconds)),
        }


def saved_sizes(pipe, method: str, output_dir) -> dict:
    """What a finished run of ``method`` ("lora" or "full") left in ``output_dir``: its trainable
    parameters, the size of the file it saved (the LoRA, or the whole UNet) and of AdamW's state
    in its last checkpoint."""
    out = Path(output_dir)
    if method == "full":
        params = list(pipe.unet.parameters())
    else:
        params = harness.lora_weights(pipe.unet)
    saved = out / (train.FULL_FILE if method == "full" else "lora.safetensors")
    # our own checkpoint
    state = torch.load(out / train.CHECKPOINT, weights_only=True)["optimizer"]["state"]
    return {
        "trainable_params": sum(p.numel() for p in params),
        "file_bytes": saved.stat().st_size,
        "optimizer_bytes": optimizer_bytes(state),
    }
