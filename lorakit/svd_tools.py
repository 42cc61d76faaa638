"""LoRA algebra: a LoRA file as matrices, and the SVD tools practitioners use on them.

Introduced in notebooks/11_lora_algebra.ipynb.

Every module of a LoRA is one matrix, ``delta W = scaling * B @ A`` (a convolution's flattened to
``(out, in * kh * kw)``), of rank at most r. Lesson 01's Eckart-Young theorem then does everything:

* :func:`spectra`: the singular values of every module's delta W, from the factors alone (QR of B and
  A^T, then the SVD of an r x r core: ``O((in + out) r^2)``, never the full matrix), and how much of its
  rank each layer used (:func:`rank_for_energy`).
* :func:`resize`: a smaller LoRA, each module truncated to its best rank-k approximation, with kohya's
  dynamic-rank criteria (``resize_lora.py``): ``sv_ratio`` keeps the singular values above
  ``s_max / ratio``, ``sv_fro`` the fewest that keep a fraction of the Frobenius norm
  (``sqrt(sum s_k^2 / sum s^2)``), ``sv_cumulative`` the fewest whose sum keeps a fraction of
  ``sum s``; ``rank`` alone is a fixed rank, and the cap of the three. Each module keeps its scaling
  (alpha becomes ``scaling * k``, as kohya does); the report says, per module, the rank kept and the
  energy (``sum s_k^2 / sum s^2``) kept. Its error is exactly the Eckart-Young bound.
* :func:`extract`: a LoRA from a full fine-tune, delta W = tuned - base per module (in float32 whatever
  the stored dtype), truncated by SVD to ``rank`` or to the rank that keeps ``energy`` of it.
  ``clamp_quantile`` (kohya's ``extract_lora_from_models.py``, default there 0.99) clips the factors'
  entries to that quantile of their absolute values: a few outliers then stop setting the scale of
  a half-precision file; the truncation error grows a little. lorakit's default is no clamping.
* :func:`merge`: several LoRAs, each with a weight, as one. ``"concat"`` stacks the factors (ranks add):
  exactly the weighted sum of their delta W. ``"svd"`` is the best rank-R approximation of that sum
  (kohya's ``svd_merge_lora.py``). ``"naive"`` sums the A's and the B's separately, each scaled by
  ``sqrt(w)`` (kohya's ``merge_lora.py`` without ``--concat``, and several tools):
  ``(sqrt(w1) B1 + sqrt(w2) B2)(sqrt(w1) A1 + sqrt(w2) A2)`` is not ``w1 B1 A1 + w2 B2 A2``, the cross terms
  ``B1 A2`` and ``B2 A1`` come in; it is here to be measured wrong (:func:`delta_error`). :func:`merge_into` bakes LoRAs into a model's weights.

Every function checks its input first and changes nothing it was given; outputs are
:class:`lorakit.formats.LoRAWeights` that ``formats.save_weights`` writes in any format.

Left out: LyCORIS's algorithms (LoHa, LoKr), DyLoRA, and randomised SVD (extract takes the full SVD of
every difference: 42 s for SD 1.5's 192 kohya-default layers on a 2-core CPU, ``benchmarks/lora_algebra.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lorakit import formats, inject, lowrank
from lorakit.formats import LoRAWeights

METHODS = ("concat", "svd", "naive")
CRITERIA = ("rank", "sv_ratio", "sv_fro", "sv_cumulative")
MIN_SV = 1e-6  # kohya's: a module whose largest singular value is below it is a zero matrix (kept at rank 1)


class AlgebraError(ValueError):
    """LoRAs that cannot be resized, extracted or merged as asked; the one-line message names the module."""


@dataclass(frozen=True)
class ModuleReport:
    """What happened to one module: its rank before and after, the energy and error of the truncation."""

    path: str
    rank_before: int
    rank_after: int
    energy_kept: float  # sum of the kept s_k^2 over sum of s^2 (1.0: nothing lost)
    error: float  # Frobenius norm of (delta W before - delta W after)


# --------------------------------------------------------------------------- spectra


def _factors(weights: LoRAWeights, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B', A')`` as matrices with ``B' @ A' = delta W`` of ``path``: (out, r) and (r, in*kh*kw), float32."""
    a, b = weights.A[path].float(), weights.B[path].float()
    return b.reshape(b.shape[0], -1) * weights.scaling_of(path), a.reshape(a.shape[0], -1)


