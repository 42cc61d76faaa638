"""lorakit.svd_tools' spectra: from the factors alone, equal to the SVD of the full delta W."""

import torch

from lorakit import lowrank, svd_tools


def test_spectra_from_the_factors_equal_the_full_svd(world):
    a = world["a"]
    for m in a.modules[:6] + [m for m in a.modules if a.kind(m) == "conv 1x1"][:2]:
        full = torch.linalg.svdvals(a.matrix(m))[: a.rank(m)]
        assert torch.allclose(svd_tools.spectrum(a, m), full, rtol=1e-4, atol=1e-7)
    assert svd_tools.spectra(a).keys() == set(a.modules)


def test_rank_for_energy_is_lowranks_and_a_zero_module_uses_rank_0():
    assert svd_tools.rank_for_energy is lowrank.rank_for_energy
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert svd_tools.rank_for_energy(s, 0.9) == 2 and svd_tools.rank_for_energy(torch.zeros(3)) == 0
    assert svd_tools.rank_for_energy(s) == 3  # 0.99 by default: 13 / 14 of the energy is not enough
