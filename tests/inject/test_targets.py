"""lorakit.targets: which layers a preset or a list of suffixes selects, on the tiny SD's UNet
(SD 1.5's module paths), against PEFT, and on SD 1.5 built on the meta device."""

import copy
import re

import pytest
from torch import nn

from lorakit import inject, lora, models, targets

ATTN2 = re.compile(r"\.attn2\.(to_q|to_k|to_v|to_out\.0)$")
ATTN = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
ATTN2_FF = re.compile(r"\.(attn2\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))$")


def linear_paths(unet, pattern):
    return [n for n, m in unet.named_modules() if isinstance(m, nn.Linear) and pattern.search(n)]


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
    # 16 transformer blocks x (4 attn2 projections + 2 feed-forward layers)
    assert len(expected) == 96
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


def test_suffixes_match_whole_name_parts_and_patterns_take_the_first_match():
    assert targets.target_suffixes("attn2") == [f"attn2.{p}" for p in targets.PROJECTIONS]
    assert targets.target_suffixes(("to_k",)) == ["to_k"]
    assert targets.matches_suffix("a.attn2.to_q", "attn2.to_q")
    assert targets.matches_suffix("attn2.to_q", "attn2.to_q")
    assert not targets.matches_suffix("a.attn2.to_qk", "attn2.to_q")
    assert not targets.matches_suffix("a.xattn2.to_q", "attn2.to_q")
    pattern = {"to_k": 8, "attn2.to_k": 2}  # PEFT's: the first key that matches wins
    assert targets.pattern_value(pattern, "b.attn2.to_k", 4) == 8
    assert targets.pattern_value(pattern, "b.attn2.to_v", 4) == 4
    assert targets.pattern_value(None, "b.attn2.to_v", 4) == 4
    for name in ("pattern_value", "target_suffixes", "matches_suffix", "PRESETS"):
        assert getattr(inject, name) is getattr(targets, name)  # inject.X keeps working


def test_a_target_that_matches_nothing_lists_suffixes_that_do(unet):
    with pytest.raises(ValueError, match="matches no module") as error:
        inject.inject_lora(unet, r=2, target_modules=["attn9.to_q"])
    listed = str(error.value).split("include: ")[1].rstrip(".").split(", ")
    assert "attn2.to_out.0" in listed and "ff.net.0.proj" in listed
    # each one is a target that works
    assert all(inject.find_targets(unet, [suffix]) for suffix in listed)


def test_explicit_suffixes_and_the_same_modules_as_peft(unet, shared_pipe):
    names = inject.inject_lora(unet, r=2, target_modules=["attn2.to_k", "attn2.to_v"])
    assert len(names) == 32 and all(n.endswith(("attn2.to_k", "attn2.to_v")) for n in names)
    peft = pytest.importorskip("peft")
    theirs = copy.deepcopy(shared_pipe.unet)
    theirs.add_adapter(peft.LoraConfig(r=2, target_modules=["attn2.to_k", "attn2.to_v"]))
    wrapped = [n for n, m in theirs.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    assert wrapped == names


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
    down = [w for w in cfg.block_out_channels[:3] for _ in range(cfg.layers_per_block)]
    mid = [cfg.block_out_channels[-1]]
    up = [w for w in reversed(cfg.block_out_channels[:3]) for _ in range(cfg.layers_per_block + 1)]
    # q, out: w -> w; k, v: 768 -> w
    per_rank = sum(6 * w + 2 * cfg.cross_attention_dim for w in down + mid + up)
    assert per_rank == 99_456
    assert inject.lora_parameter_count(unet, r) == per_rank * r
    inject.inject_lora(unet, r=r)
    assert lora.count_parameters(unet) == per_rank * r


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
