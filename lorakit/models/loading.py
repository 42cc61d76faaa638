"""Loading Stable Diffusion pipelines: ``"tiny"``, a folder from ``save_pretrained``, a hub id.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

``load_pipeline("tiny")`` loads the tiny SD committed in ``data/models/tiny-sd``, offline; a local
directory or a hub id such as ``stable-diffusion-v1-5/stable-diffusion-v1-5`` loads the same way.
The dtype follows the model (``config.preset_for``), so a GPU draws the tiny SD as the lessons' CPU
does. ``make_pipeline`` assembles a pipeline from parts; ``quiet`` silences the notes diffusers
and transformers print while loading.

Left out: SDXL and SD 2.x layouts, safety checkers (the shapes world needs none).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from diffusers.utils import deprecation_utils
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from lorakit import config

__all__ = [
    "DTYPE_KWARG",
    "StableDiffusionPipeline",
    "load_pipeline",
    "make_pipeline",
    "quiet",
    "resolve",
]


@contextlib.contextmanager
def quiet():
    """Inside the block, diffusers and transformers print no notes, warnings or progress bars;
    errors still raise.

    For the notes a lesson expects and a student would take for errors (they print in red): the
    loading bars of every part, "No LoRA keys associated to CLIPTextModel" for a LoRA that has no
    text-encoder part, "truncated because CLIP can only handle sequences up to 77 tokens", and
    transformers' note about torchvision, which lorakit never needs (``feature_extractor=None``).
    """
    levels = (transformers_logging.get_verbosity(), diffusers_logging.get_verbosity())
    bars = (
        transformers_logging.is_progress_bar_enabled(),
        diffusers_logging.is_progress_bar_enabled(),
    )
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(levels[0])
        diffusers_logging.set_verbosity(levels[1])
        if bars[0]:
            transformers_logging.enable_progress_bar()
        if bars[1]:
            diffusers_logging.enable_progress_bar()


with quiet():
    from diffusers import StableDiffusionPipeline

# diffusers >= 0.36 renamed from_pretrained's torch_dtype to dtype; Colab may ship an older one.
DTYPE_KWARG = (
    "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
)


def make_pipeline(parts: dict) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` from parts, without a safety checker."""
    return StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def resolve(name_or_path: str | Path) -> str:
    """``"tiny"`` -> the committed tiny SD; a directory -> itself (checked); else a hub id."""
    if str(name_or_path) == "tiny":
        name_or_path = config.TINY_SD_DIR
        if not (Path(name_or_path) / "model_index.json").is_file():
            raise FileNotFoundError(
                f"the tiny SD is missing from {name_or_path}: restore data/models/tiny-sd from "
                "the repository (git checkout -- data/models) or retrain it with "
                "`python -m lorakit.maintainer.pretrain`."
            )
    path = Path(name_or_path).expanduser()
    looks_local = (
        path.exists()
        or str(name_or_path).startswith((".", "/", "~"))
        or str(name_or_path).count("/") > 1
    )
    if looks_local:
        if not path.is_dir():
            raise FileNotFoundError(
                f"no model directory at {path}: give 'tiny', a hub id such as "
                f"{config.SD15_HUB_ID!r}, or a directory saved with save_pretrained."
            )
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"{path} is not a diffusers pipeline (it has no model_index.json): save one with "
                "`pipe.save_pretrained(path)` or point at the pipeline's top folder."
            )
        return str(path)
    return str(name_or_path)


def load_pipeline(
    name_or_path: str | Path = "tiny",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> StableDiffusionPipeline:
    """Load a Stable Diffusion pipeline: ``"tiny"``, a local directory, or a hub id.

    ``device`` defaults to CUDA when present. ``dtype`` defaults to the model's own
    (``config.preset_for``): float32 for the tiny SD on every device, so that a GPU draws what the
    lessons' CPU draws; for SD 1.5, float32 on the CPU and bfloat16/float16 on a GPU
    (``config.get_dtype``). The tiny SD loads offline.
    """
    source = resolve(name_or_path)
    device = config.get_device(device)
    dtype = config.get_dtype(device, dtype or config.preset_for(source).dtype)
    local = Path(source).is_dir()
    with quiet():
        pipe = StableDiffusionPipeline.from_pretrained(
            source,
            **{DTYPE_KWARG: dtype},
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=local,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
