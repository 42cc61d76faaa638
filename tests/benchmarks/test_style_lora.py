"""benchmarks/style_lora.py: its --set settings typed, its figures the mean over training seeds."""

import json

import pytest

from benchmarks import style_lora
from lorakit import metrics


def test_style_lora_settings_are_typed():
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
    """Two short trainings (3 steps, 1 sampling seed): the mean is that of the two LoRAs, scale 0
    is the base model."""
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