def factored_svd(
    b: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD of ``b @ a`` (``(m, r) @ (r, n)``) without forming it: ``U (m, r), S (r,), Vh (r, n)``.

    ``b = Qb Rb`` and ``a^T = Qa Ra``, so ``b @ a = Qb (Rb Ra^T) Qa^T``; the SVD of the r x r core gives the rest.
    """
    qb, rb = torch.linalg.qr(b.double())  # (m, r), (r, r)
    qa, ra = torch.linalg.qr(a.double().T)  # (n, r), (r, r)
    u, s, vh = torch.linalg.svd(rb @ ra.T)  # (r, r)
    return (qb @ u).float(), s.float(), (vh @ qa.T).float()


def spectrum(weights: LoRAWeights, path: str) -> torch.Tensor:
    """The singular values of module ``path``'s delta W, decreasing (r of them)."""
    return factored_svd(*_factors(weights, path))[1]


def spectra(weights: LoRAWeights) -> dict[str, torch.Tensor]:
    """:func:`spectrum` of every module."""
    return {m: spectrum(weights, m) for m in weights.modules}


def rank_for_energy(s: torch.Tensor, fraction: float = 0.99) -> int:
    """The rank a module really uses: the fewest singular values that keep ``fraction`` of ``sum s^2``."""
    if float(s.max()) <= MIN_SV:
        return 0
    return lowrank.rank_for_energy(s, fraction)


# --------------------------------------------------------------------------- resize


def _check_fraction(value, name: str, upper: float = 1.0, closed: bool = True) -> float:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (0 < value <= upper if closed else 0 < value < upper)
    )
    if not ok:
        raise AlgebraError(
            f"{name} must be a number in (0, {upper:g}{']' if closed else ')'}, got {value!r}."
        )
    return float(value)


def keep_rank(
    s: torch.Tensor,
    rank: int | None = None,
    sv_ratio: float | None = None,
    sv_fro: float | None = None,
    sv_cumulative: float | None = None,
) -> int:
    """How many singular values ``s`` (decreasing) keep under one criterion, capped by ``rank`` (kohya's rules).

    ``sv_ratio``: those above ``s[0] / sv_ratio``; ``sv_fro``: the fewest with ``sqrt(sum s_k^2 / sum s^2) >=
    sv_fro``; ``sv_cumulative``: the fewest with ``sum s_k / sum s >= sv_cumulative``. At least 1.
    """
    n = len(s)
    if float(s[0]) <= MIN_SV:
        return 1  # a zero matrix: rank 1, as kohya keeps it
    if sv_ratio is not None:
        k = int((s > s[0] / sv_ratio).sum())
    elif sv_fro is not None:
        k = (
            int(
                torch.searchsorted(
                    torch.cumsum(s.double() ** 2, 0) / float((s.double() ** 2).sum()),
                    torch.tensor(sv_fro**2, dtype=torch.float64) - 1e-12,
                )
            )
            + 1
        )
    elif sv_cumulative is not None:
        k = (
            int(
                torch.searchsorted(
                    torch.cumsum(s.double(), 0) / float(s.double().sum()),
                    torch.tensor(sv_cumulative, dtype=torch.float64) - 1e-12,
                )
            )
            + 1
        )
    else:
        k = n if rank is None else rank
    return max(1, min(k, n, rank if rank is not None else n))


def _split(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, k: int, scaling: float):
    """Factors ``B (out, k), A (k, in)`` with ``scaling * B @ A = U_k S_k Vh_k``: S split evenly between them."""
    root = (s[:k] / scaling).sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k]


def _shaped(b: torch.Tensor, a: torch.Tensor, inputs: tuple[int, ...]):
    """B and A in the module's shapes, ``inputs`` being what A reads: ``(in,)`` for a linear layer, ``(in, kh, kw)``
    for a convolution, whose B is then (out, k, 1, 1) and A (k, in, kh, kw)."""
    if len(inputs) == 3:
        return b.reshape(b.shape[0], b.shape[1], 1, 1).contiguous(), a.reshape(
            a.shape[0], *inputs
        ).contiguous()
    return b.contiguous(), a.contiguous()


