"""lorakit.train.checkpoints: a run stopped and resumed ends with the same weights, bit for bit; a
checkpoint of other settings is refused by name; a checkpoint is written atomically."""

import copy
import errno
import os

import pytest
import torch

from lorakit import files, formats, train


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_is_bit_exact(
    shared_pipe, dataset, tmp_path, quick, lora_weights, interrupt_after, ema_decay
):
    cfg = dict(
        steps=5,
        checkpoint_every=2,
        lr_schedule="cosine",
        warmup_steps=2,
        lr=3e-3,
        ema_decay=ema_decay,
    )
    whole_pipe = copy.deepcopy(shared_pipe)
    whole = train.train_lora(whole_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "whole")))

    # checkpoint after 2
    interrupt_after(3, quick(**cfg, output_dir=str(tmp_path / "cut")))
    saved = torch.load(tmp_path / "cut" / train.CHECKPOINT, weights_only=True)
    assert saved["step"] == 2 and len(saved["history"]) == 2

    resumed_pipe = copy.deepcopy(shared_pipe)
    resumed = train.train_lora(
        resumed_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "cut"))
    )
    assert resumed.history == whole.history
    want, got = lora_weights(whole_pipe), lora_weights(resumed_pipe)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), (
        "resumed LoRA differs from the uninterrupted one"
    )

    with pytest.raises(ValueError, match=r"other settings \(r: 4 -> 8\).*resume=False"):
        train.train_lora(
            copy.deepcopy(shared_pipe),
            dataset,
            quick(**cfg, r=8, output_dir=str(tmp_path / "cut")),
        )
    with pytest.raises(ValueError, match=r"other settings \(flip: False -> True\)"):
        train.train_lora(
            copy.deepcopy(shared_pipe),
            dataset,
            quick(**cfg, flip=True, output_dir=str(tmp_path / "cut")),
        )
    out = tmp_path / "cut"
    assert not list(out.glob("*.tmp")), "a temporary checkpoint file was left behind"
    assert (out / "loss.png").stat().st_size > 0
    loaded = formats.load_lora(out / "lora.safetensors", model=resumed_pipe.unet)
    assert all(torch.equal(loaded.state_dict()[k], got[k]) for k in got)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / train.CHECKPOINT
    train.save_checkpoint({"step": 3}, path)

    def crash_halfway(fd, data):  # the disk fills up half-way through the new checkpoint
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", crash_halfway)
    with pytest.raises(OSError, match=f"no space left on device: {path}"):
        train.save_checkpoint({"step": 6}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}  # the old checkpoint survived intact
    assert [p.name for p in tmp_path.iterdir()] == [train.CHECKPOINT]


def test_a_full_fine_tune_resumes_bit_exactly(
    shared_pipe, dataset, tmp_path, quick, interrupt_after
):
    cfg = dict(method="full", steps=4, checkpoint_every=2, lr=1e-4)
    whole_pipe = copy.deepcopy(shared_pipe)
    whole = train.train_lora(whole_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "whole")))
    interrupt_after(2, quick(**cfg, output_dir=str(tmp_path / "cut")))
    resumed_pipe = copy.deepcopy(shared_pipe)
    resumed = train.train_lora(
        resumed_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "cut"))
    )
    assert resumed.history == whole.history
    want, got = whole_pipe.unet.state_dict(), resumed_pipe.unet.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(ValueError, match=r"other settings \(method: 'full' -> 'lora'\)"):
        train.train_lora(
            copy.deepcopy(shared_pipe),
            dataset,
            quick(**cfg | {"method": "lora"}, output_dir=str(tmp_path / "cut")),
        )
