"""lorakit.lowrank against numpy.linalg.svd and the Eckart-Young theorem."""

import numpy as np
import pytest
import torch

from lorakit import lowrank

SHAPES = [(40, 25), (25, 40), (30, 30)]


def random_matrix(m, n, seed=0):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def decaying_matrix(m, n, seed=0):
    """A matrix with singular values 2**-i: the energy curve has a real shape."""
    rng = np.random.default_rng(seed)
    p = min(m, n)
    U, _ = np.linalg.qr(rng.standard_normal((m, p)))
    V, _ = np.linalg.qr(rng.standard_normal((n, p)))
    return torch.from_numpy(U @ np.diag(2.0 ** -np.arange(p) * 10) @ V.T)


@pytest.mark.parametrize("m,n", SHAPES)
def test_svd_matches_numpy(m, n):
    W = random_matrix(m, n)
    U, S, Vh = lowrank.svd(W)
    assert S.shape == (min(m, n),)
    np.testing.assert_allclose(S.numpy(), np.linalg.svd(W.numpy(), compute_uv=False), rtol=1e-12)
    np.testing.assert_allclose((U * S @ Vh).numpy(), W.numpy(), atol=1e-12)
    Uk, Sk, Vhk = lowrank.svd(W, 3)
    assert Uk.shape == (m, 3) and Sk.shape == (3,) and Vhk.shape == (3, n)


@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("k", [1, 2, 5, 13])
def test_rank_k_error_is_the_eckart_young_bound(m, n, k):
    W = random_matrix(m, n, seed=k)
    W_k = lowrank.low_rank_approx(W, k)
    S_ref = np.linalg.svd(W.numpy(), compute_uv=False)
    bound = np.sqrt(np.sum(S_ref[k:] ** 2))
    error = np.linalg.norm((W - W_k).numpy(), "fro")
    np.testing.assert_allclose(error, bound, rtol=1e-10)
    np.testing.assert_allclose(
        lowrank.eckart_young_error(torch.from_numpy(S_ref), k), bound, rtol=1e-12
    )
    np.testing.assert_allclose(
        lowrank.relative_error(W, W_k), bound / np.linalg.norm(S_ref), rtol=1e-10
    )


def test_rank_k_approx_matches_numpy_truncation():
    W = random_matrix(35, 20, seed=3)
    U, S, Vh = np.linalg.svd(W.numpy(), full_matrices=False)
    reference = U[:, :4] @ np.diag(S[:4]) @ Vh[:4]
    np.testing.assert_allclose(lowrank.low_rank_approx(W, 4).numpy(), reference, atol=1e-12)


def test_no_other_rank_k_matrix_does_better():
    W = random_matrix(30, 20, seed=4)
    best = np.linalg.norm((W - lowrank.low_rank_approx(W, 3)).numpy())
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        B, A = (
            torch.randn(30, 3, generator=g, dtype=W.dtype),
            torch.randn(3, 20, generator=g, dtype=W.dtype),
        )
        B = W @ torch.linalg.pinv(A)  # the best B for this A: still no better than the SVD
        assert np.linalg.norm((W - B @ A).numpy()) >= best - 1e-10


@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("k", [1, 4, 20])
def test_rank_k_approx_has_rank_k(m, n, k):
    W_k = lowrank.low_rank_approx(random_matrix(m, n, seed=k), k)
    assert W_k.shape == (m, n)
    assert torch.linalg.matrix_rank(W_k).item() == k


def test_full_rank_reconstructs_exactly():
    W = random_matrix(12, 9)
    np.testing.assert_allclose(lowrank.low_rank_approx(W, 9).numpy(), W.numpy(), atol=1e-12)
    assert lowrank.eckart_young_error(lowrank.singular_values(W), 9) == 0.0