def _energy_kept(s: torch.Tensor, k: int) -> float:
    """The fraction of ``sum s^2`` that the first ``k`` singular values hold (1.0 for a zero matrix)."""
    total = float((s.double() ** 2).sum())
    return float((s[:k].double() ** 2).sum()) / total if total > 0 else 1.0


def resize(
    weights: LoRAWeights,
    rank: int | None = None,
    *,
    sv_ratio: float | None = None,
    sv_fro: float | None = None,
    sv_cumulative: float | None = None,
) -> tuple[LoRAWeights, list[ModuleReport]]:
    """A smaller LoRA: every module truncated to its best rank-k approximation (criteria: :func:`keep_rank`).

    ``rank`` alone is a fixed rank for every module (refused above a module's own rank: a resize never adds
    rank); with a dynamic criterion it is the cap. Returns the new weights and a report per module.
    """
    formats.check_weights(weights)
    given = [
        n
        for n, v in (("sv_ratio", sv_ratio), ("sv_fro", sv_fro), ("sv_cumulative", sv_cumulative))
        if v is not None
    ]
    if len(given) > 1:
        raise AlgebraError(f"give one dynamic criterion, not {' and '.join(given)}.")
    if rank is None and not given:
        raise AlgebraError("give a rank, or one of sv_ratio, sv_fro, sv_cumulative.")
    if rank is not None:
        rank = lowrank.check_rank(rank, 10**9, "rank", "any")
        if not given:
            above = [m for m in weights.modules if weights.rank(m) < rank]
            if above:
                raise AlgebraError(
                    f"rank {rank} is above the rank of {len(above)} modules (e.g. {above[0]}, rank "
                    f"{weights.rank(above[0])}): a resize only removes rank. Use rank <= "
                    f"{min(weights.rank(m) for m in weights.modules)}, or --sv-fro etc. with --rank as a cap."
                )
    if sv_ratio is not None and not (
        isinstance(sv_ratio, (int, float)) and math.isfinite(sv_ratio) and sv_ratio >= 1
    ):
        raise AlgebraError(
            f"sv_ratio must be a number of at least 1 (keep s > s_max / ratio), got {sv_ratio!r}."
        )
    if sv_fro is not None:
        _check_fraction(sv_fro, "sv_fro")
    if sv_cumulative is not None:
        _check_fraction(sv_cumulative, "sv_cumulative")
    A, B, alphas, reports = {}, {}, {}, []
    for m in weights.modules:
        b, a = _factors(weights, m)
        u, s, vh = factored_svd(b, a)
        k = keep_rank(s, rank, sv_ratio, sv_fro, sv_cumulative)
        scaling = weights.scaling_of(
            m
        )  # kept: alpha becomes scaling * k (rsLoRA: scaling * sqrt(k))
        new_b, new_a = _split(u, s, vh, k, scaling)
        B[m], A[m] = _shaped(new_b, new_a, tuple(weights.A[m].shape[1:]))
        alphas[m] = scaling * (math.sqrt(k) if weights.use_rslora else k)
        reports.append(
            ModuleReport(
                m, weights.rank(m), k, _energy_kept(s, k), lowrank.eckart_young_error(s, k)
            )
        )
    meta = dict(weights.metadata) | {
        "lorakit_resized": ", ".join(
            f"{n}={v}"
            for n, v in (
                ("rank", rank),
                ("sv_ratio", sv_ratio),
                ("sv_fro", sv_fro),
                ("sv_cumulative", sv_cumulative),
            )
            if v is not None
        )
    }
    return formats._build("lorakit", A, B, alphas, weights.use_rslora, meta), reports


# --------------------------------------------------------------------------- extract


def _extractable(model) -> dict[str, nn.Module]:
    """Every layer LoRA can stand for (linear, and convolutions without groups), by LoRA-file module path."""
    return {
        formats.canonical(prefix + n): m
        for prefix, part in inject.components(model)
        for n, m in part.named_modules()
        if n and inject.wrappable(m)
    }


