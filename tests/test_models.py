"""The tiny SD: a real diffusers pipeline with SD 1.5's layout and schedule, loaded offline."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from lorakit import config, imaging, metrics, models, sample, shapes


def test_tiny_sd_has_sd15_block_layout_and_schedule(shared_pipe):
    pipe = shared_pipe
    unet = pipe.unet.config
    for key in (
        "down_block_types",
        "up_block_types",
        "layers_per_block",
        "in_channels",
        "out_channels",
    ):
        value = tuple(unet[key]) if isinstance(unet[key], list | tuple) else unet[key]
        assert value == models.SD15_UNET_CONFIG[key], key  # lists and tuples compared alike
    assert list(unet.down_block_types) == list(models.SD15_UNET_CONFIG["down_block_types"])
    assert list(unet.up_block_types) == list(models.SD15_UNET_CONFIG["up_block_types"])
    assert unet.mid_block_type == "UNetMidBlock2DCrossAttn"
    scheduler = pipe.scheduler.config
    for key in (
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "prediction_type",
    ):
        assert scheduler[key] == models.SD15_SCHEDULER_CONFIG[key]
    assert pipe.vae.config.latent_channels == 4 and pipe.vae_scale_factor == 4  # 64 px -> 16x16x4


def test_tiny_sd_fits_the_budget_and_loads_in_float32():
    pipe = models.load_pipeline("tiny")  # its own dtype, as a lesson loads it
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.text_encoder.parameters()} == {torch.float32}
    total = sum(models.count_parameters(getattr(pipe, k)) for k in ("unet", "vae", "text_encoder"))
    assert total < 12_000_000


def test_sd15_built_on_meta_has_its_real_sizes():
    sd15 = models.build_sd15()
    assert models.count_parameters(sd15["unet"]) == 859_520_964
    assert models.count_parameters(sd15["text_encoder"]) == 123_060_480
    assert models.count_parameters(sd15["vae"]) == 83_653_863
    assert next(sd15["unet"].parameters()).device.type == "meta"


def test_tokenizer_has_one_token_per_word_and_reserved_words(shared_pipe):
    tokenizer = shared_pipe.tokenizer
    for word in models.CAPTION_WORDS + models.RESERVED_WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    captions = {shapes.ShapesDataset(500, empty_caption_prob=0.1).caption(i) for i in range(500)}
    used = {word for caption in captions for word in caption.split()}
    assert used <= set(models.CAPTION_WORDS)
    assert not used & set(models.RESERVED_WORDS), "reserved words must never appear in pretraining"
    ids = tokenizer("a red circle", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id


def test_plain_diffusers_loads_the_tiny_sd_offline():
    plain = StableDiffusionPipeline.from_pretrained(str(config.TINY_SD_DIR), local_files_only=True)
    assert plain.unet.dtype == plain.text_encoder.dtype == torch.float32
    image = plain(
        "a red circle",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (64, 64)


def test_tiny_sd_draws_what_it_is_asked(shared_pipe):
    """A small slice of the prompt grid (benchmarks/tiny_sd_quality.py runs the whole one)."""
    prompts = [
        "a red circle",
        "a green square",
        "a blue triangle",
        "a yellow square",
        "a purple circle",
    ]
    images = sample.generate(shared_pipe, prompts, seeds=list(range(5)), num_inference_steps=15)
    found = [metrics.detect(image) for image in images]
    right = sum(f"a {f['colour']} {f['shape']}" == p for f, p in zip(found, prompts, strict=True))
    assert right >= 4, found


def test_seeded_generation_is_repeatable_and_batch_independent(shared_pipe):
    first, again = (
        sample.generate(
            shared_pipe, ["a red circle", "a blue square"], seeds=[3, 4], num_inference_steps=3
        )
        for _ in range(2)
    )
    alone = sample.generate(shared_pipe, "a blue square", seeds=4, num_inference_steps=3)
    assert [i.tobytes() for i in first] == [i.tobytes() for i in again]
    assert torch.allclose(imaging.to_tensor(first[1]), imaging.to_tensor(alone[0]), atol=2 / 127.5)


def test_load_pipeline_from_a_local_directory(tmp_path, shared_pipe):
    shared_pipe.save_pretrained(tmp_path / "sd")
    again = models.load_pipeline(tmp_path / "sd")
    assert isinstance(again, StableDiffusionPipeline)
    assert torch.equal(again.unet.conv_in.weight, shared_pipe.unet.conv_in.weight)


def test_hub_ids_go_to_from_pretrained(monkeypatch):
    seen = {}

    def fake_from_pretrained(source, **kwargs):
        seen.update(source=source, **kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", fake_from_pretrained)
    with pytest.raises(RuntimeError, match="stop here"):
        models.load_pipeline(config.SD15_HUB_ID, device="cpu")
    assert seen["source"] == config.SD15_HUB_ID and seen["local_files_only"] is False
    assert seen["safety_checker"] is None


@pytest.mark.parametrize(
    "model, want", [("tiny", torch.float32), (config.SD15_HUB_ID, torch.bfloat16)]
)
def test_on_a_gpu_the_tiny_sd_stays_float32_and_sd15_goes_half(monkeypatch, model, want):
    """The weights' dtype follows the model: a GPU runtime draws the tiny SD as the lessons' CPU
    does."""
    seen = {}

    def fake_from_pretrained(source, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    with pytest.raises(RuntimeError, match="stop here"):
        models.load_pipeline(model, device="cuda")  # the device is only named: nothing reaches it
    assert seen[models.DTYPE_KWARG] == want


def test_clear_errors_for_bad_model_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        models.load_pipeline(tmp_path / "missing")
    (tmp_path / "not-a-pipeline").mkdir()
    (tmp_path / "not-a-pipeline" / "config.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        models.load_pipeline(tmp_path / "not-a-pipeline")
