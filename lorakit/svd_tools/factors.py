"""A LoRA module as one matrix, its SVD taken from the factors, and factors made from an SVD.

Introduced in notebooks/11_lora_algebra.ipynb.

Every module of a LoRA is one matrix, ``delta W = scaling * B @ A`` (a convolution's flattened to
``(out, in * kh * kw)``), of rank at most r. :func:`spectra` gives the singular values of every
module from the factors alone (QR of B and A^T, then the SVD of an r x r core:
``O((in + out) r^2)``, never the full matrix). :func:`factors_from_svd` and :func:`module_shaped`
go back from a truncated SVD to a LoRA's B and A, which resize, extract and merge share, with the
report (:class:`ModuleReport`) and the error (:class:`AlgebraError`) they give.

Left out: randomised SVD, and LyCORIS's factorisations (LoHa, LoKr), which are not ``B @ A``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lorakit import formats

__all__ = [
    "MIN_SV",
    "AlgebraError",
    "ModuleReport",
    "check_fraction",
    "delta_factors",
    "energy_kept",
    "factored_svd",
    "factors_from_svd",
    "module_shaped",
    "spectra",
    "spectrum",
]

# kohya's: a module whose largest singular value is below it is a zero matrix (kept at rank 1)
MIN_SV = 1e-6


class AlgebraError(ValueError):
    """LoRAs that cannot be resized, extracted or merged as asked; the one-line message names the
    module."""


@dataclass(frozen=True)
class ModuleReport:
    """What happened to one module: its rank before and after, the energy and error of the
    truncation."""

    path: str
    rank_before: int
    rank_after: int
    energy_kept: float  # sum of the kept s_k^2 over sum of s^2 (1.0: nothing lost)
    error: float  # Frobenius norm of (delta W before - delta W after)


def check_fraction(value, name: str, upper: float = 1.0, closed: bool = True) -> float:
    """``value`` as a float if it is a number in (0, upper] (``closed=False``: (0, upper))."""
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


def delta_factors(weights: formats.LoRAWeights, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B', A')`` as matrices with ``B' @ A' = delta W`` of ``path``: (out, r) and
    (r, in*kh*kw), float32."""
    a, b = weights.A[path].float(), weights.B[path].float()
    return b.reshape(b.shape[0], -1) * weights.scaling_of(path), a.reshape(a.shape[0], -1)


def factored_svd(
    b: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD of ``b @ a`` (``(m, r) @ (r, n)``) without forming it: ``U (m, r), S (r,),
    Vh (r, n)``.

    ``b = Qb Rb`` and ``a^T = Qa Ra``, so ``b @ a = Qb (Rb Ra^T) Qa^T``; the SVD of the r x r core
    gives the rest.
    """
    qb, rb = torch.linalg.qr(b.double())  # (m, r), (r, r)
    qa, ra = torch.linalg.qr(a.double().T)  # (n, r), (r, r)
    u, s, vh = torch.linalg.svd(rb @ ra.T)  # (r, r)
    return (qb @ u).float(), s.float(), (vh @ qa.T).float()


def spectrum(weights: formats.LoRAWeights, path: str) -> torch.Tensor:
    """The singular values of module ``path``'s delta W, decreasing (r of them)."""
    return factored_svd(*delta_factors(weights, path))[1]


def spectra(weights: formats.LoRAWeights) -> dict[str, torch.Tensor]:
    """:func:`spectrum` of every module."""
    return {m: spectrum(weights, m) for m in weights.modules}


def factors_from_svd(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, k: int, scaling: float):
    """Factors ``B (out, k), A (k, in)`` with ``scaling * B @ A = U_k S_k Vh_k``: S split evenly
    between them."""
    root = (s[:k] / scaling).sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k]


def module_shaped(b: torch.Tensor, a: torch.Tensor, inputs: tuple[int, ...]):
    """B and A in the module's shapes, ``inputs`` being what A reads: ``(in,)`` for a linear
    layer, ``(in, kh, kw)`` for a convolution, whose B is then (out, k, 1, 1) and A
    (k, in, kh, kw)."""
    if len(inputs) == 3:
        return b.reshape(b.shape[0], b.shape[1], 1, 1).contiguous(), a.reshape(
            a.shape[0], *inputs
        ).contiguous()
    return b.contiguous(), a.contiguous()


def energy_kept(s: torch.Tensor, k: int) -> float:
    """The fraction of ``sum s^2`` that the first ``k`` singular values hold (1.0 for a zero
    matrix)."""
    total = float((s.double() ** 2).sum())
    return float((s[:k].double() ** 2).sum()) / total if total > 0 else 1.0
