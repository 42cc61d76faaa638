"""lorakit.inject on the tiny SD's UNet (SD 1.5's module paths) and on SD 1.5 built on the meta device."""

import copy
import re

import pytest
import torch
from diffusers import UNet2DConditionModel
from torch import nn

from lorakit import config, inject, lora, models

ATTN2 = re.compile(r"\.attn2\.(to_q|to_k|to_v|to_out\.0)$")
ATTN = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
ATTN2_FF = re.compile(r"\.(attn2\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))$")


@pytest.fixture(scope="module")
def pretrained_unet():
    return UNet2DConditionModel.from_pretrained(config.TINY_SD_DIR / "unet").eval()


@pytest.fixture
def unet(pretrained_unet):
    return copy.deepcopy(pretrained_unet)


@pytest.fixture(scope="module")
def unet_inputs(pretrained_unet):
    gen = torch.Generator().manual_seed(0)
    cfg = pretrained_unet.config
    # Small on purpose (8x8 latents, 8 text tokens): every forward below runs on a 2-core CPU.
    sample = torch.randn(1, cfg.in_channels, 8, 8, generator=gen)  # (1, 4, 8, 8)
    text = torch.randn(1, 8, cfg.cross_attention_dim, generator=gen)  # (1, 8, 64)
    return sample, torch.tensor([500]), text


@torch.no_grad()
def run(unet, inputs):
    return unet(*inputs).sample  # (1, 4, 8, 8)


