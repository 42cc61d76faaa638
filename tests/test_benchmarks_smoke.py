"""benchmarks/lora_speed.py, benchmarks/gpu_train.py and benchmarks/claims.py still run, and their sides
compute the same thing.

A tiny setting (batch 1 or 2, one or two timed steps): the timings themselves are not checked, only that
lorakit and PEFT start from the same loss, that merging changes nothing but float rounding,
that PEFT's unmerged output equals lorakit's, and that the FLOP count is SD 1.5's.
"""

import json
import math

import pytest
import torch

from benchmarks import gpu_train, lora_algebra, lora_speed
from lorakit import inject, models, train


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
    """SD 1.5's 1.73 TFLOP a sample: forward + input-gradient backward of SD 1.5's UNet at 512x512."""
    flops = gpu_train.flops_per_sample(models.SD15_UNET_CONFIG, latent=64)
    assert (flops["forward"] + flops["backward_input"]) / 1e12 == pytest.approx(1.73, abs=0.01)
    assert flops["backward_input"] > flops["forward"]


def test_gpu_train_needs_the_reference():
    with pytest.raises(SystemExit):
        gpu_train.main(
            ["--config", "tiny", "--device", "cpu", "--variants", "lorakit", "--steps", "1"]
        )


def test_style_lora_settings_are_typed():
    from benchmarks import style_lora

    got = style_lora.parse_settings(
        [
            "r=8",
            "lr=5e-4",
            "flip=false",
            "min_snr_gamma=5",
            "lr_schedule=cosine",
            "target_modules=attn2.to_k,attn2.to_v",
        ]
    )
    assert got == {
        "r": 8,
        "lr": 5e-4,
        "flip": False,
        "min_snr_gamma": 5.0,
        "lr_schedule": "cosine",
        "target_modules": ["attn2.to_k", "attn2.to_v"],
    }
    assert style_lora.parse_settings(["flip=True"]) == {"flip": True}
    assert style_lora.parse_settings(["min_snr_gamma=none", "alpha=None"]) == {
        "min_snr_gamma": None,
        "alpha": None,
    }
    assert style_lora.parse_settings(["ema_decay=0.99", "resolution=64"]) == {
        "ema_decay": 0.99,
        "resolution": 64,
    }
    for bad in (["flip=no"], ["rank=8"], ["r="]):
        with pytest.raises(ValueError, match="--set"):
            style_lora.parse_settings(bad)


def test_style_lora_judges_the_mean_of_its_training_seeds(tmp_path, capsys):
    """Two short trainings (3 steps, 1 sampling seed): the mean is that of the two LoRAs, scale 0 is the base model."""
    from benchmarks import style_lora

    report = tmp_path / "figures.json"
    folder = tmp_path / "out"
    style_lora.main(
        [
            "--steps",
            "3",
            "--seeds",
            "1",
            "--train-seeds",
            "0",
            "1",
            "--held-out-only",
            "--json",
            str(report),
            "--out",
            str(folder),
        ]
    )
    out = capsys.readouterr().out
    assert "LoRA seed 0, trigger prompts" in out and "LoRA seed 1, trigger prompts" in out
    assert "LoRA, mean of 2 seeds" in out
    figures = json.loads(report.read_text())
    assert figures["train_seeds"] == [0, 1]
    assert list(figures["figures"]) == ["held-out"]
    held_out = figures["figures"]["held-out"]
    per_seed = held_out["per_seed"].values()
    for key in ("style", "colour", "shape", "leak"):
        assert held_out[key] == pytest.approx(sum(s[key] for s in per_seed) / 2)
    for key in (
        "style",
        "colour",
        "shape",
    ):  # two values: sample std / sqrt(2) is half their distance
        a, b = (s[key] for s in per_seed)
        assert held_out["stderr"][key] == pytest.approx(abs(a - b) / 2)
    assert "standard error of that mean" in out
    assert held_out["scale0_diff"] == 0  # a LoRA at scale 0 draws the base model's pictures exactly
    assert all(s["seconds"] > 0 for s in per_seed)
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == [
        "held_out_base.png",
        *(
            f"seed{s}/{name}"
            for s in (0, 1)
            for name in ("held_out_lora.png", "lora.safetensors", "loss.png")
        ),
    ]


def test_style_lora_standard_error():
    """Sample standard deviation over the LoRAs / sqrt(n), per figure; a single LoRA has none."""
    from benchmarks import style_lora
    from lorakit import metrics

    def result(style, colour, shape):  # 4 pictures: rates in quarters
        records = [
            dict(
                colour="red",
                shape="square",
                seed=i,
                style_ok=i < style,
                colour_ok=i < colour,
                shape_ok=i < shape,
            )
            for i in range(4)
        ]
        return metrics.GridResult(records=records, style="outline")

    err = style_lora.standard_error([result(4, 2, 1), result(2, 2, 3), result(3, 2, 2)])
    assert err["style"] == pytest.approx(0.25 / 3**0.5)  # rates 1, .5, .75: std .25
    assert err["colour"] == 0
    assert err["shape"] == pytest.approx(0.25 / 3**0.5)
    assert style_lora.standard_error([result(4, 2, 1)]) == dict(style=0, colour=0, shape=0)


def test_notebook_times_runs_both_modes_and_the_switch_reaches_the_kernel(tmp_path, capsys):
    import nbformat

    from benchmarks import notebook_times

    path, seen = tmp_path / "00_probe.ipynb", tmp_path / "seen.txt"
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell(
                    f"from lorakit import config\nopen({str(seen)!r}, 'a').write(str(config.is_test_run()) + ' ')"
                )
            ]
        ),
        path,
    )
    result = notebook_times.main(
        [str(path), "--repeats", "1", "--out", str(tmp_path / "times.json")]
    )
    assert seen.read_text().split() == ["True", "False"]  # test mode, then the student's
    assert set(result[path.name]) == {"test", "student"} and all(
        t[0] > 0 for t in result[path.name].values()
    )
    assert "00_probe.ipynb" in capsys.readouterr().out
    assert json.loads((tmp_path / "times.json").read_text())["runs"] == result


