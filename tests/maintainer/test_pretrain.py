"""Pretraining the tiny SD is seeded and resumable: an interrupted run ends with the weights of an
uninterrupted one; its captions, word positions and token loss."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lorakit import models, shapes
from lorakit.maintainer import pretrain


@pytest.fixture(autouse=True)
def narrow_models(monkeypatch):
    """The tiny SD's layout with narrower blocks: the mechanism is the same, the test is fast."""
    monkeypatch.setattr(
        models,
        "TINY_UNET_CONFIG",
        dict(models.TINY_UNET_CONFIG, block_out_channels=(16, 16, 16, 16), norm_num_groups=8),
    )
    monkeypatch.setattr(
        models,
        "TINY_VAE_CONFIG",
        dict(models.TINY_VAE_CONFIG, block_out_channels=(16, 16, 16), norm_num_groups=8),
    )


def tiny_run(tmp_path, name, **overrides):
    cfg = pretrain.PretrainConfig(
        out=str(tmp_path / name / "model"),
        work_dir=str(tmp_path / name / "work"),
        num_images=24,
        vae_steps=2,
        vae_batch_size=4,
        steps=3,
        batch_size=2,
        warmup_steps=1,
        checkpoint_every=100,
        device="cpu",
        **overrides,
    )
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
    assert all(torch.equal(v, unet_weights(again)[k]) for k, v in unet_weights(whole).items()), (
        "seeded runs agree"
    )

    tiny_run(tmp_path, "cut", stop_at=2)  # interrupted after step 2: a checkpoint is left behind
    assert (tmp_path / "cut" / "work" / "unet.pt").exists()
    resumed = tiny_run(tmp_path, "cut")  # same command again: picks up from step 2
    assert json.loads((resumed / "pretrain_log.json").read_text())["steps_done"] == 3
    a, b = unet_weights(whole), unet_weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), (
        "the resumed run should end with the same weights"
    )


def test_caption_table_has_empty_row_first_and_one_row_per_caption():
    tokenizer = models.build_tokenizer()
    ids, rows = pretrain.caption_table(50, seed=0, tokenizer=tokenizer)
    assert ids.shape[1] == 77 and rows.shape == (50, 2)
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == ""
    decoded = tokenizer.decode(ids[rows[7, 1]], skip_special_tokens=True).strip()
    assert decoded == shapes.sample_spec(7, 0).caption(with_size=True)


def test_tokenizer_is_the_same_on_every_build():
    first, second = models.build_tokenizer(), models.build_tokenizer()
    assert first.get_vocab() == second.get_vocab()


def test_two_shape_pictures_get_their_own_caption_in_both_columns():
    tokenizer = models.build_tokenizer()
    ids, rows = pretrain.caption_table(60, seed=0, tokenizer=tokenizer, pair_fraction=0.5)
    pairs = [i for i in range(60) if pretrain.is_pair(i, 0, 0.5)]
    assert 15 < len(pairs) < 45 and not pretrain.is_pair(0, 0, 0.0)
    for i in pairs[:5]:
        assert rows[i, 0] == rows[i, 1]
        text = tokenizer.decode(ids[rows[i, 0]], skip_special_tokens=True).strip()
        assert text == shapes.pair_caption(shapes.sample_pair(i, 0)) and " and " in text
    images = pretrain.render_all(4, seed=0, pair_fraction=1.0)
    assert torch.equal(
        images[2],
        torch.from_numpy(np.array(shapes.render_scene(shapes.sample_pair(2, 0)))).permute(2, 0, 1),
    )