def randomize_lora(unet, std=0.05, seed=1):
    """A trained-looking LoRA: B != 0 (B = 0 would hide every mistake)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, layer in inject.lora_layers(unet):
            layer.lora_B.weight.normal_(std=std)


def linear_paths(unet, pattern):
    return [n for n, m in unet.named_modules() if isinstance(m, nn.Linear) and pattern.search(n)]


# --- what gets wrapped ------------------------------------------------------------------------


def test_attn2_preset_wraps_the_64_cross_attention_projections(unet):
    expected = linear_paths(unet, ATTN2)
    names = inject.inject_lora(unet, r=4)
    assert len(names) == 64 and names == expected
    assert {n for n, _ in inject.lora_layers(unet)} == set(expected)
    assert all(isinstance(unet.get_submodule(n), lora.LoRALinear) for n in names)


def test_attn_preset_wraps_self_and_cross_attention(unet):
    expected = linear_paths(unet, ATTN)
    assert len(expected) == 128
    assert inject.inject_lora(unet, r=2, target_modules="attn") == expected


def test_attn2_ff_preset_adds_the_feed_forward_layers(unet):
    expected = linear_paths(unet, ATTN2_FF)
    assert (
        len(expected) == 96
    )  # 16 transformer blocks x (4 attn2 projections + 2 feed-forward layers)
    names = inject.inject_lora(unet, r=2, target_modules="attn2+ff")
    assert names == expected
    assert (
        sum(n.endswith("ff.net.0.proj") for n in names)
        == sum(n.endswith("ff.net.2") for n in names)
        == 16
    )


def test_module_kind_is_a_suffix_that_names_the_layer():
    block = "down_blocks.0.attentions.0.transformer_blocks.0"
    assert [inject.module_kind(f"{block}.{s}") for s in inject.PRESETS["attn2+ff"]] == list(
        inject.PRESETS["attn2+ff"]
    )
    assert inject.module_kind("down_blocks.0.resnets.1.time_emb_proj") == "1.time_emb_proj"
    assert inject.module_kind("time_embedding.linear_1") == "time_embedding.linear_1"


def test_a_target_that_matches_nothing_lists_suffixes_that_do(unet):
    with pytest.raises(ValueError, match="matches no module") as error:
        inject.inject_lora(unet, r=2, target_modules=["attn9.to_q"])
    listed = str(error.value).split("include: ")[1].rstrip(".").split(", ")
    assert "attn2.to_out.0" in listed and "ff.net.0.proj" in listed
    assert all(
        inject.find_targets(unet, [suffix]) for suffix in listed
    )  # each one is a target that works


def test_explicit_suffixes_and_the_same_modules_as_peft(unet, pretrained_unet):
    names = inject.inject_lora(unet, r=2, target_modules=["attn2.to_k", "attn2.to_v"])
    assert len(names) == 32 and all(n.endswith(("attn2.to_k", "attn2.to_v")) for n in names)
    peft = pytest.importorskip("peft")
    theirs = copy.deepcopy(pretrained_unet)
    theirs.add_adapter(peft.LoraConfig(r=2, target_modules=["attn2.to_k", "attn2.to_v"]))
    wrapped = [n for n, m in theirs.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    assert wrapped == names


def test_lora_kwargs_reach_the_layers(unet):
    inject.inject_lora(unet, r=4, alpha=8, use_rslora=True, dropout=0.1, init="gaussian")
    layers = [layer for _, layer in inject.lora_layers(unet)]
    assert all(layer.use_rslora and layer.scaling == pytest.approx(4.0) for layer in layers)
    assert all(isinstance(layer.lora_dropout, nn.Dropout) for layer in layers)


# --- behaviour ---------------------------------------------------------------------------------


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


def test_parameter_count_matches_the_injected_model(unet):
    r = 3
    counted = inject.lora_parameter_count(unet, r)
    inject.inject_lora(unet, r=r)
    assert lora.count_parameters(unet) == counted
    by_hand = sum(
        r * (layer.base_layer.in_features + layer.base_layer.out_features)
        for _, layer in inject.lora_layers(unet)
    )
    assert counted == by_hand > 0


@pytest.mark.parametrize("r", [1, 4, 16])
def test_sd15_attn2_lora_has_99456_parameters_per_rank(r):
    unet = models.build_sd15()["unet"]  # meta device: shapes, no memory
    cfg = unet.config
    widths = [
        w for w in cfg.block_out_channels[:3] for _ in range(cfg.layers_per_block)
    ]  # down blocks
    widths += [cfg.block_out_channels[-1]]  # mid block
    widths += [
        w for w in reversed(cfg.block_out_channels[:3]) for _ in range(cfg.layers_per_block + 1)
    ]  # up
    per_rank = sum(
        6 * w + 2 * cfg.cross_attention_dim for w in widths
    )  # q, out: w->w; k, v: 768->w
    assert per_rank == 99_456
    assert inject.lora_parameter_count(unet, r) == per_rank * r
    inject.inject_lora(unet, r=r)
    assert lora.count_parameters(unet) == per_rank * r


def test_scale_merge_unmerge(unet, unet_inputs):
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
def test_remove_lora_restores_the_original_modules_bit_exactly(unet, unet_inputs, merged):
    originals = {n: unet.get_submodule(n) for n in linear_paths(unet, ATTN2)}
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


def test_state_dict_round_trip(unet, pretrained_unet, unet_inputs):
    inject.inject_lora(unet, r=4)
    randomize_lora(unet)
    state = inject.lora_state_dict(unet)
    assert len(state) == 128 and all(
        re.search(r"attn2\.to_(q|k|v|out\.0)\.lora_[AB]\.weight$", k) for k in state
    )
    other = copy.deepcopy(pretrained_unet)
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


# --- clear errors --------------------------------------------------------------------------------


def test_injecting_twice_is_refused(unet):
    inject.inject_lora(unet, r=4)
    with pytest.raises(RuntimeError, match="already has 64 LoRA layers.*remove_lora"):
        inject.inject_lora(unet, r=4)


def test_a_target_that_matches_nothing_names_the_choices(unet):
    with pytest.raises(ValueError, match=r"'attn3\.to_q' matches no module.*'attn2'.*to_q"):
        inject.inject_lora(unet, target_modules=["attn2.to_q", "attn3.to_q"])
    with pytest.raises(ValueError, match="unknown target_modules preset 'attention'"):
        inject.inject_lora(unet, target_modules="attention")
    with pytest.raises(
        ValueError, match="nn.Linear and nn.Conv2d layers only.*attentions.0.norm \\(GroupNorm\\)"
    ):
        inject.inject_lora(unet, target_modules=["attentions.0.norm"])
    assert not list(inject.lora_layers(unet))


def test_a_rank_that_does_not_fit_names_the_module(unet):
    k = unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k")
    too_big = min(k.in_features, k.out_features) + 1
    with pytest.raises(
        ValueError,
        match=rf"r={too_big} does not fit.*attn2\.to_k \({k.in_features}->{k.out_features}\)",
    ):
        inject.inject_lora(unet, r=too_big)
    assert not list(inject.lora_layers(unet))
    assert all(p.requires_grad for p in unet.parameters())  # nothing was frozen either


def test_operations_without_lora_say_what_to_do(unet):
    with pytest.raises(RuntimeError, match="inject_lora"):
        inject.merge_lora(unet)
    with pytest.raises(RuntimeError, match="inject_lora"):
        inject.lora_state_dict(unet)
