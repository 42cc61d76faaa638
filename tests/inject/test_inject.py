"""lorakit.inject on the tiny SD's UNet: LoRA in and out, scale, merge, the state dict, and the
requires_grad snapshot (``keep_requires_grad``) that inject, formats and claims share."""

import copy
import re

import pytest
import torch
from torch import nn

from lorakit import inject

ATTN2 = re.compile(r"\.attn2\.(to_q|to_k|to_v|to_out\.0)$")


@pytest.fixture(scope="module")
def unet_inputs(shared_pipe):
    gen = torch.Generator().manual_seed(0)
    cfg = shared_pipe.unet.config
    # Small on purpose (8x8 latents, 8 text tokens): every forward below runs on a 2-core CPU.
    sample = torch.randn(1, cfg.in_channels, 8, 8, generator=gen)  # (1, 4, 8, 8)
    text = torch.randn(1, 8, cfg.cross_attention_dim, generator=gen)  # (1, 8, 64)
    return sample, torch.tensor([500]), text


@torch.no_grad()
def run(unet, inputs):
    return unet(*inputs).sample  # (1, 4, 8, 8)


def flags(model) -> list[bool]:
    return [p.requires_grad for p in model.parameters()]


# --- behaviour ---------------------------------------------------------------------------------


def test_lora_kwargs_reach_the_layers(unet):
    inject.inject_lora(unet, r=4, alpha=8, use_rslora=True, dropout=0.1, init="gaussian")
    layers = [layer for _, layer in inject.lora_layers(unet)]
    assert all(layer.use_rslora and layer.scaling == pytest.approx(4.0) for layer in layers)
    assert all(isinstance(layer.lora_dropout, nn.Dropout) for layer in layers)


def test_zero_init_is_the_identity_and_only_lora_trains(unet, unet_inputs):
    before = run(unet, unet_inputs)
    inject.inject_lora(unet, r=4)
    assert torch.equal(run(unet, unet_inputs), before)
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    expected = {f"{n}.lora_{ab}.weight" for n, _ in inject.lora_layers(unet) for ab in "AB"}
    assert trainable == expected
    unet(*unet_inputs).sample.square().mean().backward()
    assert all(p.grad is None for n, p in unet.named_parameters() if n not in expected)
    assert all(unet.get_parameter(n).grad is not None for n in expected)


def test_scale_merge_unmerge(unet, unet_inputs, randomize_lora):
    base = run(unet, unet_inputs)
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    inject.inject_lora(unet, r=4, alpha=2)
    randomize_lora(unet)
    with_lora = run(unet, unet_inputs)
    assert (with_lora - base).abs().max() > 1e-3  # the LoRA does something
    inject.merge_lora(unet)
    assert torch.allclose(run(unet, unet_inputs), with_lora, atol=1e-5)
    with pytest.raises(RuntimeError, match="unmerge"):
        inject.set_lora_scale(unet, 0.5)
    inject.unmerge_lora(unet)
    restored = {
        n.replace(".base_layer", ""): p for n, p in unet.state_dict().items() if "lora_" not in n
    }
    assert all(torch.equal(restored[k], v) for k, v in weights.items())
    inject.set_lora_scale(unet, 0.0)
    assert torch.equal(run(unet, unet_inputs), base)
    inject.set_lora_scale(unet, 0.5)
    layer = unet.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn2.to_v")
    assert torch.allclose(
        layer.get_delta_weight(), 0.5 * 0.5 * layer.lora_B.weight @ layer.lora_A.weight
    )


