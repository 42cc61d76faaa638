"""Seeded generation and image grids.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

Every picture gets its own generator seeded with its own seed, so a picture depends only on
(prompt, seed, settings), never on which other prompts share its batch: the same call gives
the same pixels on every run, and a grid cell can be regenerated alone.

Left out: schedulers other than the pipeline's own, image-to-image, negative prompts beyond "".
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from diffusers.utils import numpy_to_pil
from PIL import Image, ImageDraw

from lorakit import config

__all__ = ["generate", "image_grid", "warn_if_cut"]


def warn_if_cut(tokenizer, texts: Sequence[str], what: str = "prompt") -> int:
    """Warn, once for all ``texts``, if some are longer than the text encoder reads (CLIP: 77
    tokens with the start and end tokens), and say how much it reads; returns how many are cut."""
    limit = tokenizer.model_max_length
    lengths = [
        len(ids) for ids in tokenizer(list(texts), truncation=False, verbose=False).input_ids
    ]
    long = [n for n in lengths if n > limit]
    if long:
        warnings.warn(
            f"{len(long)} of {len(lengths)} {what}s are longer than the {limit} tokens the text "
            f"encoder reads (the longest has {max(long)}): only their first {limit} tokens are "
            "used.",
            stacklevel=3,
        )
    return len(long)


@contextlib.contextmanager
def _quiet(logger_name: str):
    """diffusers' pipeline logs each cut prompt in full (``warn_if_cut`` has said it once):
    silence that."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@torch.no_grad()
def generate(
    pipe,
    prompts: str | Sequence[str],
    seeds: int | Sequence[int] = 0,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    resolution: int | None = None,
    batch_size: int = 16,
    **kwargs,
) -> list[Image.Image]:
    """One picture per (prompt, seed) pair; a single prompt or seed is repeated to match the other.

    Defaults come from the model: its resolution (``sample_size * vae_scale_factor``) and the
    sampler steps and guidance of its preset (``config.preset_for``: the tiny SD's 10 steps at
    guidance 5, SD 1.5's 30 at 7.5), on any device. A picture that comes out NaN or infinite
    (a LoRA too strong for the model) raises ``ValueError`` instead of becoming a black image.
    """
    prompts, seeds = _pairs(prompts, seeds)
    preset = config.preset_for(pipe)
    resolution = resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    steps = num_inference_steps or preset.num_inference_steps
    guidance = preset.guidance_scale if guidance_scale is None else guidance_scale
    wanted = kwargs.pop("output_type", "pil")
    if getattr(pipe, "tokenizer", None) is not None:
        warn_if_cut(pipe.tokenizer, list(dict.fromkeys(prompts)))
    images: list[Image.Image] = []
    for begin in range(0, len(prompts), batch_size):
        batch_prompts, batch_seeds = (
            prompts[begin : begin + batch_size],
            seeds[begin : begin + batch_size],
        )
        generators = [torch.Generator(pipe.device).manual_seed(s) for s in batch_seeds]
        with _quiet(type(pipe).__module__):
            out = pipe(
                batch_prompts,
                generator=generators,
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=resolution,
                width=resolution,
                output_type="np" if wanted == "pil" else wanted,
                **kwargs,
            )
        batch = out.images
        _refuse_broken(batch, batch_prompts, batch_seeds)
        images.extend(
            numpy_to_pil(batch) if wanted == "pil" and isinstance(batch, np.ndarray) else batch
        )
    return images


def _pairs(prompts: str | Sequence[str], seeds: int | Sequence[int]) -> tuple[list, list]:
    """One prompt per seed: a single prompt or a single seed repeated to match the other."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if len(prompts) == 1 and len(seeds) > 1:
        prompts = prompts * len(seeds)
    if len(seeds) == 1 and len(prompts) > 1:
        seeds = seeds * len(prompts)
    if len(prompts) != len(seeds):
        raise ValueError(
            f"got {len(prompts)} prompts and {len(seeds)} seeds: give one seed per prompt, "
            "or a single prompt or a single seed."
        )
    return prompts, seeds


def _refuse_broken(batch, prompts: list[str], seeds: list[int]) -> None:
    """Raise if a picture came out NaN or infinite: as a PIL image it would be a black picture
    that looks like a result."""
    broken = [i for i, ok in enumerate(_finite(batch)) if not ok]
    if broken:
        raise ValueError(
            f"{len(broken)} of {len(batch)} pictures came out NaN or infinite (first: "
            f"{prompts[broken[0]]!r}, seed {seeds[broken[0]]}): the LoRA or its scale is too "
            "strong for this model, or its weights are broken; lower the LoRA scale or check the "
            "file (lorakit info)."
        )


def _finite(batch) -> list[bool]:
    """Whether each picture of a pipeline's output (an array, a tensor, or a list of either or of
    PIL images) is finite."""
    if isinstance(batch, np.ndarray):
        return np.isfinite(batch.reshape(len(batch), -1)).all(1).tolist()
    if isinstance(batch, torch.Tensor):
        return torch.isfinite(batch.reshape(len(batch), -1)).all(1).tolist()
    return [
        bool(np.isfinite(b).all())
        if isinstance(b, np.ndarray)
        else bool(torch.isfinite(b).all())
        if isinstance(b, torch.Tensor)
        else True
        for b in batch
    ]


def image_grid(
    images: Sequence[Image.Image],
    cols: int | None = None,
    labels: Sequence[str] | None = None,
    scale: int = 1,
) -> Image.Image:
    """Paste ``images`` into a grid ``cols`` wide (default: square-ish), optionally labelled
    underneath."""
    if not images:
        raise ValueError("image_grid needs at least one image.")
    cols = cols or max(1, round(len(images) ** 0.5))
    rows = -(-len(images) // cols)
    w, h = images[0].width * scale, images[0].height * scale
    label_h = 12 if labels else 0
    grid = Image.new("RGB", (cols * w, rows * (h + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        x, y = (i % cols) * w, (i // cols) * (h + label_h)
        grid.paste(image.convert("RGB").resize((w, h), Image.Resampling.NEAREST), (x, y))
        if labels:
            draw.text((x + 2, y + h), str(labels[i])[: max(4, w // 6)], fill="black")
    return grid
