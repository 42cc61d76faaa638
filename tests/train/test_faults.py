"""Faults: a killed run resumes to the same bytes, a full disk loses nothing, two runs never share
a folder, a resume with other settings is refused by name.

The kill test runs the real command in a subprocess and kills it with SIGKILL, at a checkpoint
boundary and in the middle of a checkpoint write; the full disk is a write that stops with
ENOSPC part-way, as a real one does.
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from lorakit import config, files, formats, train

OUTLINE = str(config.DATA_DIR / "styles" / "outline")
TRAIN = [
    "train",
    "--data",
    OUTLINE,
    "--steps",
    "6",
    "--batch-size",
    "2",
    "--rank",
    "2",
    "--checkpoint-every",
    "2",
    "--sample-steps",
    "1",
    "--prompts",
    "a red circle",
    "--quiet",
]


def lorakit(out, *extra, kill_after=None):
    """``lorakit train`` in a subprocess. ``kill_after=("boundary", n)``: SIGKILL right after the
    n-th checkpoint is written; ``("inside", n)``: SIGKILL half-way through writing the n-th
    checkpoint's bytes."""
    hook = ""
    if kill_after:
        where, n = kill_after
        hook = textwrap.dedent(f"""
            import os, signal
            from lorakit import files, train
            calls = [0]
            save, write_all = train.checkpoints.save_checkpoint, files._write_all
            def die():
                os.kill(os.getpid(), signal.SIGKILL)
            def boundary(state, path):
                save(state, path); calls[0] += 1
                if calls[0] == {n}: die()
            def inside(fd, data):
                if data[:2] == b"PK":  # a torch.save zip: a checkpoint
                    calls[0] += 1
                    if calls[0] == {n}:
                        write_all(fd, data[: len(data) // 2]); die()
                write_all(fd, data)
            if {where!r} == "boundary": train.checkpoints.save_checkpoint = boundary
            else: files._write_all = inside
        """)
    code = hook + f"from lorakit import cli; cli.main({[*TRAIN, '--out', str(out), *extra]!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The LoRA file of the run that nobody stopped."""
    out = tmp_path_factory.mktemp("whole")
    ok = lorakit(out)
    assert ok.returncode == 0, ok.stderr
    return (out / "lora.safetensors").read_bytes()