def _clamp(u: torch.Tensor, vh: torch.Tensor, quantile: float):
    """kohya's ``clamp_quantile``: clip both factors to the ``quantile`` of their absolute values."""
    values = torch.cat([u.flatten(), vh.flatten()]).abs()
    if values.numel() > 2**24:  # torch.quantile's limit: a strided sample is enough for a quantile
        values = values[:: values.numel() // 2**24 + 1]
    limit = torch.quantile(values, quantile)
    return u.clamp(-limit, limit), vh.clamp(-limit, limit)


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
) -> tuple[LoRAWeights, list[ModuleReport]]:
    """A LoRA that approximates a full fine-tune: per module, the SVD of ``tuned - base`` truncated to ``rank``
    or to the rank that keeps ``energy`` of ``sum s^2`` (capped by ``rank`` if both are given).

    ``base`` and ``tuned``: two UNets, or two pipelines (their text encoders too), of one architecture.
    ``targets``: name suffixes (or a preset of ``inject.PRESETS``) to extract; default every linear layer and
    convolution that changed by more than ``min_diff`` (largest absolute difference). The difference is
    computed in float32 whatever the stored dtype; the LoRA has alpha = rank (scaling 1).
    """
    if rank is None and energy is None:
        raise AlgebraError("give a rank, an energy fraction, or both (the rank is then the cap).")
    if rank is not None:
        rank = lowrank.check_rank(rank, 10**9, "rank", "any")
    if energy is not None:
        _check_fraction(energy, "energy")
    if clamp_quantile is not None:
        _check_fraction(clamp_quantile, "clamp_quantile", closed=False)
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
    paths = list(ours)
    if targets is not None:
        suffixes = inject._suffixes(targets)
        paths = [m for m in paths if any(inject._matches(m, s) for s in suffixes)]
        if not paths:
            raise AlgebraError(
                f"targets {targets!r} select no linear layer or convolution of this model."
            )
    A, B, reports = {}, {}, []
    for m in paths:
        w0, w1 = ours[m].weight, theirs[m].weight
        bad = int((~torch.isfinite(w1)).sum())
        if bad:
            raise AlgebraError(
                f"{m} of the tuned model holds {bad} NaN or infinite values: the fine-tune diverged; "
                "extract from an earlier checkpoint."
            )
        delta = w1.detach().float().cpu() - w0.detach().float().cpu()
        if float(delta.abs().max()) <= min_diff:
            continue
        matrix = delta.reshape(delta.shape[0], -1)  # (out, in * kh * kw)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        cap = min(rank or len(s), len(s))
        k = min(cap, lowrank.rank_for_energy(s, energy)) if energy is not None else cap
        k = max(1, k)
        if clamp_quantile is not None:
            b_k, a_k = _clamp(u[:, :k] * s[:k], vh[:k], clamp_quantile)
        else:
            b_k, a_k = _split(u, s, vh, k, 1.0)
        B[m], A[m] = _shaped(b_k, a_k, tuple(delta.shape[1:]))
        reports.append(
            ModuleReport(
                m,
                int(min(matrix.shape)),
                k,
                _energy_kept(s, k),
                float(torch.linalg.matrix_norm(matrix - b_k @ a_k)),
            )
        )
    if not A:
        raise AlgebraError(
            f"no layer differs by more than {min_diff:g} between the two models: is the tuned model "
            "really a fine-tune of the base (or the same files twice)?"
        )
    meta = {"lorakit_extracted": f"rank={rank}, energy={energy}, clamp_quantile={clamp_quantile}"}
    return formats._build(
        "lorakit", A, B, {m: float(A[m].shape[0]) for m in A}, False, meta
    ), reports


# --------------------------------------------------------------------------- merge


def _check_compatible(items: list[tuple[LoRAWeights, float]]) -> None:
    """Refuse a merge of LoRAs for different base models (a module in two of them with other shapes)."""
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
            )  # delta W's: (out, in) or (out, in, kh, kw)
            if shapes.setdefault(m, (shape, i))[0] != shape:
                raise AlgebraError(
                    f"LoRA {shapes[m][1] + 1} and LoRA {i + 1} disagree on {m}: {shapes[m][0]} vs "
                    f"{shape}; they were made for different base models, which cannot be merged."
                )
    widths = {_context_width(weights) for weights, _ in items} - {None}
    if len(widths) > 1:
        raise AlgebraError(
            f"the LoRAs were made for different base models (cross-attention reads a text of widths "
            f"{sorted(widths)}); merge LoRAs of one base model."
        )


