"""benchmarks/claims.py: each claim's plan runs and prints its table from lorakit.claims' runs."""

import json

import pytest
import torch
from PIL import Image

from benchmarks import claim_runs
from benchmarks import claims as bench
from lorakit import claims, inject, train
from lorakit.claims import figures, judging


def test_claims_2_and_3_run_with_both_methods_and_count_what_each_trains(capsys, tmp_path, pipe):
    out_json = tmp_path / "claims.json"
    report = bench.main(
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
    unet = pipe.unet
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


def test_claim_1_runs_every_linear_layer_and_the_full_fine_tune(capsys, shared_pipe):
    report = bench.main(
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
    unet = shared_pipe.unet
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
    claim, extra, capsys, tmp_path, monkeypatch, pipe
):
    """Each claim's plan and table, with ``lorakit.claims``' own functions run in this process on
    one step, and blank pictures instead of the sampler's (tests/claims/ draws real ones): the
    tables read real runs."""
    calls = []

    def blank(pipe_, prompts, seeds=claims.EVAL_SEEDS):
        asked = [p for p in prompts for _ in seeds]
        return [Image.new("RGB", (64, 64), "white") for _ in asked], asked

    monkeypatch.setattr(judging, "draw", blank)

    def in_process(function, **kwargs):
        calls.append(function)
        if function == "vae_ceiling":
            kwargs |= {"pipe": pipe}
        elif function != "classifier_study":
            kwargs |= {"pipe": pipe, "seeds": (0,)}
        return getattr(claims, function)(**kwargs)

    monkeypatch.setattr(claim_runs, "child", in_process)
    monkeypatch.setattr(figures, "PUBLISHED_DIR", tmp_path)
    argv = ["--claim", str(claim), "--steps", "1", "--steps-per-style", "1", "--publish"]
    report = bench.main([*argv, "--plot", str(tmp_path / "plot.png"), *extra])
    text = capsys.readouterr().out
    assert report["table"].startswith(f"claim {claim},") and report["table"] in text
    assert json.loads((tmp_path / f"claim{claim}.json").read_text())["table"] == report["table"]
    assert claims.published_table(claim) == report["table"]
    assert "%" in report["table"] and calls
    # no --plot: no path
    assert report["command"] == " ".join(["python -m benchmarks.claims", *argv, *extra])
    if claim == 4:
        assert (tmp_path / "plot.png").stat().st_size > 1000
        assert (
            calls.count("small_data") == 2 + 2 * 3 - 2
        )  # the sweep (r8, full), then each size and method; the sweep's runs reused
