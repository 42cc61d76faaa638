"""Full mode's code paths on the CPU: an SD-shaped pipeline in a local directory, bf16 and
gradient checkpointing (the full preset's defaults are checked in test_settings.py).

Lesson 08 runs SD 1.5 on a GPU. Here the same calls run on a pipeline with SD 1.5's block layout
and a 77-token CLIP tokenizer (``models.build_tiny_sd``, fresh weights), saved with
``save_pretrained`` to a local directory, so that nothing downloads (HF_HUB_OFFLINE=1).
"""

import pytest
import torch
from diffusers import StableDiffusionPipeline

from lorakit import config, formats, imagefolder, inject, memory, models, shapes, train


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd-shaped")
    models.make_pipeline(models.build_tiny_sd(seed=1)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained(sd_dir, tmp_path_factory):
    """An SD-shaped pipeline loaded in bfloat16, trained 3 steps with full mode's settings."""
    pipe = models.load_pipeline(sd_dir, device="cpu", dtype="bfloat16")
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    cfg = train.TrainConfig.for_mode(
        "full",
        steps=3,
        batch_size=2,
        resolution=64,
        warmup_steps=1,
        lr=1e-2,
        progress=False,
        output_dir=str(tmp_path_factory.mktemp("run")),
    )
    dataset = imagefolder.ImageFolderDataset(config.DATA_DIR / "styles" / "outline", resolution=64)
    result = train.train_lora(pipe, dataset, cfg)
    return pipe, base, cfg, result


def test_a_local_directory_loads_in_half_precision(sd_dir):
    pipe = models.load_pipeline(sd_dir, device="cpu", dtype="bfloat16")
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16
    assert list(pipe.unet.config.down_block_types) == list(
        models.SD15_UNET_CONFIG["down_block_types"]
    )
    assert pipe.tokenizer.model_max_length == 77
    names = inject.find_targets(pipe.unet, "attn2")
    assert (
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q" in names and len(names) == 64
    )


def test_bf16_training_with_checkpointing_trains_only_the_float32_lora(trained):
    pipe, base, cfg, result = trained
    assert len(result.history) == cfg.steps and all(torch.isfinite(torch.tensor(result.history)))
    layers = list(inject.lora_layers(pipe.unet))
    assert len(layers) == 64
    for name, layer in layers:
        assert layer.lora_A.weight.dtype == layer.lora_B.weight.dtype == torch.float32, name
        assert layer.lora_B.weight.abs().max() > 0, f"{name}: lora_B is still zero"
        assert layer.base_layer.weight.dtype == torch.bfloat16
        assert torch.equal(layer.base_layer.weight, base[f"{name}.weight"])
    assert not pipe.unet.is_gradient_checkpointing  # switched off again after training
    assert (pipe.unet.config.sample_size, cfg.resolution) == (16, 64)


def test_checkpointing_gives_the_same_first_step(sd_dir, full_preset):
    """Checkpointing trades time for memory; it must not change what is computed."""
    dataset = shapes.ShapesDataset(4, seed=3, style="outline")
    histories = []
    for checkpointing in (False, True):
        pipe = models.load_pipeline(sd_dir, device="cpu", dtype="float32")
        cfg = full_preset(steps=1, resolution=64, gradient_checkpointing=checkpointing)
        histories.append(train.train_lora(pipe, dataset, cfg).history)
    assert histories[0] == pytest.approx(histories[1], rel=1e-5)


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_exported_lora_loads_back_with_load_lora_weights(trained, sd_dir, tmp_path, fmt):
    pipe = trained[0]
    path = formats.save_lora(pipe.unet, tmp_path / f"style_{fmt}.safetensors", fmt)
    ours = models.load_pipeline(sd_dir, device="cpu", dtype="float32")
    formats.apply_lora(ours.unet, path)
    theirs = models.load_pipeline(sd_dir, device="cpu", dtype="float32")
    theirs.load_lora_weights(str(path))
    plain = models.load_pipeline(sd_dir, device="cpu", dtype="float32")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)  # (B, 4, h, w)
    ctx = torch.randn(2, 77, models.TINY_TEXT_WIDTH, generator=gen)  # (B, 77, D)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        want, got, base = (p.unet(x, t, ctx).sample for p in (ours, theirs, plain))
    assert (want - base).abs().max() > 1e-3  # the LoRA does something
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_memory_estimate_of_the_local_pipeline(trained):
    pipe, _, cfg, _ = trained
    estimate = memory.estimate_memory(cfg, pipe)
    assert estimate.weights == sum(
        p.numel() * 2 for n, p in pipe.unet.named_parameters() if ".lora_" not in n
    )
    assert estimate.lora_count == sum(
        layer.lora_A.weight.numel() + layer.lora_B.weight.numel()
        for _, layer in inject.lora_layers(pipe.unet)
    )
    assert estimate.settings["gradient_checkpointing"] and estimate.settings["dtype"] == "bfloat16"
    assert (
        memory.check_fits(cfg, pipe).total == estimate.total
    )  # the pre-flight check passes on the CPU
