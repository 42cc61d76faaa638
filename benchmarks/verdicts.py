"""The verdicts of the controlled studies: each comparison's threshold, set before its runs, and
the paired comparison that reads a verdict off its interval (``lorakit.claims.intervals``).

Not a lesson's concept: what ``benchmarks.controls`` and ``benchmarks.curve_studies`` share. A
comparison pairs two methods' figures by training seed, prints one row (mean difference, 95 % t
and bootstrap intervals, seeds, verdict) and returns it as JSON. ``THRESHOLDS`` names every margin:
a commit that changes one comes before the runs it judges. Left out: the runs themselves.
"""

from __future__ import annotations

from lorakit.claims import intervals

# set before the runs: the difference (positive: the way the comparison is named) that matters
THRESHOLDS = {
    "rank": intervals.Threshold(0.10, "style rate, r high - r low, at the same convention"),
    "truncation-rank": intervals.Threshold(
        0.10, "crosses, the linear layers' whole update - its rank-8 truncation", "at most"
    ),
    "truncation-conv": intervals.Threshold(
        0.10, "crosses, linear + convolutions - linear alone (both whole updates)"
    ),
    "truncation-lora": intervals.Threshold(
        0.10, "crosses, truncated rank 8 - trained LoRA rank 8 (every linear layer)"
    ),
    "scales": intervals.Threshold(
        0.15, "mean style rate, each LoRA alone at 1 - both together", "at most"
    ),
}
THRESHOLDS |= {
    "lrgrid": intervals.Threshold(
        0.10, "style rate, r 16 - r 1, each at its best learning rate (alpha = r)"
    ),
    "complex": intervals.Threshold(
        0.10, "the drop in mean style rate from 1 style to 3, LoRA's - the full fine-tune's"
    ),
    "complex-shortfall": intervals.Threshold(
        0.10, "mean style rate on 3 styles, full fine-tune - LoRA"
    ),
}
THRESHOLDS |= {
    "placement-route": intervals.Threshold(
        0.10, "'vex' minus control-word triangles, attn2 (r 8) - attn1 (r 8)"
    ),
    "placement-enough": intervals.Threshold(
        0.10,
        "'vex' minus control-word triangles, ff (r 4, as many numbers) - attn2 (r 8)",
        "at most",
    ),
    "caption-dropout": intervals.Threshold(
        0.10, "plain prompts right, attn2 at caption dropout 0 - at the preset's 0.3"
    ),
}
THRESHOLDS |= {
    "scales-interference": intervals.Threshold(
        0.15, "mean style rate, each LoRA alone at scale s - both together at s", "at most"
    ),
    "speed": intervals.Threshold(
        20,
        "steps to a 75 % style rate (content 50 %), full fine-tune - LoRA, each at its own "
        "learning rate",
    ),
    "overfit-memorised": intervals.Threshold(
        0.05, "memorised (IoU) after 200 steps on 2 pictures, full fine-tune - LoRA r 8"
    ),
    "overfit-forgetting": intervals.Threshold(
        0.10, "plain prompts right after 200 steps on 2 pictures, LoRA r 8 - full fine-tune"
    ),
    "overfit-dropout": intervals.Threshold(
        0.05, "memorised (IoU) on 2 pictures, LoRA r 8 without dropout - with the preset's 0.1"
    ),
}


def compare(name: str, a: dict[int, float], b: dict[int, float], threshold: str) -> dict:
    """One paired comparison, printed as a row: mean difference, t and bootstrap intervals,
    verdict."""
    diffs = intervals.paired_differences(a, b)
    t = intervals.t_interval(diffs)
    boot = intervals.bootstrap_interval(diffs)
    found = intervals.verdict(t, THRESHOLDS[threshold])
    print(
        f"  {name:<44}{t.mean:>+8.3f}  [{t.low:+.3f}, {t.high:+.3f}]  "
        f"[{boot.low:+.3f}, {boot.high:+.3f}]  n {t.n:<3}{found}"
    )
    return {
        "comparison": name,
        "differences": diffs,
        "t": [t.mean, t.low, t.high],
        "bootstrap": [boot.low, boot.high],
        "threshold": threshold,
        "margin": THRESHOLDS[threshold].margin,
        "verdict": found,
    }


def header(what: str) -> None:
    print(f"\n{what}")
    print(
        f"  {'comparison (paired by training seed)':<44}{'mean':>8}  {'95 % t interval':<18}  "
        f"{'bootstrap':<18}  {'n':<5}verdict"
    )


def by_seed(runs: list[dict], key: str, **match) -> dict[int, float]:
    return {r["seed"]: r[key] for r in runs if all(r.get(k) == v for k, v in match.items())}
