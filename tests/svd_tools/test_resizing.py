"""lorakit.svd_tools.resize: its error is the Eckart-Young bound, the same rank changes nothing,
and kohya's three dynamic criteria choose the ranks kohya's script chooses."""

import pytest
import torch

from lorakit import lowrank, svd_tools

R = 4


def test_svd_resize_error_is_the_eckart_young_bound(world):
    a = world["a"]
    small, reports = svd_tools.resize(a, 2)
    for report in reports:
        m = report.path
        s = torch.linalg.svdvals(a.matrix(m).double())
        bound = lowrank.eckart_young_error(s, 2)
        error = float(torch.linalg.matrix_norm(small.matrix(m).double() - a.matrix(m).double()))
        assert error == pytest.approx(bound, rel=1e-4, abs=1e-7)
        assert report.error == pytest.approx(bound, rel=1e-4, abs=1e-7)
        assert report.energy_kept == pytest.approx(
            float((s[:2] ** 2).sum() / (s**2).sum()), rel=1e-4
        )
        assert small.rank(m) == 2
        assert small.scaling_of(m) == pytest.approx(a.scaling_of(m))  # kohya keeps the scaling


def test_a_resize_to_the_same_rank_changes_nothing(world):
    a = world["a"]
    same, reports = svd_tools.resize(a, R)
    assert all(r.rank_after == R and r.energy_kept == pytest.approx(1.0) for r in reports)
    assert max(float((same.matrix(m) - a.matrix(m)).abs().max()) for m in a.modules) <= 1e-6


def test_dynamic_resize_follows_kohyas_three_criteria():
    s = torch.tensor([8.0, 4.0, 2.0, 1.0])  # energies 64, 16, 4, 1 of 85; sums 8, 4, 2, 1 of 15
    assert svd_tools.keep_rank(s, sv_ratio=4.0) == 2  # s > 8 / 4 = 2: 8 and 4
    assert svd_tools.keep_rank(s, sv_ratio=9.0) == 4
    # exactly 80 of 85 of the energy: two
    assert svd_tools.keep_rank(s, sv_fro=(80 / 85) ** 0.5) == 2
    # 0.95^2 = 0.9025 of the energy: 80/85 = 0.941 is enough
    assert svd_tools.keep_rank(s, sv_fro=0.95) == 2
    assert svd_tools.keep_rank(s, sv_fro=0.98) == 3  # 0.98^2 = 0.9604: 84/85 needed
    assert svd_tools.keep_rank(s, sv_cumulative=0.8) == 2  # 12 / 15 = 0.8
    assert svd_tools.keep_rank(s, sv_cumulative=0.81) == 3
    assert svd_tools.keep_rank(s, 1, sv_ratio=9.0) == 1  # the rank caps a dynamic criterion
    assert svd_tools.keep_rank(torch.zeros(4), sv_fro=0.5) == 1  # a zero module: rank 1, as kohya
