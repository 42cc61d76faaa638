"""Pretraining is seeded and resumable: an interrupted run ends with the weights of an uninterrupted one."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lorakit import data, models, pretrain


@pytest.fixture(autouse=True)
def narrow_models(monkeypatch):
    """The tiny SD's layout with narrower blocks: the mechanism is the same, the test is fast."""
    monkeypatch.setattr(models, "TINY_UNET_CONFIG",
                        dict(models.TINY_UNET_CONFIG, block_out_channels=(16, 16, 16, 16), norm_num_groups=8))
    monkeypatch.setattr(models, "TINY_VAE_CONFIG",
                        dict(models.TINY_VAE_CONFIG, block_out_channels=(16, 16, 16), norm_num_groups=8))


def tiny_run(tmp_path, name, **overrides):
    cfg = pretrain.PretrainConfig(out=str(tmp_path / name / "model"), work_dir=str(tmp_path / name / "work"),
                                  num_images=24, vae_steps=2, vae_batch_size=4, steps=3, batch_size=2,
                                  warmup_steps=1, checkpoint_every=100, device="cpu", **overrides)
    return pretrain.pretrain(cfg)


def unet_weights(path):
    return load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))


def test_pretrain_saves_a_loadable_pipeline_and_resumes_exactly(tmp_path):
    whole = tiny_run(tmp_path, "whole")
    log = json.loads((whole / "pretrain_log.json").read_text())
    assert log["steps_done"] == 3 and len(log["loss_every_10_steps"]) == 1
    pipe = models.load_pipeline(whole, device="cpu")
    assert pipe.vae.config.scaling_factor == log["vae_scaling_factor"] != 1.0
    assert pipe.unet.dtype == torch.float32  # stored in float16, loaded as float32

    again = tiny_run(tmp_path, "again")
    assert all(torch.equal(v, unet_weights(again)[k]) for k, v in unet_weights(whole).items()), "seeded runs agree"

    tiny_run(tmp_path, "cut", stop_at=2)  # interrupted after step 2: a checkpoint is left behind
    assert (tmp_path / "cut" / "work" / "unet.pt").exists()
    resumed = tiny_run(tmp_path, "cut")  # same command again: picks up from step 2
    assert json.loads((resumed / "pretrain_log.json").read_text())["steps_done"] == 3
    a, b = unet_weights(whole), unet_weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run should end with the same weights"


def test_caption_table_has_empty_row_first_and_one_row_per_caption():
    tokenizer = models.build_tokenizer()
    ids, rows = pretrain.caption_table(50, seed=0, tokenizer=tokenizer)
    assert ids.shape[1] == 77 and rows.shape == (50, 2)
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == ""
    decoded = tokenizer.decode(ids[rows[7, 1]], skip_special_tokens=True).strip()
    assert decoded == data.sample_spec(7, 0).caption(with_size=True)


def test_tokenizer_is_the_same_on_every_build():
    first, second = models.build_tokenizer(), models.build_tokenizer()
    assert first.get_vocab() == second.get_vocab()
