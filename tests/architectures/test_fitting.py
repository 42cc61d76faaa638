"""A LoRA injected with lorakit on the tiny SDXL, SD3 and Flux learns one example (its loss falls)
while the base weights stay bit-identical; the latents' packing is Flux pipeline's own."""

import copy

import pytest
import torch
from diffusers import FluxPipeline

from lorakit import architectures, inject


def prompt(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 9, 64, generator=g), torch.randn(1, 64, generator=g)


@pytest.mark.parametrize("name", ["sdxl", "sd3", "flux"])
def test_the_lora_learns_and_the_base_stays(name):
    model = architectures.build_tiny(name)
    example = architectures.one_example(model, *prompt())
    base = copy.deepcopy(model.state_dict())
    inject.inject_lora(model, r=4, target_modules=list(architectures.SCRIPT_TARGETS[name][1]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    losses = architectures.fit_one_example(model, example, steps=15, lr=1e-2)
    assert len(losses) == 16 and losses[-1] < 0.95 * losses[0]
    inject.remove_lora(model)
    assert all(torch.equal(base[k], v) for k, v in model.state_dict().items())


def test_nothing_to_train_is_refused():
    model = architectures.build_tiny("sd3").requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        architectures.fit_one_example(model, architectures.one_example(model, *prompt()), steps=1)


def test_packing_is_flux_pipelines():
    x = torch.randn(2, 4, 16, 16)
    want = FluxPipeline._pack_latents(x, 2, 4, 16, 16)
    assert torch.equal(architectures.pack_latents(x), want)
    assert torch.equal(architectures.unpack_latents(want, 16, 16), x)
