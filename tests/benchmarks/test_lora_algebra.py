"""benchmarks/lora_algebra.py runs on a few layers, and both sides of each row agree."""

from benchmarks import lora_algebra


def test_lora_algebra_runs_and_both_sides_agree(capsys):
    rows = lora_algebra.main(["--rank", "8", "--new-rank", "2", "--repeats", "1", "--layers", "3"])
    assert rows["resize"]["check"] <= 1e-4  # the factored SVD and kohya's dense one truncate alike
    assert (
        0 < rows["extract"]["check"] <= 1
        and rows["resize"]["ours"] > 0
        and rows["extract"]["peer"] > 0
    )
    out = capsys.readouterr().out
    assert "resize" in out and "extract" in out and "3 of kohya's 192 default modules" in out
