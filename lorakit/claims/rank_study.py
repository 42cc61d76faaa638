"""The rank study: what rank does, once alpha no longer grows with it.

Introduced in notebooks/10_claims_limitations.ipynb.

Under Adam every entry of A and B moves by about the learning rate a step, whatever the rank, so
the change a step makes in W = scaling x B A grows with r: like sqrt(r) while the r directions move
independently (rsLoRA's argument), up to r when they move together. Three conventions for alpha
(:data:`CONVENTIONS`, :func:`alpha_for`): ``alpha = r`` (scaling 1: the step grows with r), a fixed
alpha (Hu et al. 2021, section 4.1: scaling alpha / r, the step shrinks as r grows) and rsLoRA
(Kalajdzievski 2023: scaling alpha / sqrt(r), the step about the same at every rank). All three
agree at ``ANCHOR_RANK``. :func:`rank_run` trains the outline LoRA at one rank under one
convention, reads its style, and how large its update is against the weights it changes.

Left out: a learning-rate sweep a rank (claim 9's map), conventions for convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lorakit import inject
from lorakit.claims import harness, judging

__all__ = ["ANCHOR_RANK", "CONVENTIONS", "alpha_for", "lora_update_ratios", "rank_run"]

CONVENTIONS = ("alpha = r", "fixed alpha", "rsLoRA")
ANCHOR_RANK = 4  # every convention gives scaling 1 at this rank


def alpha_for(convention: str, r: int, anchor: int = ANCHOR_RANK) -> float:
    """The alpha that gives ``convention``'s scaling at rank ``r``, written as plain LoRA's
    (scaling alpha / r, what a kohya file stores): ``alpha = r``: r; a fixed alpha: ``anchor``;
    rsLoRA with alpha sqrt(anchor): sqrt(anchor x r), since sqrt(anchor) / sqrt(r) =
    sqrt(anchor x r) / r."""
    if convention not in CONVENTIONS:
        raise ValueError(f"no convention {convention!r}: use one of {', '.join(CONVENTIONS)}.")
    if convention == "alpha = r":
        return float(r)
    if convention == "fixed alpha":
        return float(anchor)
    return math.sqrt(anchor * r)


def lora_update_ratios(model) -> list[dict]:
    """For every LoRA layer of ``model``: ||scaling B A|| / ||W|| (Frobenius), the size of the
    change against the weight it changes."""
    rows = []
    for name, layer in inject.lora_layers(model):
        delta = layer.get_delta_weight().detach().float()
        weight = layer.base_layer.weight.float()
        rows.append({"name": name, "ratio": float(delta.norm() / weight.norm())})
    return rows


def rank_run(
    r: int = 4,
    convention: str = "alpha = r",
    seed: int = 0,
    steps: int = 150,
    lr: float | None = None,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """One run of the rank study: the outline LoRA (``attn2+ff``, the small preset) at rank ``r``
    with ``convention``'s alpha; its style and content on the held-out prompts, the plain prompts
    kept, and the median ||delta W|| / ||W|| over its layers."""
    alpha = alpha_for(convention, r)
    extra = {} if lr is None else {"lr": lr}
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        done = harness.fit(
            pipe, harness.style_set(), r=r, alpha=alpha, seed=seed, steps=steps, **extra
        )
        rates = judging.style_rates(pipe, ["outline"], seeds)["outline"]
        ratios = [row["ratio"] for row in lora_update_ratios(pipe.unet)]
        return {
            "r": r,
            "convention": convention,
            "seed": seed,
            "style_rate": rates["style"],
            "content": rates["content"],
            **judging.kept(pipe, seeds),
            "update_ratio_median": float(np.median(ratios)),
            "trainable_params": done["trainable_params"],
            "settings": done["settings"],
            "train_seconds": done["train_seconds"],
        }
