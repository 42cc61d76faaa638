"""Low rank: truncated SVD, rank-k approximation, singular-value energy, LoRA's parameter count.

Introduced in notebooks/01_low_rank_intuition.ipynb.

A matrix W (m, n) is a sum of rank-one pieces ``S[i] * outer(U[:, i], Vh[i])``, largest first;
the first k give the best rank-k approximation in the Frobenius norm (Eckart-Young), with error
``sqrt(S[k]**2 + S[k+1]**2 + ...)``. The *energy* kept by rank k is the fraction of ``sum(S**2)``
those k pieces carry. LoRA stores an update of W (out m, in n, as ``nn.Linear``) as ``B @ A``,
B (m, r) and A (r, n): ``r * (m + n)`` numbers instead of ``m * n``.

Functions take torch tensors or numpy arrays (integer ones become the default float dtype) and
return torch tensors or Python numbers. Left out: randomized and streaming SVD
(``torch.svd_lowrank``), batched matrices, extracting a LoRA from a fine-tune (``svd_tools``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "ArrayLike",
    "check_rank",
    "eckart_young_error",
    "effective_rank",
    "energy",
    "full_params",
    "lora_params",
    "low_rank_approx",
    "rank_for_energy",
    "reconstruct",
    "relative_error",
    "singular_values",
    "storage_ratio",
    "svd",
]

ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor | np.ndarray):
        raise TypeError(f"{name} must be a torch tensor or a numpy array, got {type(x).__name__}.")
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = x.copy()  # torch warns about read-only arrays (np.asarray of a PIL image is one)
    t = torch.as_tensor(x)
    if t.is_complex():
        raise TypeError(f"{name} is complex: lorakit.lowrank works with real matrices only.")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def _as_matrix(W: ArrayLike, name: str = "W") -> torch.Tensor:
    t = _as_tensor(W, name)
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D matrix, got shape {tuple(t.shape)}: "
            "for an RGB image take one channel at a time, "
            "for a conv kernel reshape it to (out, -1)."
        )
    return t


def _as_singular_values(S: ArrayLike, name: str = "S") -> torch.Tensor:
    t = _as_tensor(S, name)
    if t.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D vector of singular values, got shape {tuple(t.shape)}: "
            "pass torch.linalg.svdvals(W), or use a function that takes the matrix."
        )
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: a matrix has at least one singular value.")
    if (t < 0).any():
        raise ValueError(f"{name} has negative entries: singular values are never negative.")
    return t


def check_rank(k: int, max_rank: int, what: str = "k", limit: str = "min(m, n)") -> int:
    """``k`` as an int if ``1 <= k <= max_rank``, else an error that names the valid range."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"{what} must be an integer rank, got {k!r}.")
    if not 1 <= k <= max_rank:
        raise ValueError(
            f"{what}={k} is not a valid rank here: use 1 <= {what} <= {max_rank} (= {limit})."
        )
    return int(k)


