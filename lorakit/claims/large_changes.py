"""Claim 8, large changes: a shape the tiny SD never saw, and the rank of a full fine-tune's update.

Introduced in notebooks/10_claims_limitations.ipynb.

:func:`large_change` teaches the cross ("a red cross", ``data/styles/cross``) with a LoRA on
``attn2``, ``attn2+ff`` or every linear layer, or with a full fine-tune of the UNet, and reads how
often "a <colour> cross" draws one. For the full fine-tune, :func:`update_ranks` measures the rank
of each layer's update that keeps 90 % of its energy, against a random matrix of the same shape:
does a large change need a large rank?

Left out: ranks of LoRA updates (``svd_tools.spectra`` reads them from a file, lesson 11).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lorakit import lowrank
from lorakit.claims import harness, judging, where

__all__ = ["LARGE_CHANGE_VARIANTS", "large_change", "update_ranks"]

# the keys of where.WHERE that claim 8 trains
LARGE_CHANGE_VARIANTS = ("attn2", "attn2+ff", "every linear", "full fine-tune")


def update_ranks(
    before: dict[str, torch.Tensor], model: nn.Module, fraction: float = 0.9
) -> list[dict]:
    """For every 2-D weight (linear layers) of ``model``: the rank that keeps ``fraction`` of the
    energy of its update ``W - before[name]`` (``lowrank.rank_for_energy``), against the layer's
    largest possible rank and the rank a random (Gaussian) matrix of its shape needs
    (``noise_rank``: what an update with no structure needs)."""
    rows = []
    for name, weight in model.state_dict().items():
        if weight.dim() != 2 or not name.endswith(".weight"):
            continue
        delta = weight.float() - before[name].float()
        if not torch.any(delta):
            continue
        # an update with no structure at all
        noise = torch.randn(delta.shape, generator=torch.Generator().manual_seed(0))
        rows.append(
            {
                "name": name,
                "shape": list(delta.shape),
                "max_rank": min(delta.shape),
                "rank": lowrank.rank_for_energy(delta, fraction),
                "noise_rank": lowrank.rank_for_energy(noise, fraction),
            }
        )
    return rows


def large_change(
    variant: str = "attn2",
    r: int = 8,
    seed: int = 0,
    steps: int = 300,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """Claim 8, one run: teach the cross (``data/styles/cross``: "a red cross") with a LoRA of rank
    ``r`` on ``variant`` ("attn2", "attn2+ff", "every linear") or a full fine-tune ("full
    fine-tune"). How often "a <colour> cross" draws one; for the full fine-tune, also
    :func:`update_ranks` of its update."""
    if variant not in LARGE_CHANGE_VARIANTS:
        raise ValueError(
            f"no variant {variant!r} for claim 8: use 'attn2', 'attn2+ff', 'every linear' or "
            "'full fine-tune'."
        )
    targets = where.WHERE[variant]
    full = targets == "full"
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        before = (
            {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()} if full else None
        )
        rank = {} if full else {"r": r}
        cross = harness.style_set("cross")
        done = harness.fit(pipe, cross, targets, seed=seed, steps=steps, **rank)
        images, asked = judging.draw(pipe, where.concept_prompts("cross"), seeds)
        rates = judging.read_all(images, asked, shape="cross")
        result = {
            "variant": variant,
            "r": None if full else r,
            "seed": seed,
            "steps": steps,
            "trainable_params": done["trainable_params"],
            "settings": done["settings"],
            "cross": rates["shape"],
            "colour": rates["colour"],
            **judging.kept(pipe, seeds),
            "train_seconds": done["train_seconds"],
        }
        if before is not None:
            result["update_ranks"] = update_ranks(before, pipe.unet)
    return result
