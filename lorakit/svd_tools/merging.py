"""Merging LoRAs: several, each with a weight, as one LoRA, or baked into a model's weights.

Introduced in notebooks/11_lora_algebra.ipynb.

``"concat"`` stacks the factors (ranks add): exactly the weighted sum of their delta W. ``"svd"`` is
the best rank-R approximation of that sum (kohya's ``svd_merge_lora.py``'s SVD, which then clamps as
its extract does). ``"naive"`` sums the A's and the B's apart, each scaled by ``sqrt(|w| *
scaling)`` (the sign of w goes on B), as PEFT's ``add_weighted_adapter(...,
combination_type="linear")`` does (PEFT 0.9 on; equal unless the weights differ in sign): each
LoRA's own term is ``w * delta W``, but ``(B1 + B2)(A1 + A2)`` brings in the cross terms ``B1 A2 +
B2 A1``, and it is here to be measured wrong (:func:`delta_error`). :func:`merge_into` bakes LoRAs
into a model's weights. kohya's ``merge_lora.py`` squares its ratios (:func:`merge`).

Left out: PEFT's other combinations (``ties``, ``dare``, ``magnitude_prune``), merging LoRAs of
different base models (refused).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lorakit import formats, inject
from lorakit.svd_tools.factors import (
    AlgebraError,
    delta_factors,
    factored_svd,
    factors_from_svd,
    module_shaped,
)

__all__ = ["METHODS", "delta_error", "merge", "merge_into"]

METHODS = ("concat", "svd", "naive")


def _context_width(weights: formats.LoRAWeights) -> int | None:
    to_k = next((m for m in weights.modules if m.endswith("attn2.to_k")), None)
    return None if to_k is None else int(weights.A[to_k].shape[1])


def _check_compatible(items: list[tuple[formats.LoRAWeights, float]]) -> None:
    """Refuse a merge of LoRAs for different base models (a module in two of them with other
    shapes)."""
    if not items:
        raise AlgebraError("give at least one LoRA to merge.")
    for weights, w in items:
        formats.check_weights(weights)
        if not (isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)):
            raise AlgebraError(f"a merge weight must be a finite number, got {w!r}.")
    shapes: dict[str, tuple] = {}
    for i, (weights, _) in enumerate(items):
        for m in weights.modules:
            shape = (
                weights.B[m].shape[0],
                *weights.A[m].shape[1:],
            )  # (out, in) or (out, in, kh, kw)
            if shapes.setdefault(m, (shape, i))[0] != shape:
                raise AlgebraError(
                    f"LoRA {shapes[m][1] + 1} and LoRA {i + 1} disagree on {m}: {shapes[m][0]} vs "
                    f"{shape}; they were made for different base models, which cannot be merged."
                )
    widths = {_context_width(weights) for weights, _ in items} - {None}
    if len(widths) > 1:
        raise AlgebraError(
            "the LoRAs were made for different base models (cross-attention reads a text of "
            f"widths {sorted(widths)}); merge LoRAs of one base model."
        )


def _naive_module(
    items: list[tuple[formats.LoRAWeights, float]], m: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """B's and A's each scaled by sqrt(|weight| * scaling) (the weight's sign on B), then summed,
    as PEFT's "linear"; B, A and the alpha (rank: scaling 1, the factors carry the weights and
    scalings)."""
    having = [(weights, w) for weights, w in items if m in weights.A]
    ranks = {weights.rank(m) for weights, _ in having}
    if len(ranks) > 1:
        raise AlgebraError(
            f"a naive merge averages A and B entry by entry, so it needs one rank; {m} has "
            f"ranks {sorted(ranks)}: use --method concat or svd."
        )
    roots = [
        (
            math.copysign(math.sqrt(abs(w) * weights.scaling_of(m)), w),
            math.sqrt(abs(w) * weights.scaling_of(m)),
        )
        for weights, w in having
    ]
    b = sum(rb * weights.B[m].float() for (weights, _), (rb, _) in zip(having, roots, strict=True))
    a = sum(ra * weights.A[m].float() for (weights, _), (_, ra) in zip(having, roots, strict=True))
    return b, a, float(ranks.pop())


def _stacked_module(
    items: list[tuple[formats.LoRAWeights, float]], m: str, method: str, rank: int | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """B and A of a concat or SVD merge of module ``m``, and the alpha (rank: scaling 1, the
    factors carry everything)."""
    bs, as_ = [], []
    for weights, w in items:
        if m in weights.A:
            b, a = delta_factors(weights, m)
            bs.append(b * w)
            as_.append(a)
    b, a = torch.cat(bs, dim=1), torch.cat(as_, dim=0)  # (out, sum r), (sum r, in): sum w_i dW_i
    like = next(weights for weights, _ in items if m in weights.A)
    if method == "svd":
        u, s, vh = factored_svd(b, a)
        k = min(rank or max(weights.rank(m) for weights, _ in items if m in weights.A), len(s))
        b, a = factors_from_svd(u, s, vh, k, 1.0)
    b, a = module_shaped(b, a, tuple(like.A[m].shape[1:]))
    return b, a, float(a.shape[0])


def merge(
    items: list[tuple[formats.LoRAWeights, float]], method: str = "concat", rank: int | None = None
) -> formats.LoRAWeights:
    """One LoRA from ``[(weights, weight), ...]``; its delta W in each module is
    ``sum weight_i * delta W_i`` (``"concat"``: exactly, ranks add; ``"svd"``: the best
    rank-``rank`` approximation, ``rank`` by default the largest of theirs; ``"naive"``: A's and
    B's summed apart, each scaled by sqrt(|weight| * scaling), which is not the sum; it needs one
    rank).

    kohya's ``merge_lora.py`` sums the factors the same way but scales both ``lora_up`` and
    ``lora_down`` by ``sqrt(alpha_i / alpha_1) * ratio`` and keeps the first LoRA's alpha, so each
    LoRA's own term comes out as ``ratio * |ratio| * delta W_i``: its ratio is squared (the naive
    merge with weights w >= 0 is its merge with ratios ``sqrt(w)``). With ``--concat`` the ratio is
    squared too, and each term is also scaled by ``r_i / (r_1 + r_2 + ...)``, because the file
    keeps the first alpha while the ranks add."""
    if method not in METHODS:
        raise AlgebraError(f"unknown merge method {method!r}: use one of {', '.join(METHODS)}.")
    _check_compatible(items)
    modules = list(dict.fromkeys(m for weights, _ in items for m in weights.modules))
    A, B, alphas = {}, {}, {}
    for m in modules:
        if method == "naive":
            B[m], A[m], alphas[m] = _naive_module(items, m)
        else:
            B[m], A[m], alphas[m] = _stacked_module(items, m, method, rank)
    meta = {"lorakit_merged": f"{method}, {len(items)} LoRAs"}
    return formats.build_weights("lorakit", A, B, alphas, False, meta)


def delta_error(
    approx: formats.LoRAWeights,
    exact: list[tuple[formats.LoRAWeights, float]] | formats.LoRAWeights,
) -> dict[str, float]:
    """Per module, ``||delta W(approx) - sum w_i delta W_i||_F / ||sum w_i delta W_i||_F``
    (0: exact)."""
    exact = [(exact, 1.0)] if isinstance(exact, formats.LoRAWeights) else exact
    errors = {}
    for m in dict.fromkeys(m for weights, _ in exact for m in weights.modules):
        target = sum(w * weights.matrix(m) for weights, w in exact if m in weights.A)
        got = approx.matrix(m) if m in approx.A else torch.zeros_like(target)
        norm = float(torch.linalg.matrix_norm(target))
        errors[m] = (
            float(torch.linalg.matrix_norm(got - target)) / norm
            if norm > 0
            else float(torch.linalg.matrix_norm(got))
        )
    return errors


@torch.no_grad()
def merge_into(model, items: list[tuple[formats.LoRAWeights, float]]) -> list[str]:
    """Add ``sum weight_i * delta W_i`` to the weights of ``model`` (a UNet or a pipeline) for
    good; returns the modules changed. Every module and shape is checked first: a LoRA that does
    not fit changes nothing."""
    _check_compatible(items)
    if next(inject.lora_layers(model), None) is not None:
        raise AlgebraError(
            "the model has LoRA layers: merge them first (inject.merge_lora) and remove them "
            "(inject.remove_lora), or bake into a model without them."
        )
    deltas: dict[str, torch.Tensor] = {}
    layers: dict[str, nn.Module] = {}
    problems = []
    for weights, w in items:
        paths, bases, unfit = formats.resolve_modules(model, weights)
        problems += unfit
        layers |= bases
        for m, p in paths.items():
            if p in bases:
                delta = (weights.matrix(m) * w).reshape(bases[p].weight.shape)
                deltas[p] = deltas[p] + delta if p in deltas else delta
    if problems:
        raise AlgebraError(
            f"the LoRAs do not fit this model: {len(problems)} modules do not match (nothing was "
            f"changed): {'; '.join(problems[:5])}"
        )
    for p, delta in deltas.items():
        weight = layers[p].weight
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    return list(deltas)
