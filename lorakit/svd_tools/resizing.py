"""Resizing a LoRA: every module truncated to its best rank-k approximation, k fixed or dynamic.

Introduced in notebooks/11_lora_algebra.ipynb.

``rank`` alone is one rank for every module; kohya's dynamic criteria (``resize_lora.py``) choose
k per module from its singular values: ``sv_ratio`` keeps those above ``s_max / ratio``, ``sv_fro``
the fewest that keep a fraction of the Frobenius norm (``sqrt(sum s_k^2 / sum s^2)``),
``sv_cumulative`` the fewest whose sum keeps a fraction of ``sum s``; ``rank`` is then the cap.
Each module keeps its scaling (alpha becomes ``scaling * k``, as kohya does). Its truncation is
the best of its rank (the Eckart-Young theorem, lesson 01), and its Frobenius error is exactly
``sqrt`` of the dropped ``s^2`` (the SVD's pieces are orthogonal).

Left out: a resize that adds rank (it can only remove it), per-module criteria.
"""

from __future__ import annotations

import math

import torch

from lorakit import formats, lowrank
from lorakit.svd_tools.factors import (
    MIN_SV,
    AlgebraError,
    ModuleReport,
    check_fraction,
    delta_factors,
    energy_kept,
    factored_svd,
    factors_from_svd,
    module_shaped,
)

__all__ = ["CRITERIA", "keep_rank", "resize"]

CRITERIA = ("rank", "sv_ratio", "sv_fro", "sv_cumulative")


def _fewest_reaching(parts: torch.Tensor, fraction: float) -> int:
    """The fewest leading entries of ``parts`` (float64) whose sum is ``fraction`` of the total."""
    share = torch.cumsum(parts, 0) / float(parts.sum())
    return int(torch.searchsorted(share, torch.tensor(fraction, dtype=torch.float64) - 1e-12)) + 1


def keep_rank(
    s: torch.Tensor,
    rank: int | None = None,
    sv_ratio: float | None = None,
    sv_fro: float | None = None,
    sv_cumulative: float | None = None,
) -> int:
    """How many singular values ``s`` (decreasing) keep under one criterion, capped by ``rank``
    (kohya's rules).

    ``sv_ratio``: those above ``s[0] / sv_ratio``; ``sv_fro``: the fewest with
    ``sqrt(sum s_k^2 / sum s^2) >= sv_fro``; ``sv_cumulative``: the fewest with
    ``sum s_k / sum s >= sv_cumulative``. At least 1.
    """
    n = len(s)
    if float(s[0]) <= MIN_SV:
        return 1  # a zero matrix: rank 1, as kohya keeps it
    if sv_ratio is not None:
        k = int((s > s[0] / sv_ratio).sum())
    elif sv_fro is not None:
        k = _fewest_reaching(s.double() ** 2, sv_fro**2)
    elif sv_cumulative is not None:
        k = _fewest_reaching(s.double(), sv_cumulative)
    else:
        k = n if rank is None else rank
    return max(1, min(k, n, rank if rank is not None else n))


def _check_criteria(
    weights: formats.LoRAWeights,
    rank: int | None,
    sv_ratio: float | None,
    sv_fro: float | None,
    sv_cumulative: float | None,
) -> int | None:
    """Refuse criteria :func:`resize` cannot follow; returns ``rank`` checked."""
    dynamic = zip(CRITERIA[1:], (sv_ratio, sv_fro, sv_cumulative), strict=True)
    given = [n for n, v in dynamic if v is not None]
    if len(given) > 1:
        raise AlgebraError(f"give one dynamic criterion, not {' and '.join(given)}.")
    if rank is None and not given:
        raise AlgebraError("give a rank, or one of sv_ratio, sv_fro, sv_cumulative.")
    if rank is not None:
        rank = lowrank.check_rank(rank, 10**9, "rank", "any")
        above = [m for m in weights.modules if weights.rank(m) < rank]
        if above and not given:
            raise AlgebraError(
                f"rank {rank} is above the rank of {len(above)} modules (e.g. {above[0]}, rank "
                f"{weights.rank(above[0])}): a resize only removes rank. Use rank <= "
                f"{min(weights.rank(m) for m in weights.modules)}, "
                "or --sv-fro etc. with --rank as a cap."
            )
    if sv_ratio is not None and not (
        isinstance(sv_ratio, (int, float)) and math.isfinite(sv_ratio) and sv_ratio >= 1
    ):
        raise AlgebraError(
            f"sv_ratio must be a number of at least 1 (keep s > s_max / ratio), got {sv_ratio!r}."
        )
    if sv_fro is not None:
        check_fraction(sv_fro, "sv_fro")
    if sv_cumulative is not None:
        check_fraction(sv_cumulative, "sv_cumulative")
    return rank


def resize(
    weights: formats.LoRAWeights,
    rank: int | None = None,
    *,
    sv_ratio: float | None = None,
    sv_fro: float | None = None,
    sv_cumulative: float | None = None,
) -> tuple[formats.LoRAWeights, list[ModuleReport]]:
    """A smaller LoRA: every module truncated to its best rank-k approximation (criteria:
    :func:`keep_rank`).

    ``rank`` alone is a fixed rank for every module (refused above a module's own rank: a resize
    never adds rank); with a dynamic criterion it is the cap. Returns the new weights and a report
    per module: the rank kept and the energy (``sum s_k^2 / sum s^2``) kept.
    """
    formats.check_weights(weights)
    rank = _check_criteria(weights, rank, sv_ratio, sv_fro, sv_cumulative)
    A, B, alphas, reports = {}, {}, {}, []
    for m in weights.modules:
        u, s, vh = factored_svd(*delta_factors(weights, m))
        k = keep_rank(s, rank, sv_ratio, sv_fro, sv_cumulative)
        scaling = weights.scaling_of(m)  # kept: alpha becomes scaling * k (rsLoRA: * sqrt(k))
        new_b, new_a = factors_from_svd(u, s, vh, k, scaling)
        B[m], A[m] = module_shaped(new_b, new_a, tuple(weights.A[m].shape[1:]))
        alphas[m] = scaling * (math.sqrt(k) if weights.use_rslora else k)
        error = lowrank.eckart_young_error(s, k)
        reports.append(ModuleReport(m, weights.rank(m), k, energy_kept(s, k), error))
    criteria = zip(CRITERIA, (rank, sv_ratio, sv_fro, sv_cumulative), strict=True)
    resized = ", ".join(f"{n}={v}" for n, v in criteria if v is not None)
    meta = dict(weights.metadata) | {"lorakit_resized": resized}
    return formats.build_weights("lorakit", A, B, alphas, weights.use_rslora, meta), reports
