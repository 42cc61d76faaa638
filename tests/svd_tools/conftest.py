"""What the tests of lorakit.svd_tools share: trained-looking LoRAs on the tiny SD's layout, as
``LoRAWeights``, and the ``world`` they are drawn in (the shared pipeline and two LoRAs)."""

import copy

import pytest
import torch

from lorakit import formats, inject


@pytest.fixture(scope="session")
def random_lora(randomize_lora):
    """``random_lora(unet, r=4, alpha=2.0, seed=0, targets="kohya", std=0.05)``: a trained-looking
    LoRA on a copy of ``unet``'s layout, as LoRAWeights (linear layers and 1x1 convolutions)."""

    def make(unet, r=4, alpha=2.0, seed=0, targets="kohya", std=0.05):
        unet = copy.deepcopy(unet)
        torch.manual_seed(seed)  # A's initialisation
        inject.inject_lora(unet, r=r, alpha=alpha, target_modules=targets)
        randomize_lora(unet, std=std, seed=seed)
        return formats.from_model(unet)

    return make


@pytest.fixture(scope="session")
def world(shared_pipe, random_lora):
    """The shared tiny SD (read it, never change it), LoRA ``a`` (kohya's targets, rank 4, alpha 2)
    and LoRA ``b`` (attn2, rank 4, alpha 8)."""
    a = random_lora(shared_pipe.unet, seed=0)
    b = random_lora(shared_pipe.unet, alpha=8.0, seed=1, targets="attn2")
    return dict(pipe=shared_pipe, a=a, b=b)
