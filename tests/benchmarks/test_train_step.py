"""benchmarks/train_step.py runs and times its three parts; the timings are not checked."""

import math

from benchmarks import train_step


def test_train_step_prints_the_three_and_the_overhead(capsys):
    medians = train_step.main(["--steps", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert set(medians) == {"step", "bare", "bare, dropout off"}
    assert all(math.isfinite(ms) and ms > 0 for ms in medians.values())
    assert "loop overhead over bare" in out and "load average" in out
