"""Claim 7, complex data: one LoRA holding 1, 2 or 3 styles, each under its own trigger.

Introduced in notebooks/10_claims_limitations.ipynb.

:func:`many_styles` trains one LoRA of a given rank on the first sets of ``STYLE_ORDER`` at once
(outline, striped, double: each set captioned with its own trigger word) for the same steps per
style, and reads each style's rate on its held-out prompts. ``judging.vae_ceiling`` says how much
of each style any LoRA could draw at all.

Left out: one LoRA a style, applied together (claim 6, ``claims.combining``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lorakit import metrics, shapes, styles
from lorakit.claims import harness, judging

__all__ = ["STYLE_ORDER", "many_styles", "style_confusion"]

STYLE_ORDER = ("outline", "striped", "double")  # claim 7 adds the styles in this order


def style_confusion(pipe, chosen: Sequence[str], seeds: Sequence[int]) -> dict:
    """For each style's trigger, which style its held-out prompts draw: the fraction of pictures
    read as each of ``shapes.ALL_STYLES`` (or "none"), and the content (colour and shape right)."""
    out = {}
    for style in chosen:
        images, asked = judging.draw(pipe, styles.style_prompts(style=style), seeds)
        found = [
            metrics.detect(im, shapes=shapes.ALL_SHAPES, styles=shapes.ALL_STYLES)["style"]
            for im in images
        ]
        out[style] = {name: found.count(name) / len(found) for name in sorted(set(found))}
        out[style]["content"] = judging.read_all(images, asked)["both"]
    return out


def many_styles(
    count: int = 2,
    r: int = 8,
    seed: int = 0,
    steps_per_style: int = 300,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
    method: str = "lora",
    alpha: float | None = None,
) -> dict:
    """Claim 7, one run: one LoRA of rank ``r`` (alpha ``alpha``, default r) or, with
    ``method="full"``, a full fine-tune, trained on the first ``count`` of ``STYLE_ORDER`` at once
    (each set under its own trigger) for ``steps_per_style`` x ``count`` steps; each style's rate
    on its held-out prompts, and which style each trigger draws (:func:`style_confusion`)."""
    if method not in ("lora", "full"):
        raise ValueError(f"method is 'lora' or 'full', not {method!r}.")
    if not 1 <= count <= len(STYLE_ORDER):
        raise ValueError(f"count is 1 to {len(STYLE_ORDER)} styles, not {count}.")
    chosen = STYLE_ORDER[:count]
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        dataset = [pair for style in chosen for pair in harness.style_set(style)]
        how = {"where": "full"} if method == "full" else {"r": r, "alpha": alpha}
        done = harness.fit(pipe, dataset, seed=seed, steps=steps_per_style * count, **how)
        confusion = style_confusion(pipe, chosen, seeds)
        rates = {
            s: {"style": confusion[s].get(s, 0.0), "content": confusion[s]["content"]}
            for s in chosen
        }
        return {
            "count": count,
            "method": method,
            "r": r if method == "lora" else None,
            "seed": seed,
            "steps": steps_per_style * count,
            "trainable_params": done["trainable_params"],
            "styles": rates,
            "confusion": confusion,
            "settings": done["settings"],
            "mean_style": float(np.mean([v["style"] for v in rates.values()])),
            "mean_content": float(np.mean([v["content"] for v in rates.values()])),
            **judging.kept(pipe, seeds),
            "train_seconds": done["train_seconds"],
        }