@pytest.mark.parametrize("merged", [False, True])
def test_remove_lora_restores_the_original_modules_bit_exactly(
    unet, unet_inputs, randomize_lora, merged
):
    originals = {
        n: m for n, m in unet.named_modules() if isinstance(m, nn.Linear) and ATTN2.search(n)
    }
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    before = run(unet, unet_inputs)
    inject.inject_lora(unet, r=4)
    randomize_lora(unet)
    if merged:
        inject.merge_lora(unet)
    assert sorted(inject.remove_lora(unet)) == sorted(originals)
    assert not list(inject.lora_layers(unet))
    assert all(unet.get_submodule(n) is m and type(m) is nn.Linear for n, m in originals.items())
    state = unet.state_dict()
    assert state.keys() == weights.keys() and all(
        torch.equal(state[k], v) for k, v in weights.items()
    )
    assert torch.equal(run(unet, unet_inputs), before)


def test_state_dict_round_trip(unet, shared_pipe, unet_inputs, randomize_lora):
    inject.inject_lora(unet, r=4)
    randomize_lora(unet)
    state = inject.lora_state_dict(unet)
    assert len(state) == 128 and all(
        re.search(r"attn2\.to_(q|k|v|out\.0)\.lora_[AB]\.weight$", k) for k in state
    )
    other = copy.deepcopy(shared_pipe.unet)
    inject.inject_lora(other, r=4)
    inject.load_lora_state_dict(other, state)
    assert torch.equal(run(other, unet_inputs), run(unet, unet_inputs))
    bad = dict(state)
    key = next(iter(bad))
    bad[key] = torch.zeros(5, 5)
    before = {k: v.clone() for k, v in inject.lora_state_dict(other).items()}
    with pytest.raises(ValueError, match=re.escape(key)):
        inject.load_lora_state_dict(other, bad)
    assert all(torch.equal(v, before[k]) for k, v in inject.lora_state_dict(other).items())


# --- the requires_grad snapshot ----------------------------------------------------------------


def test_keep_requires_grad_puts_every_flag_back_on_exit_and_on_an_error():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[1].bias.requires_grad_(False)
    before = flags(model)
    assert before == [True, True, True, False]
    with inject.keep_requires_grad(model):
        model.requires_grad_(False)
        model[1].bias.requires_grad_(True)
    assert flags(model) == before
    with pytest.raises(RuntimeError, match="boom"), inject.keep_requires_grad(model):
        model.requires_grad_(False)
        raise RuntimeError("boom")
    assert flags(model) == before
    with inject.keep_requires_grad(model, on_error_only=True):  # kept when the block returns
        model[0].weight.requires_grad_(False)
    assert flags(model) == [False, True, True, False]
    with pytest.raises(RuntimeError, match="boom"):
        with inject.keep_requires_grad(model, on_error_only=True):
            model.requires_grad_(True)
            raise RuntimeError("boom")
    assert flags(model) == [False, True, True, False]


def test_keep_requires_grad_follows_parameters_into_a_lora_layer():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    first = model[0].weight
    with inject.keep_requires_grad(model, model):  # several modules; a parameter twice is fine
        inject.inject_lora(model, r=1, target_modules=["0"])
        assert not first.requires_grad
    assert first.requires_grad and model[0].base_layer.weight is first
    assert model[0].lora_A.weight.requires_grad  # added inside the block: left as it is


def test_a_layer_refused_half_way_leaves_the_model_as_it_was(unet):
    # rank_pattern skips the up-front check: the down blocks' layers are built (freezing their base
    # layers) before the mid block's rank is refused.
    mid = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"
    with pytest.raises(ValueError, match="larger than min"):
        inject.inject_lora(unet, r=2, rank_pattern={mid: 10**6})
    assert not list(inject.lora_layers(unet))
    assert all(p.requires_grad for p in unet.parameters())


# --- clear errors --------------------------------------------------------------------------------


def test_injecting_twice_is_refused(unet):
    inject.inject_lora(unet, r=4)
    with pytest.raises(RuntimeError, match="already has 64 LoRA layers.*remove_lora"):
        inject.inject_lora(unet, r=4)


def test_operations_without_lora_say_what_to_do(unet):
    with pytest.raises(RuntimeError, match="inject_lora"):
        inject.merge_lora(unet)
    with pytest.raises(RuntimeError, match="inject_lora"):
        inject.lora_state_dict(unet)