def svd(W: ArrayLike, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``W = U @ diag(S) @ Vh``, truncated to the first ``k`` singular triplets if given.

    Returns U (m, k), S (k,) in decreasing order, Vh (k, n); without ``k``, k = min(m, n).
    """
    W = _as_matrix(W)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)  # (m, p), (p,), (p, n) with p = min(m, n)
    if k is None:
        return U, S, Vh
    k = check_rank(k, min(W.shape))
    return U[:, :k], S[:k], Vh[:k]  # (m, k), (k,), (k, n)


def reconstruct(
    U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, k: int | None = None
) -> torch.Tensor:
    """``U[:, :k] @ diag(S[:k]) @ Vh[:k]``: the rank-k matrix from (possibly cached) SVD factors."""
    k = S.shape[0] if k is None else check_rank(k, S.shape[0])
    return (U[:, :k] * S[:k]) @ Vh[:k]  # (m, k) * (k,) @ (k, n) -> (m, n)


def low_rank_approx(W: ArrayLike, k: int) -> torch.Tensor:
    """The best rank-k approximation of W in the Frobenius norm (Eckart-Young), shape (m, n)."""
    return reconstruct(*svd(W, k))


def singular_values(S_or_W: ArrayLike) -> torch.Tensor:
    """Singular values of a matrix (2-D input) or the vector itself (1-D input), decreasing."""
    t = _as_tensor(S_or_W, "S_or_W")
    if t.ndim == 2:
        return torch.linalg.svdvals(t)  # (min(m, n),)
    return _as_singular_values(t, "S_or_W")


def energy(S: ArrayLike) -> torch.Tensor:
    """Cumulative energy: ``energy(S)[k - 1]`` is the fraction of ``sum(S**2)`` kept by rank k.

    Non-decreasing, and the last entry is exactly 1.
    """
    S = _as_singular_values(S)
    cumulative = torch.cumsum(S.pow(2), dim=0)  # (p,)
    total = cumulative[-1]
    if total == 0:
        raise ValueError("all singular values are zero: a zero matrix has no energy to keep.")
    return cumulative / total


def rank_for_energy(S_or_W: ArrayLike, fraction: float = 0.99) -> int:
    """The smallest rank k whose approximation keeps at least ``fraction`` of the energy.

    ``S_or_W`` is either the singular values (1-D) or the matrix itself (2-D). A zero matrix has
    rank 0 (the rank an untrained LoRA module, B = 0, really uses).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ValueError(
            f"fraction={fraction!r} must be a number in (0, 1], e.g. 0.9 for 90% of the energy."
        )
    S = singular_values(S_or_W)  # (p,)
    if float(S.max()) == 0:
        return 0
    # Singular values at rounding level are zero (numpy's matrix_rank tolerance): without this, a
    # float32 matrix of rank 3 "needs" rank 4 for all of its energy, by how its rounding noise
    # happens to add up.
    size = max(_as_tensor(S_or_W, "S_or_W").shape)
    S = torch.where(S > S.max() * size * torch.finfo(S.dtype).eps, S, torch.zeros_like(S))
    kept = energy(S)  # (p,)
    return int(torch.searchsorted(kept, torch.tensor(float(fraction), dtype=kept.dtype)).item()) + 1


def eckart_young_error(S: ArrayLike, k: int) -> float:
    """Frobenius error of the best rank-k approximation: ``sqrt(sum(S[k:]**2))``."""
    S = _as_singular_values(S)
    k = check_rank(k, S.shape[0])
    return math.sqrt(S[k:].double().pow(2).sum().item())


def relative_error(W: ArrayLike, W_approx: ArrayLike) -> float:
    """``||W - W_approx||_F / ||W||_F``: 0 is perfect, 1 is as bad as the zero matrix."""
    W, W_approx = _as_matrix(W), _as_matrix(W_approx, "W_approx")
    if W.shape != W_approx.shape:
        raise ValueError(f"W has shape {tuple(W.shape)} but W_approx has {tuple(W_approx.shape)}.")
    norm = torch.linalg.matrix_norm(W.double())
    if norm == 0:
        raise ValueError("W is the zero matrix: a relative error is undefined.")
    return (torch.linalg.matrix_norm((W - W_approx).double()) / norm).item()


def effective_rank(S_or_W: ArrayLike) -> float:
    """Roy and Vetterli's effective rank ``exp(entropy(S / sum(S)))``: between 1 and min(m, n).

    A matrix with k equal singular values and the rest zero has effective rank exactly k.
    """
    S = singular_values(S_or_W).double()
    if S.sum() == 0:
        raise ValueError("all singular values are zero: a zero matrix has no effective rank.")
    p = S / S.sum()
    p = p[p > 0]  # 0 * log 0 = 0
    return math.exp(-(p * p.log()).sum().item())


def _check_size(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def full_params(m: int, n: int) -> int:
    """Numbers in a full (m, n) weight update: ``m * n``."""
    return _check_size(m, "m") * _check_size(n, "n")


def lora_params(m: int, n: int, r: int) -> int:
    """Numbers in a rank-r LoRA of an (m, n) weight: B (m, r) plus A (r, n) = ``r * (m + n)``."""
    return _check_size(r, "r") * (_check_size(m, "m") + _check_size(n, "n"))


def storage_ratio(m: int, n: int, r: int) -> float:
    """``r * (m + n) / (m * n)``: below 1, the LoRA is smaller than the full update."""
    return lora_params(m, n, r) / full_params(m, n)
