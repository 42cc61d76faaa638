"""lorakit.claims.intervals: the standard error, the t and bootstrap intervals, and the verdicts,
against formulas and table values computed here, and against the wrong answers students write."""

import math
import statistics

import numpy as np
import pytest

from lorakit import claims

DIFFS = [0.12, 0.05, 0.20, 0.09]  # four seeds' paired differences
T_975_3 = 3.182446305  # Student's t, 97.5th percentile, 3 degrees of freedom (a printed table)
T_975_5 = 2.570581836


def test_standard_error_is_the_sample_sd_over_root_n():
    want = statistics.stdev(DIFFS) / math.sqrt(len(DIFFS))
    assert claims.standard_error(DIFFS) == pytest.approx(want)
    # the population sd (ddof 0) is the wrong answer: smaller by sqrt(3 / 4)
    wrong = float(np.std(DIFFS)) / math.sqrt(len(DIFFS))
    assert claims.standard_error(DIFFS) != pytest.approx(wrong, rel=1e-3)
    assert claims.standard_error([0.4]) == 0.0


@pytest.mark.parametrize(
    "values, t", [(DIFFS, T_975_3), ([0.1, 0.3, 0.2, 0.0, 0.25, 0.15], T_975_5)]
)
def test_t_interval_is_the_mean_plus_minus_t_n_minus_1_standard_errors(values, t):
    mean = sum(values) / len(values)
    se = statistics.stdev(values) / math.sqrt(len(values))
    got = claims.t_interval(values)
    assert (got.mean, got.low, got.high, got.n) == pytest.approx(
        (mean, mean - t * se, mean + t * se, len(values))
    )
    # 1.96 standard errors (the normal's) is too narrow for a few seeds
    assert got.high - got.low > 2 * 1.96 * se * 1.2


def test_an_interval_needs_two_seeds():
    with pytest.raises(ValueError, match="2 or more seeds"):
        claims.t_interval([0.3])
    with pytest.raises(ValueError, match="2 or more seeds"):
        claims.bootstrap_interval([0.3])


def test_bootstrap_interval_lies_within_the_values_and_is_reproducible():
    got = claims.bootstrap_interval(DIFFS)
    assert min(DIFFS) <= got.low < got.mean < got.high <= max(DIFFS)
    assert got == claims.bootstrap_interval(DIFFS)  # seeded
    t = claims.t_interval(DIFFS)
    assert t.low < got.low and got.high < t.high  # with 4 seeds it cannot see beyond them
    same = claims.bootstrap_interval([0.5, 0.5, 0.5])
    assert (same.low, same.high) == (0.5, 0.5)


def test_paired_differences_pair_by_seed_and_refuse_unpaired_seeds():
    a, b = {0: 0.8, 1: 0.6, 2: 0.9}, {2: 0.5, 0: 0.7, 1: 0.7}
    assert claims.paired_differences(a, b) == pytest.approx([0.1, -0.1, 0.4])
    assert claims.paired_differences(a, b, direction=-1) == pytest.approx([-0.1, 0.1, -0.4])
    with pytest.raises(ValueError, match="same training seeds"):
        claims.paired_differences(a, {0: 0.7, 1: 0.7})


def interval(low, high):
    return claims.Interval((low + high) / 2, low, high, 4, "t")


@pytest.mark.parametrize(
    "low, high, want",
    [
        (0.15, 0.30, "holds"),
        (0.02, 0.30, "holds with a caveat"),
        (0.02, 0.08, "does not hold"),  # real, but surely smaller than the margin
        (-0.05, 0.08, "does not hold"),
        (-0.30, -0.10, "does not hold"),
        (-0.05, 0.30, "undecided"),
        (0.10, 0.30, "holds with a caveat"),  # low on the margin: not above it
        (0.00, 0.30, "undecided"),  # low on 0: not above it
        (-0.05, 0.10, "undecided"),  # high on the margin: not below it
    ],
)
def test_verdict_of_an_at_least_claim(low, high, want):
    assert claims.verdict(interval(low, high), claims.Threshold(0.10, "x")) == want


@pytest.mark.parametrize(
    "low, high, want",
    [
        (-0.05, 0.08, "holds"),
        (0.12, 0.30, "does not hold"),
        (0.02, 0.30, "undecided"),
        (-0.30, 0.30, "undecided"),
    ],
)
def test_verdict_of_an_at_most_claim(low, high, want):
    assert claims.verdict(interval(low, high), claims.Threshold(0.10, "x", "at most")) == want


def test_a_verdict_refuses_an_interval_that_is_not_finite():
    with pytest.raises(ValueError, match="not finite"):
        claims.verdict(interval(float("nan"), 0.3), claims.Threshold(0.10, "x"))


def test_a_threshold_is_a_positive_margin_of_a_known_kind():
    with pytest.raises(ValueError, match="above 0"):
        claims.Threshold(0.0, "x")
    with pytest.raises(ValueError, match="at least"):
        claims.Threshold(0.1, "x", "about")
