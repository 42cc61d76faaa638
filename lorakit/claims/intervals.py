"""How a claim is judged: paired differences by training seed, a 95 % interval, and a verdict
read off it against a threshold set before the runs.

Introduced in notebooks/09_claims_advantages.ipynb.

A figure over training seeds is a mean and its standard error (:func:`standard_error`). Two methods
trained with the same seeds are compared seed by seed (:func:`paired_differences`): the seed's luck
is shared and cancels. The mean difference gets a 95 % interval, from Student's t with n - 1
degrees of freedom (:func:`t_interval`) or from resampling the seeds (:func:`bootstrap_interval`),
both from SciPy. A :class:`Threshold`, written down before the runs, turns the interval into a
verdict (:func:`verdict`): holds, holds with a caveat, does not hold, or undecided.

Left out: corrections for testing many claims at once, power analysis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "KINDS",
    "VERDICTS",
    "Interval",
    "Threshold",
    "bootstrap_interval",
    "paired_differences",
    "standard_error",
    "t_interval",
    "verdict",
]

VERDICTS = ("holds", "holds with a caveat", "does not hold", "undecided")


def standard_error(values: Sequence[float]) -> float:
    """The sample standard deviation (n - 1 in the denominator) over sqrt(n); 0 for one value."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return 0.0
    return float(values.std(ddof=1) / math.sqrt(values.size))


def paired_differences(a: dict[int, float], b: dict[int, float], direction: int = 1) -> list[float]:
    """``a[seed] - b[seed]`` for every training seed both have (times ``direction``: -1 when the
    claim says ``a`` is lower), in seed order. Seeds only one side has are an error: a pair needs
    both."""
    if set(a) != set(b):
        raise ValueError(
            f"pair the same training seeds: {sorted(a)} against {sorted(b)}; run the missing ones."
        )
    return [direction * (a[seed] - b[seed]) for seed in sorted(a)]


@dataclass(frozen=True)
class Interval:
    """A mean and its interval, with how it was made."""

    mean: float
    low: float
    high: float
    n: int
    method: str  # "t" or "bootstrap"

    def __str__(self) -> str:
        return f"{self.mean:+.3g} [{self.low:+.3g}, {self.high:+.3g}] (n {self.n}, {self.method})"


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean ± t(level, n - 1) x standard error. With 4 seeds t is 3.18: an interval about
    ±3.2 standard errors wide."""
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"an interval needs 2 or more seeds, not {len(values)}: run more seeds.")
    mean, se = float(np.mean(values)), standard_error(values)
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * se
    return Interval(mean, mean - half, mean + half, len(values), "t")


def bootstrap_interval(
    values: Sequence[float], level: float = 0.95, resamples: int = 9999, seed: int = 0
) -> Interval:
    """The mean and a percentile bootstrap interval: the seeds resampled with replacement
    (``scipy.stats.bootstrap``). With few seeds it is narrower than t's: it cannot see beyond
    the values it has."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        raise ValueError(f"an interval needs 2 or more seeds, not {values.size}: run more seeds.")
    if np.ptp(values) == 0:  # every seed the same: nothing to resample
        return Interval(
            float(values[0]), float(values[0]), float(values[0]), values.size, "bootstrap"
        )
    found = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=level,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return Interval(
        float(values.mean()), float(found.low), float(found.high), values.size, "bootstrap"
    )


KINDS = ("at least", "at most")


@dataclass(frozen=True)
class Threshold:
    """What a claim needs, set before its runs: the difference that would matter, ``margin`` > 0,
    what the difference measures, and which side the claim is on: "at least" (there is a
    difference of ``margin`` or more) or "at most" (any difference is smaller than ``margin``)."""

    margin: float
    measures: str
    kind: str = "at least"

    def __post_init__(self):
        if not self.margin > 0:
            raise ValueError(f"a threshold's margin is a difference above 0, not {self.margin}.")
        if self.kind not in KINDS:
            raise ValueError(f"a threshold's kind is 'at least' or 'at most', not {self.kind!r}.")


def verdict(interval: Interval, threshold: Threshold) -> str:
    """Read the verdict off the interval of the difference. For an "at least" claim:

    * holds: the whole interval is above the margin;
    * does not hold: the whole interval is below the margin (any effect is smaller than what
      matters, or goes the other way), whether or not it is above 0;
    * holds with a caveat: above 0 and reaching the margin (real, perhaps smaller than claimed);
    * undecided: it reaches both 0 (or below) and the margin (more seeds would tell).

    For an "at most" claim: holds when the whole interval is below the margin, does not hold when
    it is all above, and is undecided when it straddles the margin."""
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        raise ValueError(f"the interval {interval} is not finite: a run gave NaN; see its runs.")
    if threshold.kind == "at most":
        if interval.high < threshold.margin:
            return "holds"
        return "does not hold" if interval.low > threshold.margin else "undecided"
    if interval.low > threshold.margin:
        return "holds"
    if interval.high < threshold.margin:
        return "does not hold"
    return "holds with a caveat" if interval.low > 0 else "undecided"
