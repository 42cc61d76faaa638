"""benchmarks/step_flops.py: the arithmetic table is claims.step_flops', and the three passes are
timed on the same batch, each kind in turn."""

import pytest

from benchmarks import step_flops
from lorakit import claims, models


def test_the_table_counts_with_claims_and_times_the_three_passes(capsys, monkeypatch):
    monkeypatch.setenv("LORAKIT_MODE", "small")
    report = step_flops.main(["--repeats", "2", "--profile"])
    out = capsys.readouterr().out
    tiny = claims.step_flops(models.TINY_UNET_CONFIG, batch=8)
    assert report["flops"]["tiny SD, 64 px, a batch of 8"] == tiny
    assert set(report["median_seconds"]) == {"frozen", "LoRA", "full"}
    assert all(s > 0 for s in report["median_seconds"].values())
    ratio = report["median_seconds"]["full"] / report["median_seconds"]["LoRA"]
    assert f"full / LoRA {ratio:.2f}x" in out
    assert f"{tiny['full_over_lora']:.2f}x" in out and "1.39x" in out  # SD 1.5's cap
    assert report["flops"]["SD 1.5, 512 px, a sample"]["full_over_lora"] == pytest.approx(
        1.394, abs=1e-3
    )
    spent = report["profile_ms"]  # by operator, a LoRA pass and a full one
    assert set(spent) == {"LoRA", "full"}
    assert all(v >= 0 for table in spent.values() for v in table.values())
    assert any("mm" in op for op in spent["LoRA"]) and "all operators" in out