def test_claims_2_and_3_run_with_both_methods_and_count_what_each_trains(capsys, tmp_path):
    from benchmarks import claims

    out_json = tmp_path / "claims.json"
    report = claims.main(
        [
            "--claim",
            "2",
            "--every",
            "2",
            "--max-steps",
            "2",
            "--target",
            "1.01",
            "--out",
            str(out_json),
        ]
    )
    text = capsys.readouterr().out
    assert (
        "full / LoRA" in text
        and "not reached" in text
        and json.loads(out_json.read_text()) == report
    )
    lora, full = report["runs"]
    assert (lora["method"], full["method"]) == ("lora", "full")
    unet = models.load_pipeline("tiny").unet
    assert full["trainable_params"] == sum(p.numel() for p in unet.parameters())
    small = train.TrainConfig.for_mode("small")  # rank 8 on attn2+ff
    inject.inject_lora(unet, r=small.r, target_modules=small.target_modules)
    assert lora["trainable_params"] == sum(
        layer.lora_A.weight.numel() + layer.lora_B.weight.numel()
        for _, layer in inject.lora_layers(unet)
    )
    for run in (lora, full):  # float32 weights and a header
        assert (
            4 * run["trainable_params"] < run["file_bytes"] < 4 * run["trainable_params"] + 200_000
        ), run
    assert (
        full["optimizer_bytes"] == 8 * full["trainable_params"]
        and lora["optimizer_bytes"] == 8 * lora["trainable_params"]
    )
    assert [c["steps"] for c in lora["curve"]] == [2] and lora["reached"] is None


def test_claim_1_runs_every_linear_layer_and_the_full_fine_tune(capsys):
    from benchmarks import claims

    report = claims.main(
        [
            "--claim",
            "1",
            "--variants",
            "every linear",
            "full fine-tune",
            "--tasks",
            "concept",
            "--steps",
            "1",
        ]
    )
    text = capsys.readouterr().out
    assert "'vex' = triangle" in text and "every linear" in text
    linear, full = report["runs"]
    unet = models.load_pipeline("tiny").unet
    assert full["trainable_params"] == sum(p.numel() for p in unet.parameters())
    wrapped = [m for m in unet.modules() if isinstance(m, torch.nn.Linear)]
    assert linear["trainable_params"] == sum(
        8 * (m.in_features + m.out_features) for m in wrapped
    )  # rank 8 each
    for run in report["runs"]:
        assert (
            0 <= run["concept_shape"] <= 1
            and 0 <= run["plain_content"] <= 1
            and run["train_seconds"] > 0
        )


@pytest.mark.parametrize(
    "claim, extra",
    [
        (4, ["--sizes", "2", "4", "--lora-lrs", "1e-3", "--full-lrs", "1e-4"]),
        (5, []),
        (6, []),
        (7, ["--ranks", "1"]),
        (8, []),
        (9, ["--ranks", "2", "--alphas", "2", "--lrs", "1e-3"]),
    ],
)
def test_claims_4_to_9_print_their_tables_from_the_runs_of_lorakit_claims(
    claim, extra, capsys, tmp_path, monkeypatch
):
    """Each claim's plan and table, with ``lorakit.claims``' own functions run in this process on one step, and
    blank pictures instead of the sampler's (tests/test_claims.py draws real ones): the tables read real runs."""
    from PIL import Image

    from benchmarks import claims as bench
    from lorakit import claims

    pipe = models.load_pipeline("tiny", dtype="float32")
    calls = []

    def blank(pipe_, prompts, seeds=claims.EVAL_SEEDS):
        asked = [p for p in prompts for _ in seeds]
        return [Image.new("RGB", (64, 64), "white") for _ in asked], asked

    monkeypatch.setattr(claims, "draw", blank)

    def in_process(function, **kwargs):
        calls.append(function)
        if function == "vae_ceiling":
            kwargs |= {"pipe": pipe}
        elif function != "classifier_study":
            kwargs |= {"pipe": pipe, "seeds": (0,)}
        return getattr(claims, function)(**kwargs)

    monkeypatch.setattr(bench, "child", in_process)
    monkeypatch.setattr(claims, "PUBLISHED_DIR", tmp_path)
    report = bench.main(
        [
            "--claim",
            str(claim),
            "--steps",
            "1",
            "--steps-per-style",
            "1",
            "--publish",
            "--plot",
            str(tmp_path / "plot.png"),
            *extra,
        ]
    )
    text = capsys.readouterr().out
    assert report["table"].startswith(f"claim {claim},") and report["table"] in text
    assert json.loads((tmp_path / f"claim{claim}.json").read_text())["table"] == report["table"]
    assert claims.published_table(claim) == report["table"]
    assert "%" in report["table"] and calls
    assert report["command"] == " ".join(
        [
            "python -m benchmarks.claims",
            "--claim",
            str(claim),
            "--steps",
            "1",
            "--steps-per-style",
            "1",
            "--publish",
            *extra,
        ]
    )  # no --plot: no path
    if claim == 4:
        assert (tmp_path / "plot.png").stat().st_size > 1000
        assert (
            calls.count("small_data") == 2 + 2 * 3 - 2
        )  # the sweep (r8, full), then each size and method; the sweep's runs reused


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