def test_energy_is_monotone_and_ends_at_one():
    for W in (random_matrix(30, 20), decaying_matrix(30, 20), random_matrix(8, 50).float()):
        S = lowrank.singular_values(W)
        e = lowrank.energy(S)
        assert e.shape == S.shape
        assert torch.all(e[1:] >= e[:-1])
        assert e[-1].item() == 1.0
        S_ref = np.linalg.svd(W.double().numpy(), compute_uv=False)
        rtol = 1e-12 if W.dtype == torch.float64 else 1e-5
        np.testing.assert_allclose(
            e.double().numpy(), np.cumsum(S_ref**2) / np.sum(S_ref**2), rtol=rtol
        )


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99, 0.999, 1.0])
def test_rank_for_energy_is_the_smallest_rank(fraction):
    for W in (random_matrix(30, 20, seed=1), decaying_matrix(40, 30, seed=2)):
        S_ref = np.linalg.svd(W.numpy(), compute_uv=False)
        kept = np.cumsum(S_ref**2) / np.sum(S_ref**2)
        k = lowrank.rank_for_energy(W, fraction)
        assert k == lowrank.rank_for_energy(torch.from_numpy(S_ref), fraction)
        assert kept[k - 1] >= fraction - 1e-12
        if k > 1:
            assert kept[k - 2] < fraction
        # and the approximation of that rank really keeps that much of ||W||_F^2
        W_k = lowrank.low_rank_approx(W, k)
        assert (np.linalg.norm(W_k.numpy()) / np.linalg.norm(W.numpy())) ** 2 >= fraction - 1e-10


def test_rank_for_energy_of_an_exactly_low_rank_matrix():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(50, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 40, generator=g, dtype=torch.float64
    )
    assert lowrank.rank_for_energy(W, 1.0) == 3
    assert lowrank.rank_for_energy(W.float(), 1.0) == 3


def test_rank_for_energy_of_a_zero_matrix_is_0_and_99_percent_by_default():
    assert lowrank.rank_for_energy(torch.zeros(4, 3)) == 0  # an untrained LoRA module: B = 0
    assert lowrank.rank_for_energy(np.zeros(3), 0.5) == 0
    S = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14: 13 / 14 is short of 99%
    assert lowrank.rank_for_energy(S) == lowrank.rank_for_energy(S, 0.99) == 3


def test_effective_rank():
    S = torch.tensor([3.0, 3.0, 3.0, 3.0, 0.0, 0.0])
    assert lowrank.effective_rank(S) == pytest.approx(4.0)
    assert lowrank.effective_rank(torch.tensor([5.0])) == pytest.approx(1.0)
    W = decaying_matrix(30, 20)
    assert 1.0 < lowrank.effective_rank(W) < lowrank.effective_rank(random_matrix(30, 20)) <= 20


def test_parameter_counts():
    assert lowrank.full_params(320, 768) == 320 * 768
    assert lowrank.lora_params(320, 768, 4) == 4 * (320 + 768)
    assert lowrank.storage_ratio(320, 768, 4) == pytest.approx(4 * 1088 / (320 * 768))
    # A rank-r LoRA is a B (m, r) and an A (r, n): count them as torch would.
    B, A = torch.nn.Linear(4, 320, bias=False), torch.nn.Linear(768, 4, bias=False)
    assert lowrank.lora_params(320, 768, 4) == sum(
        p.numel() for p in (*B.parameters(), *A.parameters())
    )


def test_numpy_and_integer_inputs():
    image = np.random.default_rng(0).integers(0, 256, size=(20, 15), dtype=np.uint8)
    W_k = lowrank.low_rank_approx(image, 5)
    assert isinstance(W_k, torch.Tensor) and W_k.is_floating_point()
    np.testing.assert_allclose(
        lowrank.singular_values(image).numpy(),
        np.linalg.svd(image.astype(np.float64), compute_uv=False),
        rtol=1e-4,
    )


def test_errors_tell_what_to_fix():
    W = random_matrix(10, 6)
    for k in (0, -1, 7):
        with pytest.raises(ValueError, match="1 <= k <= 6"):
            lowrank.low_rank_approx(W, k)
    with pytest.raises(ValueError, match="1 <= k <= 6"):
        lowrank.eckart_young_error(lowrank.singular_values(W), 7)
    with pytest.raises(TypeError, match="integer rank"):
        lowrank.low_rank_approx(W, 2.5)
    for fraction in (0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            lowrank.rank_for_energy(W, fraction)
    with pytest.raises(ValueError, match="2-D matrix"):
        lowrank.low_rank_approx(torch.zeros(3, 4, 5), 1)
    with pytest.raises(ValueError, match="2-D matrix"):
        lowrank.svd(torch.zeros(7))
    with pytest.raises(ValueError, match="1-D vector"):
        lowrank.energy(W)
    with pytest.raises(ValueError, match="zero matrix"):
        lowrank.energy(torch.zeros(4))
    with pytest.raises(ValueError, match="negative"):
        lowrank.energy(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="positive integer"):
        lowrank.lora_params(10, 0, 4)
    with pytest.raises(TypeError, match="torch tensor or a numpy array"):
        lowrank.svd([[1.0, 2.0], [3.0, 4.0]])