def _context_width(weights: LoRAWeights) -> int | None:
    to_k = next((m for m in weights.modules if m.endswith("attn2.to_k")), None)
    return None if to_k is None else int(weights.A[to_k].shape[1])


def merge(
    items: list[tuple[LoRAWeights, float]], method: str = "concat", rank: int | None = None
) -> LoRAWeights:
    """One LoRA from ``[(weights, weight), ...]``; its delta W in each module is ``sum weight_i * delta W_i``
    (``"concat"``: exactly, ranks add; ``"svd"``: the best rank-``rank`` approximation, ``rank`` by default the
    largest of theirs; ``"naive"``: A's and B's summed apart, each scaled by sqrt(weight), which is not the sum;
    it needs one rank)."""
    if method not in METHODS:
        raise AlgebraError(f"unknown merge method {method!r}: use one of {', '.join(METHODS)}.")
    _check_compatible(items)
    modules = list(dict.fromkeys(m for weights, _ in items for m in weights.modules))
    A, B, alphas = {}, {}, {}
    if method == "naive":
        for m in modules:
            having = [(weights, w) for weights, w in items if m in weights.A]
            ranks = {weights.rank(m) for weights, _ in having}
            if len(ranks) > 1:
                raise AlgebraError(
                    f"a naive merge averages A and B entry by entry, so it needs one rank; {m} has "
                    f"ranks {sorted(ranks)}: use --method concat or svd."
                )
            # kohya's merge_lora.py without --concat: each factor scaled by sqrt(weight * scaling), then summed
            roots = [
                (
                    math.copysign(math.sqrt(abs(w) * weights.scaling_of(m)), w),
                    math.sqrt(abs(w) * weights.scaling_of(m)),
                )
                for weights, w in having
            ]
            B[m] = sum(
                rb * weights.B[m].float()
                for (weights, _), (rb, _) in zip(having, roots, strict=True)
            )
            A[m] = sum(
                ra * weights.A[m].float()
                for (weights, _), (_, ra) in zip(having, roots, strict=True)
            )
            alphas[m] = float(ranks.pop())  # scaling 1: the factors carry the weights and scalings
    else:
        for m in modules:
            bs, as_ = [], []
            for weights, w in items:
                if m in weights.A:
                    b, a = _factors(weights, m)
                    bs.append(b * w)
                    as_.append(a)
            b, a = (
                torch.cat(bs, dim=1),
                torch.cat(as_, dim=0),
            )  # (out, sum r), (sum r, in): B A = sum w_i dW_i
            like = next(weights for weights, _ in items if m in weights.A)
            if method == "concat":
                new_b, new_a = b, a
            else:
                u, s, vh = factored_svd(b, a)
                k = min(
                    rank or max(weights.rank(m) for weights, _ in items if m in weights.A), len(s)
                )
                new_b, new_a = _split(u, s, vh, k, 1.0)
            B[m], A[m] = _shaped(new_b, new_a, tuple(like.A[m].shape[1:]))
            alphas[m] = float(A[m].shape[0])  # scaling 1: the factors carry everything
    return formats._build(
        "lorakit", A, B, alphas, False, {"lorakit_merged": f"{method}, {len(items)} LoRAs"}
    )


def delta_error(
    approx: LoRAWeights, exact: list[tuple[LoRAWeights, float]] | LoRAWeights
) -> dict[str, float]:
    """Per module, ``||delta W(approx) - sum w_i delta W_i||_F / ||sum w_i delta W_i||_F`` (0: exact)."""
    exact = [(exact, 1.0)] if isinstance(exact, LoRAWeights) else exact
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
def merge_into(model, items: list[tuple[LoRAWeights, float]]) -> list[str]:
    """Add ``sum weight_i * delta W_i`` to the weights of ``model`` (a UNet or a pipeline) for good; returns the
    modules changed. Every module and shape is checked first: a LoRA that does not fit changes nothing."""
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