@pytest.mark.parametrize("where", ["boundary", "inside"])
def test_a_killed_run_resumes_to_the_same_bytes(tmp_path, where, whole):
    killed = lorakit(tmp_path / "cut", kill_after=(where, 2))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    cut = tmp_path / "cut"
    if where == "inside":
        assert list(cut.glob(".checkpoint.pt.*.tmp")), (
            "the killed write should have left its temporary file"
        )
    assert torch.load(cut / train.CHECKPOINT, weights_only=True)["step"] == (
        4 if where == "boundary" else 2
    )
    resumed = lorakit(cut, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (cut / "lora.safetensors").read_bytes() == whole
    assert not list(cut.glob(".*.tmp")), "a new run cleans what killed runs left"


def test_without_a_checkpoint_frequency_the_command_still_checkpoints_a_few_times(
    lorakit_cli, tmp_path, monkeypatch
):
    written = []

    def save(state, path):
        written.append(state["step"])

    monkeypatch.setattr(train.checkpoints, "save_checkpoint", save)
    argv = [
        *TRAIN[: TRAIN.index("--checkpoint-every")],
        *TRAIN[TRAIN.index("--checkpoint-every") + 2 :],
    ]
    argv[argv.index("--steps") + 1] = "8"
    code, _, err = lorakit_cli(*argv, "--out", tmp_path / "run")
    assert code == 0, err
    assert written == [2, 4, 6, 8]


def test_a_lora_file_is_the_same_bytes_from_any_process(tmp_path):
    unet_weights = formats.LoRAWeights(
        "lorakit", 2, 1.0, {"a.to_q": torch.ones(2, 4)}, {"a.to_q": torch.ones(4, 2)}
    )
    here = formats.save_weights(
        unet_weights,
        tmp_path / "here" / "lora.safetensors",
        metadata={"b": "1", "a": "2", "c": "3"},
    )
    there = tmp_path / "there" / "lora.safetensors"
    code = textwrap.dedent(f"""
        import torch
        from lorakit import formats
        w = formats.LoRAWeights(
            "lorakit", 2, 1.0, {{"a.to_q": torch.ones(2, 4)}}, {{"a.to_q": torch.ones(4, 2)}}
        )
        formats.save_weights(w, {str(there)!r}, metadata={{"b": "1", "a": "2", "c": "3"}})
    """)
    for seed in ("1", "2", "3"):  # Python's and Rust's hash seeds differ from process to process
        subprocess.run(
            [sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONHASHSEED": seed}
        )
        assert there.read_bytes() == here.read_bytes()
    loaded = formats.load_lora(here)  # the rewritten header reads back
    assert [torch.equal(a, torch.ones(2, 4)) for a in loaded.A.values()] == [
        True
    ] and loaded.metadata["a"] == "2"


@pytest.fixture
def full_disk(monkeypatch):
    """Every write stops part-way with ENOSPC, as on a full disk."""

    def write_half(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", write_half)


def test_a_full_disk_in_the_commands_is_one_line_and_leaves_no_partial_file(
    lorakit_cli, tmp_path, full_disk
):
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q"
    src = tmp_path / "src.safetensors"
    src.write_bytes(
        formats.safetensors_bytes(
            {
                f"unet.{q}.lora_A.weight": torch.ones(2, 32),
                f"unet.{q}.lora_B.weight": torch.ones(32, 2),
            },
            {},
        )
    )
    code, _, err = lorakit_cli(
        "convert", src, "--to", "diffusers", "--out", tmp_path / "d.safetensors"
    )
    assert (
        code == 2
        and err.startswith("lorakit: error: no space left on device: ")
        and err.count("\n") == 1
    ), err
    code, _, err = lorakit_cli(*TRAIN, "--out", tmp_path / "run")
    errors = [line for line in err.splitlines() if line.startswith("lorakit: error: ")]
    assert (
        code == 2
        and len(errors) == 1
        and "no space left on device: " in errors[0]
        and "Traceback" not in err
    ), err
    code, _, err = lorakit_cli(
        "sample",
        "--prompt",
        "a red circle",
        "--seeds",
        0,
        "--steps",
        1,
        "--out",
        tmp_path / "g.png",
    )
    assert (
        code == 2 and err.startswith("lorakit: error: no space left on device: ") and "g.png" in err
    ), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "src.safetensors"]
    assert [p.name for p in (tmp_path / "run").iterdir()] == [
        files.LOCK
    ]  # no 0-byte config, no partial file


def test_a_second_run_into_a_folder_in_use_is_refused(lorakit_cli, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        from lorakit import files
        with files.lock_folder({str(out)!r}):
            print("held", flush=True)
            sys.stdin.read()
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = lorakit_cli(*TRAIN, "--out", out)
        assert code == 2 and "another lorakit run (pid " in err and str(out) in err, err
        assert [p.name for p in out.iterdir()] == [files.LOCK]
    finally:
        holder.communicate("", timeout=30)
    code, _, err = lorakit_cli(*TRAIN, "--out", out)  # the first run is over: the folder is free
    assert code == 0, err


def test_a_resume_with_other_settings_is_refused_by_name(lorakit_cli, tmp_path):
    out = tmp_path / "run"
    code, _, err = lorakit_cli(*TRAIN, "--out", out)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for change, words in (
        (["--steps", "4"], "steps: 6 -> 4 (the checkpoint is at step 6"),
        (["--lr", "0.5"], "lr: "),
        (["--rank", "4"], "r: 2 -> 4"),
    ):
        argv = list(TRAIN)
        for flag, value in zip(change[::2], change[1::2], strict=True):
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value]
        code, _, err = lorakit_cli(*argv, "--out", out, "--resume")
        assert code == 2 and words in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
