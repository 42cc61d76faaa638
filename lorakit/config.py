"""Modes, devices and presets: the one place that reads lorakit's environment variables.

Introduced in notebooks/01_low_rank_intuition.ipynb.

Two worlds share one API:

* ``small``: the tiny Stable Diffusion shipped in ``data/models/tiny-sd``, 64x64 images,
  a laptop CPU or CI. The default when no CUDA GPU is present.
* ``full``: Stable Diffusion 1.5 at 512x512 on a CUDA GPU. The default with CUDA.

Environment variables (read here and nowhere else):

* ``LORAKIT_MODE=small|full`` overrides the default mode.
* ``LORAKIT_TEST=1`` is set by ``make test``: lessons whose real run takes minutes shorten
  it (fewer steps) so every notebook executes in about a minute. Students never set it.

Left out: multi-GPU placement (``accelerate`` handles it) and per-user config files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

MODES = ("small", "full")
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
TINY_SD_DIR = DATA_DIR / "models" / "tiny-sd"
SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass(frozen=True)
class Preset:
    """Sizes that differ between the two worlds; everything else is shared."""

    mode: str
    model: str  # "tiny", a hub id or a local directory
    resolution: int  # image side in pixels
    num_inference_steps: int
    guidance_scale: float


PRESETS = {
    "small": Preset(mode="small", model="tiny", resolution=64, num_inference_steps=10, guidance_scale=5.0),
    "full": Preset(mode="full", model=SD15_HUB_ID, resolution=512, num_inference_steps=30, guidance_scale=7.5),
}


def get_mode() -> str:
    """``LORAKIT_MODE`` if set, else ``full`` with a CUDA GPU and ``small`` without."""
    mode = os.environ.get("LORAKIT_MODE", "").strip().lower()
    if not mode:
        return "full" if torch.cuda.is_available() else "small"
    if mode not in MODES:
        raise ValueError(f"LORAKIT_MODE={mode!r} is not a mode: use one of {', '.join(MODES)}.")
    return mode


def get_preset(mode: str | None = None) -> Preset:
    """The preset of ``mode`` (default: :func:`get_mode`)."""
    mode = mode or get_mode()
    if mode not in PRESETS:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}.")
    return PRESETS[mode]


def is_test_run() -> bool:
    """True under ``make test`` (``LORAKIT_TEST=1``): lessons shorten their long runs."""
    return os.environ.get("LORAKIT_TEST", "").strip().lower() in ("1", "true", "yes")


def steps_for(real_steps: int, test_steps: int) -> int:
    """``real_steps`` for a student's run, ``test_steps`` under ``make test``."""
    return test_steps if is_test_run() else real_steps


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA, then Apple's MPS, then the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_dtype(device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``dtype`` if given; else bfloat16 on GPUs that support it, float16 on other GPUs, float32 on the CPU.

    The half precisions are for the frozen base model; LoRA parameters stay float32.
    """
    if dtype is not None:
        if isinstance(dtype, str):
            names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                     "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
            if dtype not in names:
                raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(names)}.")
            return names[dtype]
        return dtype
    device = get_device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
