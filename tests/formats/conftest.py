"""What the tests of lorakit.formats share: a trained-looking LoRA of the tiny SD's UNet as
LoRAWeights, the same written in every format, and a snapshot of a model that shows whether a
refused file changed it (weights, modules, ``requires_grad`` flags)."""

import copy

import pytest
import torch

from lorakit import formats, inject


@pytest.fixture(scope="session")
def trained_lora(shared_pipe, randomize_lora):
    """``trained_lora(targets="attn2")``: a trained-looking LoRA (r 4, alpha 2, B drawn with seed
    0) on the tiny SD's UNet, as LoRAWeights."""

    def make(targets="attn2"):
        unet = copy.deepcopy(shared_pipe.unet)
        inject.inject_lora(unet, r=4, alpha=2.0, target_modules=targets)
        randomize_lora(unet, seed=0)
        return formats.from_model(unet)

    return make


@pytest.fixture(scope="session")
def write_formats():
    """``write_formats(weights, folder)``: ``weights`` as a kohya and a diffusers file and a PEFT
    folder in ``folder``, ``{format: path}``."""

    def write(weights, folder):
        return {
            fmt: formats.save_weights(
                weights, folder / (fmt if fmt == "peft" else f"{fmt}.safetensors"), fmt
            )
            for fmt in formats.FORMATS
        }

    return write


class Snapshot:
    """A model's weights, ``requires_grad`` flags and module kinds when it was taken."""

    def __init__(self, model):
        self.state = {k: v.clone() for k, v in model.state_dict().items()}
        self.flags = {n: p.requires_grad for n, p in model.named_parameters()}
        self.kinds = [type(m).__name__ for m in model.modules()]

    def assert_unchanged(self, model):
        now = Snapshot(model)
        assert now.kinds == self.kinds, "modules were replaced"
        assert now.flags == self.flags, "requires_grad flags changed"
        assert now.state.keys() == self.state.keys() and all(
            torch.equal(v, self.state[k]) for k, v in now.state.items()
        ), "the weights changed"


@pytest.fixture(scope="session")
def snapshot():
    """``before = snapshot(model)``, then ``before.assert_unchanged(model)``."""
    return Snapshot
