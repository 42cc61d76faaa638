"""Extracting a LoRA from a full fine-tune: the SVD of ``tuned - base`` in every changed layer.

Introduced in notebooks/11_lora_algebra.ipynb.

Per linear layer and convolution, delta W = tuned - base (in float32 whatever the stored dtype),
truncated by SVD to ``rank`` or to the rank that keeps ``energy`` of it: the best LoRA of that
rank, which holds only the part of the change in its layers and strongest directions.
``clamp_quantile`` clips the factors' entries (B = U S and A = Vh, as kohya stores them) to that
quantile of their absolute values, so a few outliers stop setting the scale of a half-precision
file; lorakit's default is no clamping (kohya's differs: :func:`_clamp`).

Left out: randomised SVD (extract takes the full SVD of every difference: 42 s for SD 1.5's 192
kohya-default layers on a 2-core CPU, ``benchmarks/lora_algebra.py``), models of two architectures.
"""

from __future__ import annotations

import torch
from torch import nn

from lorakit import formats, inject, lowrank
from lorakit.svd_tools.factors import (
    AlgebraError,
    ModuleReport,
    check_fraction,
    energy_kept,
    factors_from_svd,
    module_shaped,
)

__all__ = ["extract"]


def _extractable(model) -> dict[str, nn.Module]:
    """Every layer LoRA can stand for (linear, and convolutions without groups), by LoRA-file
    module path."""
    return {
        formats.canonical(prefix + n): m
        for prefix, part in inject.components(model)
        for n, m in part.named_modules()
        if n and inject.wrappable(m)
    }


def _paired_layers(base, tuned) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """The extractable layers of ``base`` and ``tuned``, refused unless of one architecture."""
    ours, theirs = _extractable(base), _extractable(tuned)
    missing = sorted(set(ours) ^ set(theirs))
    if missing:
        raise AlgebraError(
            f"the two models have different architectures: {len(missing)} layers are in one only "
            f"(e.g. {missing[0]}); extract between a model and its own fine-tune."
        )
    wrong = [
        f"{m} {tuple(ours[m].weight.shape)} vs {tuple(theirs[m].weight.shape)}"
        for m in ours
        if ours[m].weight.shape != theirs[m].weight.shape or type(ours[m]) is not type(theirs[m])
    ]
    if wrong:
        raise AlgebraError(
            f"the two models have different architectures: {len(wrong)} layers differ in shape "
            f"(e.g. {wrong[0]}); extract between a model and its own fine-tune."
        )
    return ours, theirs


def _clamp(u: torch.Tensor, vh: torch.Tensor, quantile: float):
    """Clip both factors to that quantile of their entries' absolute values.

    kohya's ``extract_lora_from_models.py`` (``--clamp_quantile``, default 0.99) takes the quantile
    of the signed values, ``torch.quantile(cat(U, Vh), q)``, and clamps to plus or minus it. The
    sign of each singular pair is arbitrary (u and v can both be negated), so lorakit uses absolute
    values: the limit does not depend on the signs the SVD happened to return, and it clips a
    fraction 1 - q of the entries, where kohya's clips about twice that if they are symmetric."""
    values = torch.cat([u.flatten(), vh.flatten()]).abs()
    if values.numel() > 2**24:  # torch.quantile's limit: a strided sample is enough for a quantile
        values = values[:: values.numel() // 2**24 + 1]
    limit = torch.quantile(values, quantile)
    return u.clamp(-limit, limit), vh.clamp(-limit, limit)


def _extract_module(
    m: str,
    w0: torch.Tensor,
    w1: torch.Tensor,
    rank: int | None,
    energy: float | None,
    clamp_quantile: float | None,
    min_diff: float,
) -> tuple[torch.Tensor, torch.Tensor, ModuleReport] | None:
    """B, A and the report of module ``m`` (base weight ``w0``, tuned ``w1``); None where it
    changed by ``min_diff`` or less."""
    bad = int((~torch.isfinite(w1)).sum())
    if bad:
        raise AlgebraError(
            f"{m} of the tuned model holds {bad} NaN or infinite values: the fine-tune diverged; "
            "extract from an earlier checkpoint."
        )
    delta = w1.detach().float().cpu() - w0.detach().float().cpu()
    if float(delta.abs().max()) <= min_diff:
        return None
    matrix = delta.reshape(delta.shape[0], -1)  # (out, in * kh * kw)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    cap = min(rank or len(s), len(s))
    k = min(cap, lowrank.rank_for_energy(s, energy)) if energy is not None else cap
    k = max(1, k)
    if clamp_quantile is not None:
        b_k, a_k = _clamp(u[:, :k] * s[:k], vh[:k], clamp_quantile)
    else:
        b_k, a_k = factors_from_svd(u, s, vh, k, 1.0)
    b, a = module_shaped(b_k, a_k, tuple(delta.shape[1:]))
    error = float(torch.linalg.matrix_norm(matrix - b_k @ a_k))
    return b, a, ModuleReport(m, int(min(matrix.shape)), k, energy_kept(s, k), error)


@torch.no_grad()
def extract(
    base,
    tuned,
    rank: int | None = None,
    *,
    energy: float | None = None,
    clamp_quantile: float | None = None,
    targets=None,
    min_diff: float = 0.0,
) -> tuple[formats.LoRAWeights, list[ModuleReport]]:
    """A LoRA that approximates a full fine-tune: per module, the SVD of ``tuned - base`` truncated
    to ``rank`` or to the rank that keeps ``energy`` of ``sum s^2`` (capped by ``rank`` if both).

    ``base`` and ``tuned``: two UNets, or two pipelines (their text encoders too), of one
    architecture. ``targets``: name suffixes (or a preset of ``inject.PRESETS``) to extract; default
    every linear layer and convolution that changed by more than ``min_diff`` (largest absolute
    difference). The LoRA has alpha = rank (scaling 1).
    """
    if rank is None and energy is None:
        raise AlgebraError("give a rank, an energy fraction, or both (the rank is then the cap).")
    if rank is not None:
        rank = lowrank.check_rank(rank, 10**9, "rank", "any")
    if energy is not None:
        check_fraction(energy, "energy")
    if clamp_quantile is not None:
        check_fraction(clamp_quantile, "clamp_quantile", closed=False)
    ours, theirs = _paired_layers(base, tuned)
    paths = list(ours)
    if targets is not None:
        suffixes = inject.target_suffixes(targets)
        paths = [m for m in paths if any(inject.matches_suffix(m, s) for s in suffixes)]
        if not paths:
            raise AlgebraError(
                f"targets {targets!r} select no linear layer or convolution of this model."
            )
    A, B, reports = {}, {}, []
    for m in paths:
        found = _extract_module(
            m, ours[m].weight, theirs[m].weight, rank, energy, clamp_quantile, min_diff
        )
        if found is not None:
            B[m], A[m], report = found
            reports.append(report)
    if not A:
        raise AlgebraError(
            f"no layer differs by more than {min_diff:g} between the two models: is the tuned "
            "model really a fine-tune of the base (or the same files twice)?"
        )
    meta = {"lorakit_extracted": f"rank={rank}, energy={energy}, clamp_quantile={clamp_quantile}"}
    alphas = {m: float(A[m].shape[0]) for m in A}
    return formats.build_weights("lorakit", A, B, alphas, False, meta), reports
