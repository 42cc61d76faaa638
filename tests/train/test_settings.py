"""lorakit.train.settings: the presets of the two worlds, and the checks that refuse a bad
TrainConfig (and a bad data set) before anything is injected."""

import pytest
import torch

from lorakit import config, inject, shapes, train


def test_for_mode():
    small, full = train.TrainConfig.for_mode("small"), train.TrainConfig.for_mode("full", r=8)
    # the resolution is the model's own
    assert small.resolution is None and small.mixed_precision == "no"
    # The small preset is the one measured on the outline style set (docs/style-lora.md).
    assert (
        small.r,
        small.min_snr_gamma,
        small.flip,
        small.caption_dropout,
        small.lora_dropout,
        small.target_modules,
        small.steps,
    ) == (8, 2.0, True, 0.3, 0.1, "attn2+ff", 300)
    # SD 1.5: cross-attention only (the small preset's ff measured on the tiny SD)
    assert full.target_modules == "attn2"
    assert not full.flip and full.caption_dropout == 0  # SD 1.5 subjects may not be symmetric
    assert train.TrainConfig().lora_dropout == 0 and full.lora_dropout == 0
    assert full.resolution is None and full.mixed_precision == "bf16" and full.r == 8


def test_full_mode_defaults():
    cfg = train.TrainConfig.for_mode("full")
    assert (cfg.resolution, cfg.mixed_precision, cfg.gradient_checkpointing) == (
        None,
        "bf16",
        True,
    )  # the model's own
    assert (cfg.r, cfg.target_modules, cfg.lr_schedule, cfg.min_snr_gamma) == (
        16,
        "attn2",
        "cosine",
        5.0,
    )
    assert train.TrainConfig.for_mode("full", r=4).r == 4  # overrides win
    assert config.get_preset("full").model == config.SD15_HUB_ID
    small = train.TrainConfig.for_mode("small")
    assert (small.resolution, small.mixed_precision, small.gradient_checkpointing) == (
        None,
        "no",
        False,
    )


@pytest.mark.parametrize(
    "data_kind, overrides, message",
    [
        ("empty", {}, "dataset is empty"),
        ("shapes", {"steps": 0}, "steps must be a positive integer"),
        ("shapes", {"batch_size": 0}, "batch_size must be a positive integer"),
        ("shapes", {"mixed_precision": "fp16"}, "needs a CUDA GPU"),
        ("shapes", {"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ("shapes", {"save_format": "ckpt"}, "save_format must be one of"),
        ("shapes", {"caption_dropout": 1.0}, r"caption_dropout must be in \[0, 1\), got 1.0"),
        ("shapes", {"lora_dropout": -0.1}, r"lora_dropout must be in \[0, 1\), got -0.1"),
        ("shapes", {"weight_decay": -0.01}, r"weight_decay must be >= 0, got -0.01"),
        ("shapes", {"ema_decay": 1.0}, r"ema_decay must be in \(0, 1\) or None, got 1.0"),
        ("small_images", {}, r"shape \(3, 32, 32\).*resolution=64"),
    ],
)
def test_bad_input_is_refused_clearly(pipe, quick, data_kind, overrides, message):
    dataset = {
        "empty": [],
        "shapes": shapes.ShapesDataset(2),
        "small_images": shapes.ShapesDataset(2, resolution=32),
    }[data_kind]
    with pytest.raises(ValueError, match=message):
        train.train_lora(pipe, dataset, quick(**overrides))
    assert not list(inject.lora_layers(pipe.unet))  # nothing was injected


class NoAccelerator:
    def prepare_optimizer(self, optimizer):
        return optimizer


def test_the_weight_decay_reaches_adamw():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert train.TrainConfig().weight_decay == 1e-2  # AdamW's usual default, as before
    for decay in (0.0, 0.1):
        cfg = train.TrainConfig.for_mode("small", weight_decay=decay)
        optimizer, _ = train.make_optimizer(params, cfg, NoAccelerator())
        assert optimizer.param_groups[0]["weight_decay"] == decay
