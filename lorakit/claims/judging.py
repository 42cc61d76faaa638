"""Drawing and judging for the claims: pictures at fixed seeds, read with every detector.

Introduced in notebooks/09_claims_advantages.ipynb.

Every prompt is drawn at ``EVAL_SEEDS`` (:func:`draw`) and the pictures are read with
``lorakit.metrics``: a style rate and content (colour and shape right) for prompts that start
"a <colour> <shape>" (:func:`judge`, :func:`read_all`, :func:`style_rates`), and whether the model
still draws its own plain prompts right (:func:`kept`; :func:`base_model` is the untrained model's
reference). :func:`vae_ceiling` is the most of a style any LoRA can draw: what survives the VAE.
The figures are plain fractions of the pictures drawn.

Left out: training (``claims.harness``), statistics over training seeds (the benchmark's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lorakit import metrics, sample, shapes, styles
from lorakit.claims import harness

__all__ = [
    "EVAL_SEEDS",
    "base_model",
    "draw",
    "judge",
    "kept",
    "plain_prompts",
    "read_all",
    "style_rates",
    "vae_ceiling",
]

EVAL_SEEDS = (0, 1, 2, 3)  # every prompt is drawn at these seeds


def draw(pipe, prompts: Sequence[str], seeds: Sequence[int] = EVAL_SEEDS) -> tuple[list, list[str]]:
    """Every prompt at every seed: the pictures and, for each, its prompt."""
    asked = [p for p in prompts for _ in seeds]
    return sample.generate(pipe, asked, list(seeds) * len(prompts)), asked


def judge(
    pipe, prompts: Sequence[str], seeds: Sequence[int] = EVAL_SEEDS, style: str = "outline"
) -> metrics.GridResult:
    """Draw every prompt at every seed and score the pictures (prompts that start "a <colour>
    <shape>")."""
    images, asked = draw(pipe, prompts, seeds)
    return metrics.score_pictures(images, asked, style=style)


def read_all(
    images,
    asked: Sequence[str],
    style: str | None = None,
    shape: str | None = None,
    every: bool = True,
) -> dict:
    """Rates over pictures: how often each has the colour its prompt names (2nd word), ``shape``
    (default: the prompt's 3rd word) and ``style``, read with every detector
    (``shapes.ALL_SHAPES``, ``ALL_STYLES``) or, with ``every=False``, those of the shapes and
    styles the tiny SD was pretrained on."""
    known = {"shapes": shapes.ALL_SHAPES, "styles": shapes.ALL_STYLES} if every else {}
    found = [metrics.detect(image, **known) for image in images]
    words = [p.split() for p in asked]
    colour = [f["colour"] == w[1] for f, w in zip(found, words, strict=True)]
    shape_ok = [f["shape"] == (shape or w[2]) for f, w in zip(found, words, strict=True)]
    out = {
        "colour": float(np.mean(colour)),
        "shape": float(np.mean(shape_ok)),
        "both": float(np.mean([c and s for c, s in zip(colour, shape_ok, strict=True)])),
    }
    if style is not None:
        out["style"] = float(np.mean([f["style"] == style for f in found]))
    return out


def plain_prompts() -> list[str]:
    """Eight prompts of the base model's own, without a trigger: the held-out combinations and four
    trained ones."""
    return [
        styles.caption(c, s, trigger=False)
        for c, s in styles.OUTLINE_HELD_OUT + styles.OUTLINE_TRAIN[:4]
    ]


def kept(pipe, seeds: Sequence[int] = EVAL_SEEDS) -> dict:
    """Does the model still draw its own plain prompts right ("content"), and filled
    (``1 - hollow``)?"""
    found = judge(pipe, plain_prompts(), seeds)
    return {"plain_content": found.both_accuracy, "plain_outline": found.style_rate}


def base_model(pipe=None, seeds: Sequence[int] = EVAL_SEEDS) -> dict:
    """:func:`kept` of the untrained tiny SD: the reference for every "plain prompts right"
    figure."""
    return kept(harness.load(pipe), seeds)


def style_rates(pipe, style_list: Sequence[str], seeds: Sequence[int] = EVAL_SEEDS) -> dict:
    """For each style, how often its held-out prompts come out in it (and with colour and shape
    right)."""
    out = {}
    for style in style_list:
        images, asked = draw(pipe, styles.style_prompts(style=style), seeds)
        rates = read_all(images, asked, style=style)
        out[style] = {"style": rates["style"], "content": rates["both"]}
    return out


@torch.no_grad()
def vae_ceiling(style: str, pipe=None) -> dict:
    """How much of ``style`` survives the tiny SD's VAE alone: its set's pictures encoded to
    latents and decoded again, then read with every detector. A LoRA trains the UNet, which only
    ever draws latents: what the VAE cannot decode, no LoRA (nor full fine-tune) can draw, so this
    is the ceiling of any style rate."""
    styles.style_dir(style)  # one of the style sets
    pipe = harness.load(pipe)
    pairs = harness.style_set(style)
    pixels = torch.stack([image for image, _ in pairs])  # (N, 3, 64, 64) in [-1, 1]
    latents = pipe.vae.encode(pixels.to(pipe.device, pipe.vae.dtype)).latent_dist.mode()
    decoded = pipe.vae.decode(latents).sample.clamp(-1, 1).float().cpu()  # (N, 3, 64, 64)
    pictures = [
        ((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8) for x in decoded
    ]
    captions = [text for _, text in pairs]
    rates = read_all(pictures, captions, style=style)
    return {
        "style": style,
        "pictures": len(pictures),
        "style_rate": rates["style"],
        "content": rates["both"],
    }
