"""Claim 8 decided with lesson 11's tools: a full fine-tune's update, cut to rank k by SVD.

Introduced in notebooks/10_claims_limitations.ipynb.

:func:`truncated_update` fine-tunes the whole UNet on the cross (a shape the tiny SD never saw),
then puts back only part of its update: each layer's ``delta W`` truncated to its best rank-k
approximation (Eckart-Young; a convolution's kernel flattened to ``out x (in kh kw)``, as kohya's
conv LoRA does), on the linear layers alone or on the linear layers and the convolutions, and counts
the crosses each draws. If a rank-k update of the linear layers draws the crosses, LoRA's rank
there is not the limit; if the convolutions are needed, where LoRA sits is.
:func:`full_update_ratios` is ||delta W|| / ||W|| a layer: how small "small changes" are.

Left out: the update's norms and biases (never put back), LoRA on other layers (``large_changes``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lorakit import inject, lowrank
from lorakit.claims import harness, judging, rank_study, where

__all__ = ["SCOPES", "full_update_ratios", "scoped_layers", "truncate", "truncated_update"]

SCOPES = ("linear", "linear+conv")


def scoped_layers(unet: nn.Module, scope: str) -> list[str]:
    """The weight names of the UNet's linear layers, or its linear layers and convolutions."""
    if scope not in SCOPES:
        raise ValueError(f"no scope {scope!r}: use one of {', '.join(SCOPES)}.")
    kinds = (nn.Linear,) if scope == "linear" else (nn.Linear, nn.Conv2d)
    return [f"{n}.weight" for n, m in unet.named_modules() if isinstance(m, kinds)]


def truncate(delta: torch.Tensor, k: int | None) -> torch.Tensor:
    """``delta``'s best rank-``k`` approximation (``None``: all of it); a convolution's kernel is
    flattened to a matrix first and shaped back after."""
    if k is None:
        return delta
    matrix = delta.reshape(delta.shape[0], -1).float()
    k = min(k, *matrix.shape)
    return lowrank.low_rank_approx(matrix, k).reshape(delta.shape).to(delta.dtype)


def full_update_ratios(before: dict, after: dict, names: Sequence[str]) -> list[dict]:
    """||after - before|| / ||before|| (Frobenius) for every weight in ``names``."""
    return [
        {
            "name": name,
            "ratio": float(
                (after[name] - before[name]).float().norm() / before[name].float().norm()
            ),
            "params": before[name].numel(),
        }
        for name in names
    ]


def _judge_cross(pipe, seeds: Sequence[int], plain: bool = True) -> dict:
    """How often "a <colour> cross" draws one, and of its colour; with ``plain``, also whether the
    plain prompts stay right (``judging.kept``: 32 more pictures)."""
    images, asked = judging.draw(pipe, where.concept_prompts("cross"), seeds)
    rates = judging.read_all(images, asked, shape="cross")
    kept = judging.kept(pipe, seeds) if plain else {}
    return {"cross": rates["shape"], "colour": rates["colour"], **kept}


def _lora_beside(pipe, before: dict, after: dict, r: int, seed: int, steps: int, seeds) -> dict:
    """A LoRA of rank ``r`` on every linear layer, trained on the cross from the same start: what it
    draws, its update ratios, and how far its update is from the full fine-tune's, against the
    truncated update of the same rank (Eckart-Young: that one is the closest of any rank ``r``)."""
    pipe.unet.load_state_dict(before)
    done = harness.fit(pipe, harness.style_set("cross"), "linear", r=r, seed=seed, steps=steps)
    found, trained, truncated, total = _judge_cross(pipe, seeds), 0.0, 0.0, 0.0
    for name, layer in inject.lora_layers(pipe.unet):
        full = (after[f"{name}.weight"] - before[f"{name}.weight"]).float()
        mine = layer.get_delta_weight().detach().float()
        trained += float((full - mine).norm() ** 2)
        truncated += float((full - truncate(full, r)).norm() ** 2)
        total += float(full.norm() ** 2)
    return {
        "r": r,
        **found,
        "update_ratios": [
            row | {"name": f"{row['name']}.weight"}
            for row in rank_study.lora_update_ratios(pipe.unet)
        ],
        "distance_trained": (trained / total) ** 0.5,
        "distance_truncated": (truncated / total) ** 0.5,
        "settings": done["settings"],
    }


def truncated_update(
    seed: int = 0,
    steps: int = 300,
    ranks: Sequence[int] = (1, 4, 8, 32),
    lora_r: int = 8,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """Claim 8 by truncation, one training seed: fine-tune the UNet on the cross, then for each
    scope and each k in ``ranks`` (and the scope's whole update) draw "a <colour> cross" with only
    that part of the update in place. Also the whole fine-tune, each layer's update ratio, and a
    LoRA of rank ``lora_r`` on every linear layer trained from the same start."""
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        unet = pipe.unet
        before = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        done = harness.fit(pipe, harness.style_set("cross"), "full", seed=seed, steps=steps)
        after = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        rows = [{"scope": "every weight", "k": None, **_judge_cross(pipe, seeds)}]
        for scope in SCOPES:
            names = scoped_layers(unet, scope)
            for k in [*ranks, None]:
                state = dict(before)
                state.update({n: before[n] + truncate(after[n] - before[n], k) for n in names})
                unet.load_state_dict(state)
                rows.append({"scope": scope, "k": k, **_judge_cross(pipe, seeds, plain=k is None)})
        ratios = full_update_ratios(before, after, scoped_layers(unet, "linear+conv"))
        lora = _lora_beside(pipe, before, after, lora_r, seed, steps, seeds)
        return {
            "seed": seed,
            "steps": steps,
            "rows": rows,
            "lora": lora,
            "update_ratios": ratios,
            "settings": done["settings"],
            "train_seconds": done["train_seconds"],
        }