def test_continuing_from_a_saved_model_keeps_its_vae_and_trains_the_unet(tmp_path):
    first = tiny_run(tmp_path, "first")
    more = tiny_run(tmp_path, "more", init_from=str(first), pair_fraction=0.5, seed=1)
    log = json.loads((more / "pretrain_log.json").read_text())
    assert log["config"]["init_from"] == f"<elsewhere>/{first.name}" and log["steps_done"] == 3
    assert str(tmp_path) not in json.dumps(log), "the log names no absolute folder"
    vae = "vae/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(first / vae)), load_file(str(more / vae))
    assert all(torch.equal(a[k], b[k]) for k in a), "the VAE is kept"
    assert (
        models.load_pipeline(more, device="cpu").vae.config.scaling_factor
        == log["vae_scaling_factor"]
    )
    before, after = unet_weights(first), unet_weights(more)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the UNet went on training"


def test_token_loss_is_zero_when_each_word_looks_only_at_its_shape():
    side, tokens = 4, 8
    masks = torch.zeros(1, 2, side, side)
    masks[0, 0, :2, :2] = 1  # shape 0 in the top-left quarter
    masks[0, 1, 2:, 2:] = 1  # shape 1 in the bottom-right quarter
    positions = torch.tensor([[[2, 3], [6, 7]]])  # (B, 2 shapes, 2 words)
    focused = torch.full((1, side * side, tokens), 1e-9)
    focused[0, masks[0, 0].flatten() > 0, 2:4] = 1.0
    focused[0, masks[0, 1].flatten() > 0, 6:8] = 1.0
    assert pretrain.token_loss({"a": [focused]}, masks, positions).item() == pytest.approx(
        0.0, abs=1e-6
    )
    uniform = torch.full((1, side * side, tokens), 1 / tokens)
    assert pretrain.token_loss({"a": [uniform]}, masks, positions).item() == pytest.approx(
        (1 - 0.25) ** 2
    )
    swapped = torch.full((1, side * side, tokens), 1e-9)
    swapped[0, masks[0, 1].flatten() > 0, 2:4] = (
        1.0  # the first shape's words look at the second shape
    )
    swapped[0, masks[0, 0].flatten() > 0, 6:8] = 1.0
    assert pretrain.token_loss({"a": [swapped]}, masks, positions).item() == pytest.approx(
        1.0, abs=1e-6
    )
    # -1: no such word (a one-shape picture, an empty caption), and maps smaller than min_side:
    # not counted
    assert pretrain.token_loss({"a": [uniform]}, masks, torch.full((1, 2, 2), -1)).item() == 0.0
    assert pretrain.token_loss({"b": [torch.rand(1, 4, tokens)]}, masks, positions).item() == 0.0


def test_grounding_table_points_at_the_colour_and_shape_words():
    tokenizer = models.build_tokenizer()
    ids, rows = pretrain.caption_table(40, seed=0, tokenizer=tokenizer, pair_fraction=0.5)
    positions = pretrain.grounding_table(40, seed=0, pair_fraction=0.5)
    for i in range(40):
        specs = pretrain.specs_of(i, 0, 0.5)
        for column in range(2):
            words = tokenizer.convert_ids_to_tokens(ids[rows[i, column]].tolist())
            for k, spec in enumerate(specs):
                colour, shape = positions[i, column, k].tolist()
                assert words[colour] == f"{spec.colour}</w>" and words[shape] == f"{spec.shape}</w>"
            if len(specs) == 1:
                assert (positions[i, column, 1] == -1).all()


def test_the_decoder_alone_is_tuned_and_the_latents_stay_the_same(tmp_path):
    parts = models.build_tiny_sd()
    vae = parts["vae"]
    images = pretrain.render_all(4, seed=0)
    x = images.float() / 127.5 - 1
    before_latents = vae.encode(x).latent_dist.mode().detach()
    decoder_before = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    cfg = pretrain.PretrainConfig(decoder_steps=2, vae_batch_size=2, warmup_steps=1)
    history = pretrain.tune_decoder(vae, images, cfg, torch.device("cpu"))
    assert len(history) == 1
    assert torch.equal(vae.encode(x).latent_dist.mode(), before_latents), "the encoder is frozen"
    assert any(not torch.equal(v, vae.decoder.state_dict()[k]) for k, v in decoder_before.items())
