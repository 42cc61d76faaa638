"""benchmarks/gpu_train.py runs on the CPU with an SD-shaped UNet: lorakit and PEFT start from the
same loss, and the FLOP count is SD 1.5's."""

import pytest

from benchmarks import gpu_train
from lorakit import inject, models


def test_gpu_train_runs_on_the_cpu_with_an_sd_shaped_unet(capsys, tmp_path):
    out_json = tmp_path / "r.json"
    summary = gpu_train.main(
        [
            "--config",
            "tiny",
            "--device",
            "cpu",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--json",
            str(out_json),
        ]
    )
    out = capsys.readouterr().out
    results = summary["results"]
    assert set(results) == {"lorakit", "peft", "full"} and out_json.exists()
    assert "MFU" in out and "vs peft" in out
    # Same random UNet and batch, LoRA B = 0: lorakit and PEFT start from the same loss.
    assert results["lorakit"]["losses"][0] == pytest.approx(results["peft"]["losses"][0], rel=1e-6)
    assert (
        results["lorakit"]["trainable"]
        == results["peft"]["trainable"]
        == inject.lora_parameter_count(models.build_tiny_sd()["unet"], r=4)
    )
    assert results["full"]["trainable"] > 100 * results["lorakit"]["trainable"]
    assert results["peft"]["speed_vs_peft"] == 1.0
    assert all(
        r["samples_per_s"] > 0 and 0 < r["mfu"] and r["peak_bytes"] > 0 for r in results.values()
    )


def test_flops_per_sample_is_sd15s_1_73_tflop():
    """SD 1.5's 1.73 TFLOP a sample: forward + input-gradient backward of its UNet at 512x512."""
    flops = gpu_train.flops_per_sample(models.SD15_UNET_CONFIG, latent=64)
    assert (flops["forward"] + flops["backward_input"]) / 1e12 == pytest.approx(1.73, abs=0.01)
    assert flops["backward_input"] > flops["forward"]


def test_gpu_train_needs_the_reference():
    with pytest.raises(SystemExit):
        gpu_train.main(
            ["--config", "tiny", "--device", "cpu", "--variants", "lorakit", "--steps", "1"]
        )
