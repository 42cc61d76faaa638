"""The ``lorakit`` command, run in-process through ``cli.main`` (and as ``python -m lorakit.cli``, and
under ``accelerate launch`` with two CPU processes).

References: files the commands write are read back with ``lorakit.formats`` and compared with the
weights the test made; ``sample --scale 0`` must draw exactly what the base model draws.
"""

import argparse
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from lorakit import cli, config, formats, inject, train

R, ALPHA = 4, 2.0  # alpha != r, so a lost alpha shows
OUTLINE = str(config.DATA_DIR / "styles" / "outline")


def run(capsys, *argv):
    """``lorakit argv`` in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    """A kohya file of a random rank-4 LoRA on the tiny SD's UNet, and the weights in it."""
    unet = UNet2DConditionModel.from_pretrained(config.TINY_SD_DIR / "unet")
    inject.inject_lora(unet, r=R, alpha=ALPHA)
    torch.manual_seed(0)
    with torch.no_grad():
        for _, layer in inject.lora_layers(unet):
            layer.lora_B.weight.normal_(std=0.1)
    path = formats.save_lora(
        unet, tmp_path_factory.mktemp("lora") / "style.safetensors", format="kohya"
    )
    return path, formats.from_model(unet)


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["convert"], ["info"]])
def test_help(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0 and out.startswith("usage: lorakit")
    wanted = {
        "train": ["--data", "--rank", "--format", "--resume"],
        "sample": ["--lora", "--seeds", "--scale"],
        "convert": ["--to", "--out"],
        "info": ["file"],
    }.get(command[0] if command else "", ["train", "info"])
    assert all(word in out for word in wanted), out


def test_info_describes_the_file(capsys, lora_file):
    path, weights = lora_file
    code, out, err = run(capsys, "info", path)
    assert code == 0, err
    assert "format: kohya" in out and f"r: {R}  alpha: {ALPHA:g}" in out
    assert f"modules: {len(weights.modules)} " in out and "ss_network_dim: 4" in out
    assert f"parameters: {sum(w.numel() for w in weights.state_dict().values()):,}" in out


@pytest.mark.parametrize(
    "to, name",
    [("diffusers", "lora.safetensors"), ("peft", "adapter"), ("kohya", "again.safetensors")],
)
def test_convert_round_trip(capsys, tmp_path, lora_file, to, name):
    path, weights = lora_file
    code, _, err = run(capsys, "convert", path, "--to", to, "--out", tmp_path / name)
    assert code == 0, err
    code, out, err = run(capsys, "info", tmp_path / name)
    assert code == 0 and f"format: {to}" in out, err
    back = formats.load_lora(tmp_path / name)
    assert (back.r, back.alpha, sorted(back.modules)) == (R, ALPHA, sorted(weights.modules))
    for key, value in weights.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_sample_writes_a_grid_and_scale_0_is_the_base_model(capsys, tmp_path, lora_file):
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
        code, out, err = run(capsys, "sample", *common, *extra, "--out", tmp_path / f"{name}.png")
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


def test_train_end_to_end(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(
        capsys,
        "train",
        "--data",
        OUTLINE,
        "--out",
        out,
        "--steps",
        3,
        "--batch-size",
        2,
        "--rank",
        2,
        "--alpha",
        1,
        "--format",
        "diffusers",
        "--sample-steps",
        2,
        "--quiet",
        "--flip",
        "--caption-dropout",
        0.25,
        "--lora-dropout",
        0.2,
        "--targets",
        "attn2.to_k,attn2.to_v",
    )
    assert code == 0, err
    weights = formats.load_lora(out / "lora.safetensors")
    assert (weights.format, weights.r, weights.alpha) == ("diffusers", 2, 1.0)
    assert len(weights.modules) == 32 and all(
        m.endswith(("attn2.to_k", "attn2.to_v")) for m in weights.modules
    )
    assert max(b.abs().max().item() for b in weights.B.values()) > 0  # B starts at zero: it trained
    with Image.open(out / "loss.png") as loss, Image.open(out / cli.GRID_FILE) as grid:
        assert loss.format == grid.format == "PNG"
        assert grid.size == (4 * 192, 2 * (192 + 12))  # 4 captions of the data x (before, after)
    saved = json.loads((out / cli.CONFIG_FILE).read_text())
    assert (saved["model"], saved["steps"], saved["batch_size"], saved["resolution"]) == (
        "tiny",
        3,
        2,
        64,
    )
    assert (saved["flip"], saved["caption_dropout"], saved["lora_dropout"]) == (True, 0.25, 0.2)
    assert saved["target_modules"] == ["attn2.to_k", "attn2.to_v"]
    assert str(out / "lora.safetensors") in stdout
    code, _, err = run(
        capsys,
        "train",
        "--data",
        OUTLINE,
        "--out",
        out,
        "--steps",
        4,
        "--batch-size",
        2,
        "--rank",
        2,
        "--alpha",
        1,
        "--format",
        "diffusers",
        "--sample-steps",
        1,
        "--quiet",
        "--resume",
        "--flip",
        "--caption-dropout",
        0.25,
        "--lora-dropout",
        0.2,
        "--targets",
        "attn2.to_k,attn2.to_v",
    )
    assert code == 0, err  # one more step from the checkpoint of step 3
    resumed = formats.load_lora(out / "lora.safetensors")
    assert any(not torch.equal(resumed.B[m], weights.B[m]) for m in weights.modules)


def test_errors_exit_2_with_one_line_and_no_traceback(capsys, tmp_path):
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
        code, out, err = run(capsys, *argv)
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


def free_port() -> int:
    with socket.socket() as probe:  # another test run may hold accelerate's default 29500
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_the_same_lora_as_one(capsys, tmp_path):
    """``accelerate launch`` with 2 CPU processes (gloo) against 1 process: same losses, same LoRA, same resume."""

    def train_args(
        out, steps, *extra
    ):  # batch 3: an uneven split (1 + 2 rows), so the weighting shows
        # No caption dropout here: with the preset's 0.3 the losses and A still agreed, but delta W of one module
        # differed by 2e-4 of its norm after 3 steps (1e-6 in one entry of B), which we read as the two
        # summation orders' rounding passed through Adam; the tolerances below are for the plain loss.
        # No LoRA dropout either: each process draws the masks of its own rows, so they differ from one process's.
        return [
            "train",
            "--data",
            OUTLINE,
            "--out",
            out,
            "--steps",
            steps,
            "--batch-size",
            3,
            "--rank",
            2,
            "--sample-steps",
            1,
            "--quiet",
            "--caption-dropout",
            0,
            "--lora-dropout",
            0,
            *extra,
        ]

    two, one = tmp_path / "two", tmp_path / "one"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env |= {
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }  # no GPU: gloo on the CPU; no accelerate config of the user
    # --multi_gpu starts the processes (torchrun); accelerate's --cpu alone would start only one.
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "lorakit.cli",
    ]
    done = subprocess.run(
        launch + [str(a) for a in train_args(two, 3)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "2 processes" in done.stderr and done.stdout.count("done in") == 1, (
        done.stdout
    )  # the main process reports
    assert json.loads((two / cli.CONFIG_FILE).read_text())["num_processes"] == 2
    assert not list(two.glob(".*.tmp")), "a temporary file was left behind"
    code, _, err = run(capsys, *train_args(one, 3))
    assert code == 0, err

    def assert_same(steps):
        histories = [
            torch.load(d / train.CHECKPOINT, weights_only=True)["history"] for d in (one, two)
        ]
        assert len(histories[0]) == steps
        torch.testing.assert_close(
            histories[1], histories[0], rtol=1e-5, atol=0
        )  # the loss of the whole batch
        alone, shared = (formats.load_lora(d / "lora.safetensors") for d in (one, two))
        for m in alone.modules:
            assert alone.B[m].abs().max() > 0, f"{m}: B is still zero, nothing was trained"
            torch.testing.assert_close(shared.A[m], alone.A[m], rtol=1e-5, atol=1e-7)
            # Adam divides by sqrt(v): an entry whose gradient is zero up to rounding may move by up to
            # lr either way, so B is compared with a tolerance of a thousandth of its range.
            torch.testing.assert_close(
                shared.B[m], alone.B[m], rtol=1e-5, atol=1e-3 * alone.B[m].abs().max().item()
            )
            want = alone.B[m] @ alone.A[m]  # (out, in) delta W
            assert (shared.B[m] @ shared.A[m] - want).norm() <= 1e-4 * want.norm(), m

    assert_same(3)
    for out in (one, two):  # one more step, in one process, from each checkpoint
        code, _, err = run(capsys, *train_args(out, 4, "--resume"))
        assert code == 0, err
    assert_same(4)


def test_targets_option():
    assert cli._targets("attn2+ff") == "attn2+ff" and cli._targets("attn") == "attn"
    assert cli._targets("attn2.to_k, attn2.to_v") == ["attn2.to_k", "attn2.to_v"]
    with pytest.raises(argparse.ArgumentTypeError, match="preset"):
        cli._targets(" , ")
