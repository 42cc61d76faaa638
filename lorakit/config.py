"""Which model and sizes, which device, the test switch and the language: lorakit's one reader of
its variables. Introduced in notebooks/01_low_rank_intuition.ipynb.

Two worlds share one API. ``small``: the tiny SD in ``data/models/tiny-sd`` at 64x64 (lessons
01-07, on any device). ``full``: SD 1.5 at 512x512 (lesson 08 on a CUDA GPU). :func:`preset_for`
gives the settings that follow from a model, so a GPU changes where the tiny SD runs, not what it
draws; :func:`get_mode` says which model lesson 08 loads.

Environment variables, read here and nowhere else: ``LORAKIT_MODE=small|full`` (default ``full``
with a CUDA GPU), ``LORAKIT_SD15`` (a hub id or a local folder for SD 1.5), ``LORAKIT_TEST=1``
(set by ``make test``: long lesson runs take fewer steps), ``LORAKIT_LANG=en|uk`` (what lorakit's
checks and widgets speak; the Ukrainian notebooks set ``uk`` in their first cells).

Left out: multi-GPU placement (``accelerate`` handles it) and per-user config files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

MODES = ("small", "full")
LANGUAGES = ("en", "uk")  # English, the source; Ukrainian, the article's language
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
TINY_SD_DIR = DATA_DIR / "models" / "tiny-sd"
SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"

__all__ = [
    "DATA_DIR",
    "LANGUAGES",
    "MODES",
    "PRESETS",
    "REPO_ROOT",
    "SD15_HUB_ID",
    "TINY_SD_DIR",
    "Preset",
    "get_device",
    "get_dtype",
    "get_language",
    "get_mode",
    "get_preset",
    "gpu_present",
    "is_test_run",
    "is_tiny_sd",
    "preset_for",
    "sd15_source",
    "steps_for",
]


@dataclass(frozen=True)
class Preset:
    """A world's model and the settings that follow from that model."""

    mode: str
    model: str  # "tiny", a hub id or a local directory
    resolution: int  # image side in pixels
    num_inference_steps: int
    guidance_scale: float
    dtype: str | None  # the weights' dtype on every device; None: get_dtype's choice for the device


PRESETS = {
    # float32 everywhere: the tiny SD is small, and its figures (and the lessons' tolerances)
    # are float32's.
    "small": Preset(
        mode="small",
        model="tiny",
        resolution=64,
        num_inference_steps=10,
        guidance_scale=5.0,
        dtype="float32",
    ),
    "full": Preset(
        mode="full",
        model=SD15_HUB_ID,
        resolution=512,
        num_inference_steps=30,
        guidance_scale=7.5,
        dtype=None,
    ),
}


def gpu_present() -> bool:
    """Whether a CUDA GPU is there: what picks the default mode (tests patch it to play a GPU
    runtime on the CPU)."""
    return torch.cuda.is_available()


def get_mode() -> str:
    """``LORAKIT_MODE`` if set, else ``full`` with a CUDA GPU and ``small`` without.

    The mode picks the model of lesson 08 (and of ``TrainConfig.for_mode()`` without a mode); the
    lessons written around the tiny SD use it in both modes.
    """
    mode = os.environ.get("LORAKIT_MODE", "").strip().lower()
    if not mode:
        return "full" if gpu_present() else "small"
    if mode not in MODES:
        raise ValueError(f"LORAKIT_MODE={mode!r} is not a mode: use one of {', '.join(MODES)}.")
    return mode


def sd15_source() -> str:
    """Where full mode loads SD 1.5 from: ``LORAKIT_SD15`` (a hub id or a local folder), else the
    hub id."""
    return os.environ.get("LORAKIT_SD15", "").strip() or SD15_HUB_ID


def get_preset(mode: str | None = None) -> Preset:
    """The preset of ``mode`` (default: :func:`get_mode`); full mode loads :func:`sd15_source`."""
    mode = mode or get_mode()
    if mode not in PRESETS:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}.")
    preset = PRESETS[mode]
    return replace(preset, model=sd15_source()) if mode == "full" else preset


def is_tiny_sd(model) -> bool:
    """Whether ``model`` (``"tiny"``, a folder, a hub id, or a pipeline loaded from one) is the
    committed tiny SD."""
    # a diffusers pipeline remembers where it was loaded from
    name = getattr(model, "name_or_path", model)
    if name is None:
        return False
    if str(name) == "tiny":
        return True
    try:
        return Path(name).expanduser().resolve() == TINY_SD_DIR.resolve()
    except (OSError, ValueError):
        return False


def preset_for(model) -> Preset:
    """The settings that follow from ``model``: the tiny SD's (small) for the tiny SD, SD 1.5's
    (full) for any other.

    ``model`` is ``"tiny"``, a hub id, a folder or a loaded pipeline. Resolution, sampler steps,
    guidance and dtype come from here, never from the presence of a GPU.
    """
    return PRESETS["small"] if is_tiny_sd(model) else PRESETS["full"]


def is_test_run() -> bool:
    """True under ``make test`` (``LORAKIT_TEST=1``): lessons shorten their long runs."""
    return os.environ.get("LORAKIT_TEST", "").strip().lower() in ("1", "true", "yes")


def get_language() -> str:
    """The language lorakit speaks to a student: ``LORAKIT_LANG`` (``en``, ``uk``), else English."""
    language = os.environ.get("LORAKIT_LANG", "").strip().lower() or "en"
    if language not in LANGUAGES:
        raise ValueError(
            f"LORAKIT_LANG={language!r}: use one of {', '.join(LANGUAGES)} (English, Ukrainian)."
        )
    return language


def steps_for(real_steps: int, test_steps: int) -> int:
    """``real_steps`` for a student's run, ``test_steps`` under ``make test``."""
    return test_steps if is_test_run() else real_steps


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA, then Apple's MPS, then the CPU: where the work runs,
    whatever the mode."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_dtype(
    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> torch.dtype:
    """``dtype`` if given; else bfloat16 on GPUs that support it, float16 on other GPUs, float32 on
    the CPU.

    The half precisions are for the frozen base model; LoRA parameters stay float32.
    """
    if dtype is not None:
        if isinstance(dtype, str):
            names = {
                "float32": torch.float32,
                "fp32": torch.float32,
                "float16": torch.float16,
                "fp16": torch.float16,
                "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16,
            }
            if dtype not in names:
                raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(names)}.")
            return names[dtype]
        return dtype
    device = get_device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
