"""benchmarks/lora_speed.py still runs, and its sides compute the same thing: lorakit and PEFT
start from the same loss, merging changes nothing but float rounding, PEFT's unmerged output
equals lorakit's. A tiny setting (batch 1, one timed step): the timings are not checked."""

import math

from benchmarks import lora_speed


def test_lora_speed_runs_and_compares_like_with_like(capsys):
    result = lora_speed.main(
        ["--steps", "1", "--repeats", "1", "--warmup", "0", "--batch", "1", "--infer-batch", "1"]
    )
    out = capsys.readouterr().out
    assert "1. Training step" in out and "2. Inference" in out and "load average" in out
    assert set(result["train_ms"]) == {"lorakit", "PEFT"}
    assert set(result["infer_ms"]) == {
        "no LoRA",
        "lorakit merged",
        "lorakit unmerged",
        "PEFT unmerged",
    }
    assert all(
        math.isfinite(v) and v > 0
        for v in [*result["train_ms"].values(), *result["infer_ms"].values()]
    )
    assert result["loss_diff"] < 1e-5  # same LoRA weights, same batch: same loss
    assert result["merge_diff"] < 1e-4  # merged = unmerged up to float32 rounding
    assert result["peft_diff"] < 1e-5  # PEFT's LoRA computes what lorakit's does
    # Both keep activations for backward; the LoRA bookkeeping is the same size in both.
    assert min(result["saved_bytes"].values()) > 0
