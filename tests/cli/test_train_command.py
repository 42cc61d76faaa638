"""``lorakit train`` end to end in-process (and resumed), and under ``accelerate launch`` with two
CPU processes against one: the same losses, the same LoRA, the same resume.

References: the LoRA file is read back with ``lorakit.formats``; the two-process run is compared
with a one-process run of the same settings.
"""

import json
import os
import socket
import subprocess
import sys

import torch
from PIL import Image

from lorakit import cli, config, formats, train

OUTLINE = str(config.DATA_DIR / "styles" / "outline")


def train_argv(out, steps, *options):
    """``lorakit train`` on the outline style set into ``out``: rank 2, no progress bar."""
    fixed = ["--data", OUTLINE, "--out", out, "--steps", steps, "--rank", 2, "--quiet"]
    return ["train", *fixed, *options]


# diffusers' format, alpha != r, every option the test reads back from train_config.json
SETTINGS = ["--batch-size", 2, "--alpha", 1, "--format", "diffusers", "--flip"]
SETTINGS += ["--caption-dropout", 0.25, "--lora-dropout", 0.2, "--targets", "attn2.to_k,attn2.to_v"]


def test_train_end_to_end(lorakit_cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = lorakit_cli(*train_argv(out, 3, *SETTINGS, "--sample-steps", 2))
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
    code, _, err = lorakit_cli(*train_argv(out, 4, *SETTINGS, "--sample-steps", 1, "--resume"))
    assert code == 0, err  # one more step from the checkpoint of step 3
    resumed = formats.load_lora(out / "lora.safetensors")
    assert any(not torch.equal(resumed.B[m], weights.B[m]) for m in weights.modules)


def free_port() -> int:
    with socket.socket() as probe:  # another test run may hold accelerate's default 29500
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_the_same_lora_as_one(lorakit_cli, tmp_path):
    """``accelerate launch`` with 2 CPU processes (gloo) against 1 process: same losses, same LoRA,
    same resume."""

    # Batch 3: an uneven split (1 + 2 rows), so the weighting shows. No caption dropout: with the
    # preset's 0.3 the losses and A still agreed, but delta W of one module differed by 2e-4 of its
    # norm after 3 steps (1e-6 in one entry of B), which we read as the two summation orders'
    # rounding passed through Adam; the tolerances below are for the plain loss. No LoRA dropout
    # either: each process draws the masks of its own rows, so they differ from one process's.
    plain = ["--batch-size", 3, "--sample-steps", 1, "--caption-dropout", 0, "--lora-dropout", 0]

    def train_args(out, steps, *extra):
        return train_argv(out, steps, *plain, *extra)

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
    code, _, err = lorakit_cli(*train_args(one, 3))
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
            # Adam divides by sqrt(v): an entry whose gradient is zero up to rounding may move by up
            # to lr either way, so B is compared with a tolerance of a thousandth of its range.
            torch.testing.assert_close(
                shared.B[m], alone.B[m], rtol=1e-5, atol=1e-3 * alone.B[m].abs().max().item()
            )
            want = alone.B[m] @ alone.A[m]  # (out, in) delta W
            assert (shared.B[m] @ shared.A[m] - want).norm() <= 1e-4 * want.norm(), m

    assert_same(3)
    for out in (one, two):  # one more step, in one process, from each checkpoint
        code, _, err = lorakit_cli(*train_args(out, 4, "--resume"))
        assert code == 0, err
    assert_same(4)


def test_unset_steps_and_lr_take_the_quick_run_on_the_tiny_sd_alone(tmp_path):
    """The tiny SD: 200 steps at lr 1.5e-3 without LoRA dropout (cli.QUICK) over the small preset;
    given options win; any other model keeps its preset's (SD 1.5's 1,500 steps at 1e-4)."""
    from lorakit.cli import train as train_command

    def settings(*options, model="tiny"):
        args = cli.build_parser().parse_args(
            ["train", "--data", OUTLINE, "--out", str(tmp_path), "--model", model, *options]
        )
        cfg = train_command.run_config(args, tmp_path, torch.device("cpu"))
        return cfg.steps, cfg.lr, cfg.lora_dropout, cfg.r, cfg.checkpoint_every

    small = train.TrainConfig.for_mode("small")
    assert settings() == (200, 1.5e-3, 0.0, small.r, 50)
    assert (small.steps, small.lr, small.lora_dropout) == (300, 1e-3, 0.1)  # the preset unchanged
    assert settings("--steps", "40") == (40, 1.5e-3, 0.0, small.r, 10)
    assert settings("--lr", "1e-3", "--rank", "4", "--lora-dropout", "0.1") == (
        200,
        1e-3,
        0.1,
        4,
        50,
    )
    full = train.TrainConfig.for_mode("full")
    sd15 = settings(model="runwayml/stable-diffusion-v1-5")
    assert sd15[:4] == (full.steps, full.lr, full.lora_dropout, full.r)
