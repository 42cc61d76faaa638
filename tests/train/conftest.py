"""What the tests of lorakit.train share: a data set in a style the tiny SD never saw, a quick
config and the full preset's, a pipeline's LoRA weights, and a run stopped part-way."""

import copy

import pytest
import torch

from lorakit import inject, shapes, train


@pytest.fixture(scope="session")
def dataset():
    return shapes.ShapesDataset(8, seed=3, style="outline")  # a style the tiny SD never saw


def _quick(**overrides) -> train.TrainConfig:
    kwargs = dict(steps=4, batch_size=2, warmup_steps=0, progress=False) | overrides
    return train.TrainConfig(**kwargs)


@pytest.fixture(scope="session")
def quick():
    """``quick(**overrides)``: a TrainConfig of 4 steps of 2 pictures, no warm-up, no bar."""
    return _quick


def _full_preset(**overrides) -> train.TrainConfig:
    settings = dict(batch_size=2, mixed_precision="no", progress=False) | overrides
    return train.TrainConfig.for_mode("full", **settings)


@pytest.fixture(scope="session")
def full_preset():
    """``full_preset(**overrides)``: SD 1.5's preset in float32, 2 pictures a step, no bar."""
    return _full_preset


def _lora_weights(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in inject.lora_state_dict(pipe.unet).items()}


@pytest.fixture(scope="session")
def lora_weights():
    """``lora_weights(pipe)``: a copy of the UNet's LoRA state dict."""
    return _lora_weights


@pytest.fixture
def interrupt_after(shared_pipe, dataset, monkeypatch):
    """``interrupt_after(steps, cfg)``: train a copy of the tiny SD with ``cfg`` and stop it
    (KeyboardInterrupt) in the step after ``steps``."""

    def run(steps: int, cfg: train.TrainConfig) -> None:
        real_loss, calls = train.objective.epsilon_loss, {"n": 0}

        def crash(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > steps:
                raise KeyboardInterrupt
            return real_loss(*args, **kwargs)

        monkeypatch.setattr(train.objective, "epsilon_loss", crash)
        with pytest.raises(KeyboardInterrupt):
            train.train_lora(copy.deepcopy(shared_pipe), dataset, cfg)
        monkeypatch.setattr(train.objective, "epsilon_loss", real_loss)

    return run
