"""Bad arguments and a LoRA that breaks the pictures: one line from ``lorakit``, exit code 2,
refused before anything is loaded or written."""

import copy

import pytest

from lorakit import cli, formats, inject


@pytest.fixture
def huge_lora(tmp_path, shared_pipe, randomize_lora):
    """A kohya file of a LoRA whose B is 1e18 times a trained one's: finite numbers, but the
    pictures it draws overflow."""
    unet = copy.deepcopy(shared_pipe.unet)
    inject.inject_lora(unet, r=4, alpha=2.0)
    randomize_lora(unet, std=0.05 * 1e18, seed=0)
    return formats.save_lora(unet, tmp_path / "huge.safetensors")


# --- sampling --------------------------------------------------------------------------------


def test_sample_refuses_pictures_that_come_out_nan(huge_lora, tmp_path, lorakit_cli):
    out = tmp_path / "grid.png"
    code, _, err = lorakit_cli(
        "sample",
        "--lora",
        huge_lora,
        "--prompt",
        "a red circle",
        "--seeds",
        0,
        "--steps",
        2,
        "--out",
        out,
    )
    assert code == 2 and "NaN or infinite" in err and err.count("\n") == 1, err
    assert not out.exists()


# --- arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--rank", 0], "--rank: 0 is not a positive integer"),
        (["train", "--alpha", "nan"], "--alpha: nan is not a positive finite number"),
        (["train", "--steps", -1], "--steps: -1 is not a positive integer"),
        (["train", "--lr", 0], "--lr: 0 is not a positive finite number"),
        (["train", "--resolution", 0], "--resolution: 0 is not a positive multiple of 64"),
        (["train", "--resolution", 7], "--resolution: 7 is not a positive multiple of 64"),
        (["train", "--seed", 2**64], f"--seed: {2**64} is not a seed"),
        (["train", "--caption-dropout", 1.5], "--caption-dropout: 1.5 is not a fraction"),
        (["sample", "--steps", -1], "--steps: -1 is not a positive integer"),
        (["sample", "--scale", "nan"], "--scale: nan is not a finite number"),
        (["sample", "--seeds", 2**64], "--seeds"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_loaded_or_written(
    lorakit_cli, tmp_path, monkeypatch, argv, words
):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded for a refused command")

    monkeypatch.setattr(cli.pipeline, "load_model", no_loading)
    required = {
        "train": ["--data", tmp_path / "data", "--out", tmp_path / "run"],
        "sample": ["--prompt", "a red circle", "--out", tmp_path / "g.png"],
    }
    code, out, err = lorakit_cli(*argv[:1], *required[argv[0]], *argv[1:])
    assert code == 2 and words in err and err.count("\n") == 1 and "usage" not in err, err
    assert list(tmp_path.iterdir()) == []
