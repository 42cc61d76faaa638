"""Claim 4, overfitting on small data: 2 to 16 training pictures, LoRA against a full fine-tune.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`small_data` trains on the first pictures of the outline set and measures what the model
learnt (the style on held-out prompts: generalising), forgot (its own plain prompts) and memorised:
:func:`memorisation` is the overlap of what it draws for the training captions with the nearest
training picture (:func:`base_memorisation` is the untrained model's, the reference).

Left out: the learning-rate sweep that picks each method's rate (the benchmark's, ``--claim 4``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lorakit import metrics, shapes, styles
from lorakit.claims import harness, judging

__all__ = ["base_memorisation", "memorisation", "small_data", "training_captions"]


def training_captions(size: int) -> list[str]:
    """The distinct captions of the first ``size`` outline pictures: what claim 4 draws again to
    look for copies."""
    return list(dict.fromkeys(text for _, text in styles.outline_examples()[:size]))


def memorisation(images, size: int) -> float:
    """Mean overlap (IoU of the drawn pixels) of each picture with the nearest of the first
    ``size`` training pictures of the outline set: 1.0 is a copy of one of them."""
    train_masks = [
        metrics.ink_mask(shapes.render(spec, styles.OUTLINE_RESOLUTION))
        for spec, _ in styles.outline_examples()[:size]
    ]
    best = []
    for image in images:
        mask = metrics.ink_mask(image)
        best.append(max(float((mask & t).sum() / max(1, (mask | t).sum())) for t in train_masks))
    return float(np.mean(best))


def small_data(
    method: str = "lora",
    size: int = 16,
    seed: int = 0,
    steps: int = 300,
    lr: float | None = None,
    r: int = 8,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """Claim 4, one run: train on the first ``size`` outline pictures (LoRA of rank ``r`` with the
    small preset, or ``method="full"``) and measure what it learnt, forgot and memorised.

    * ``style_rate`` and ``content``: the held-out prompts with the trigger (generalising);
    * ``plain_content``: the plain prompts still drawn right (forgetting is ``1 - plain_content``);
    * ``memorised``: the training captions drawn at ``seeds``, and their overlap with the nearest
      training picture (:func:`memorisation`; the base model's own overlap is the reference).
    """
    if method not in ("lora", "full"):
        raise ValueError(f"method is 'lora' or 'full', not {method!r}.")
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        overrides = {"seed": seed, "steps": steps} | ({"lr": lr} if lr else {})
        if method == "lora":
            overrides["r"] = r
        where = "full" if method == "full" else "attn2+ff"
        done = harness.fit(pipe, harness.style_set(size=size), where, **overrides)
        found = judging.judge(pipe, styles.style_prompts(), seeds)
        images, _ = judging.draw(pipe, training_captions(size), seeds)
        return {
            "method": method,
            "size": size,
            "seed": seed,
            "steps": steps,
            "r": r if method == "lora" else None,
            "lr": lr or harness.config(method=method).lr,
            "trainable_params": done["trainable_params"],
            "settings": done["settings"],
            "style_rate": found.style_rate,
            "content": found.both_accuracy,
            **judging.kept(pipe, seeds),
            "memorised": memorisation(images, size),
            "train_seconds": done["train_seconds"],
        }


def base_memorisation(size: int, pipe=None, seeds: Sequence[int] = judging.EVAL_SEEDS) -> float:
    """:func:`memorisation` of the untrained model on the training captions of a ``size``-picture
    set."""
    pipe = harness.load(pipe)
    return memorisation(judging.draw(pipe, training_captions(size), seeds)[0], size)
