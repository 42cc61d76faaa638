"""The ``lorakit`` commands run in-process through the ``lorakit_cli`` fixture (and as ``python -m
lorakit.cli``): help, info, convert, sample, and the one-line errors.

References: files the commands write are read back with ``lorakit.formats`` and compared with the
weights the test made; ``sample --scale 0`` must draw exactly what the base model draws.
"""

import argparse
import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit import cli, config, formats, inject
from lorakit.cli import arguments

R, ALPHA = 4, 2.0  # alpha != r, so a lost alpha shows
OUTLINE = str(config.DATA_DIR / "styles" / "outline")


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, shared_pipe, randomize_lora):
    """A kohya file of a random rank-4 LoRA on the tiny SD's UNet, and the weights in it."""
    unet = copy.deepcopy(shared_pipe.unet)
    inject.inject_lora(unet, r=R, alpha=ALPHA)
    randomize_lora(unet, std=0.1, seed=0)
    path = formats.save_lora(
        unet, tmp_path_factory.mktemp("lora") / "style.safetensors", format="kohya"
    )
    return path, formats.from_model(unet)


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["convert"], ["info"]])
def test_help(lorakit_cli, command):
    code, out, _ = lorakit_cli(*command, "--help")
    assert code == 0 and out.startswith("usage: lorakit")
    wanted = {
        "train": ["--data", "--rank", "--format", "--resume"],
        "sample": ["--lora", "--seeds", "--scale"],
        "convert": ["--to", "--out"],
        "info": ["file"],
    }.get(command[0] if command else "", ["train", "info"])
    assert all(word in out for word in wanted), out


def test_info_describes_the_file(lorakit_cli, lora_file):
    path, weights = lora_file
    code, out, err = lorakit_cli("info", path)
    assert code == 0, err
    assert "format: kohya" in out and f"r: {R}  alpha: {ALPHA:g}" in out
    assert f"modules: {len(weights.modules)} " in out and "ss_network_dim: 4" in out
    assert f"parameters: {sum(w.numel() for w in weights.state_dict().values()):,}" in out


@pytest.mark.parametrize(
    "to, name",
    [("diffusers", "lora.safetensors"), ("peft", "adapter"), ("kohya", "again.safetensors")],
)
def test_convert_round_trip(lorakit_cli, tmp_path, lora_file, to, name):
    path, weights = lora_file
    code, _, err = lorakit_cli("convert", path, "--to", to, "--out", tmp_path / name)
    assert code == 0, err
    code, out, err = lorakit_cli("info", tmp_path / name)
    assert code == 0 and f"format: {to}" in out, err
    back = formats.load_lora(tmp_path / name)
    assert (back.r, back.alpha, sorted(back.modules)) == (R, ALPHA, sorted(weights.modules))
    for key, value in weights.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_sample_writes_a_grid_and_scale_0_is_the_base_model(lorakit_cli, tmp_path, lora_file):
    common = [
        "--prompt",
        "a red circle",
        "--prompt",
        "a blue square",
        "--seeds",
        0,
        1,
        "--steps",
        2,
    ]
    grids = {}
    for name, extra in (
        ("base", []),
        ("off", ["--lora", lora_file[0], "--scale", 0]),
        ("on", ["--lora", lora_file[0]]),
    ):
        code, out, err = lorakit_cli("sample", *common, *extra, "--out", tmp_path / f"{name}.png")
        assert code == 0, err
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.format == "PNG" and image.size == (
                2 * 192,
                2 * (192 + 12),
            )  # 2 seeds x 2 prompts
            grids[name] = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.array_equal(grids["base"], grids["off"])
    assert (
        np.abs(grids["base"] - grids["on"]).max() > 20
    )  # a random LoRA at std 0.1 changes the pictures


def test_errors_exit_2_with_one_line_and_no_traceback(lorakit_cli, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a LoRA")
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04")
    cases = [
        (["train", "--data", tmp_path / "missing", "--out", tmp_path / "run"], "does not exist"),
        (["train", "--data", OUTLINE, "--out", tmp_path / "run", "--resume"], "no checkpoint.pt"),
        (
            [
                "train",
                "--data",
                OUTLINE,
                "--out",
                tmp_path / "run",
                "--targets",
                "attn9.to_q",
                "--steps",
                1,
            ],
            "'attn9.to_q' matches no module",
        ),
        (["info", bad], "not a valid safetensors file"),
        (["info", tmp_path / "model.ckpt"], "pickle"),
        (
            ["convert", tmp_path / "missing.safetensors", "--to", "peft", "--out", tmp_path / "p"],
            "no LoRA file",
        ),
    ]
    for argv, words in cases:
        code, out, err = lorakit_cli(*argv)
        assert code == 2 and err.startswith("lorakit: error: ") and words in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
    with pytest.raises(ValueError, match="not a valid safetensors"):
        cli.main(["info", str(bad), "--debug"])


def test_python_m_lorakit_cli(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "lorakit.cli", "--help"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "train" in ok.stdout and "convert" in ok.stdout, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "lorakit.cli", "info", str(tmp_path / "nothing.safetensors")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "lorakit: error: no LoRA file" in bad.stderr, bad.stderr


def test_targets_option():
    assert (
        arguments.parse_targets("attn2+ff") == "attn2+ff"
        and arguments.parse_targets("attn") == "attn"
    )
    assert arguments.parse_targets("attn2.to_k, attn2.to_v") == ["attn2.to_k", "attn2.to_v"]
    with pytest.raises(argparse.ArgumentTypeError, match="preset"):
        arguments.parse_targets(" , ")
