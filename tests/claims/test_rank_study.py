"""lorakit.claims.rank_study: the three conventions for alpha, checked against PEFT's scaling, and
one run of the study."""

import math

import peft
import pytest
import torch

from lorakit import claims, inject
from lorakit.claims import judging


@pytest.mark.parametrize("r", [1, 4, 16])
def test_each_convention_gives_peft_s_scaling(r):
    anchor = claims.ANCHOR_RANK
    wanted = {
        "alpha = r": peft.LoraConfig(r=r, lora_alpha=r, target_modules=["0"]),
        "fixed alpha": peft.LoraConfig(r=r, lora_alpha=anchor, target_modules=["0"]),
        "rsLoRA": peft.LoraConfig(
            r=r, lora_alpha=math.sqrt(anchor), use_rslora=True, target_modules=["0"]
        ),
    }
    for convention, config in wanted.items():
        model = torch.nn.Sequential(torch.nn.Linear(32, 32))
        layer = peft.get_peft_model(model, config).base_model.model[0]
        assert claims.alpha_for(convention, r) / r == pytest.approx(layer.scaling["default"])


def test_the_conventions_agree_at_the_anchor_and_part_as_r_grows():
    at_anchor = {c: claims.alpha_for(c, claims.ANCHOR_RANK) for c in claims.CONVENTIONS}
    assert set(at_anchor.values()) == {float(claims.ANCHOR_RANK)}
    # alpha = scaling x r at r 16 against r 1: the step in W grows with r only under alpha = r
    growth = {c: claims.alpha_for(c, 16) / claims.alpha_for(c, 1) for c in claims.CONVENTIONS}
    assert growth == pytest.approx({"alpha = r": 16.0, "fixed alpha": 1.0, "rsLoRA": 4.0})
    with pytest.raises(ValueError, match="no convention"):
        claims.alpha_for("alpha = 2r", 4)


def test_lora_update_ratios_are_the_update_norm_over_the_weight_norm():
    model = torch.nn.Sequential(torch.nn.Linear(8, 6))
    inject.inject_lora(model, r=2, alpha=4, target_modules=["0"])
    layer = model[0]
    torch.nn.init.normal_(layer.lora_B.weight)
    with torch.no_grad():
        want = (
            2.0 * layer.lora_B.weight @ layer.lora_A.weight
        ).norm() / layer.base_layer.weight.norm()
    (row,) = claims.lora_update_ratios(model)
    assert row["name"] == "0" and row["ratio"] == pytest.approx(float(want))


def test_a_rank_run_trains_and_records_the_convention_s_scaling(
    claims_pipe, unchanged, monkeypatch
):
    live = []
    real = judging.style_rates

    def spy(pipe, *args, **kwargs):  # the LoRA layers in place when the style is read
        live.extend(layer.scaling for _, layer in inject.lora_layers(pipe.unet))
        return real(pipe, *args, **kwargs)

    monkeypatch.setattr(judging, "style_rates", spy)
    run = claims.rank_run(r=2, convention="rsLoRA", steps=1, pipe=claims_pipe, seeds=(0,))
    unchanged.check()
    want = math.sqrt(claims.ANCHOR_RANK) / math.sqrt(2)
    assert live and all(s == pytest.approx(want) for s in live)
    settings = run["settings"]
    assert settings["r"] == 2 and settings["alpha"] == pytest.approx(math.sqrt(8))
    assert settings["scaling"] == pytest.approx(want)
    assert settings["targets"] == "attn2+ff" and settings["steps"] == 1
    assert {"method", "lr", "lora_dropout", "weight_decay", "seed"} <= set(settings)
    assert 0.0 <= run["style_rate"] <= 1.0 and run["update_ratio_median"] > 0


def test_settings_name_the_targets_a_run_was_given(claims_pipe):
    ff = claims.config(target_modules=list(claims.WHERE["ff"]))
    assert claims.settings_of(ff, claims.WHERE["ff"])["targets"] == list(claims.WHERE["ff"])
    every = claims.config(target_modules=claims.unet_targets(claims_pipe, "linear"))
    assert claims.settings_of(every, "linear")["targets"] == "every linear"
    full = claims.config(method="full")
    assert claims.settings_of(full, "full")["targets"] == "every UNet weight"
    assert claims.settings_of(full, "full")["r"] is None
    assert claims.settings_of(full, "full")["caption_dropout"] == 0.3  # the small preset's
    quiet = claims.config(caption_dropout=0.0, lora_dropout=0.0)
    assert (
        claims.settings_of(quiet)["caption_dropout"],
        claims.settings_of(quiet)["lora_dropout"],
    ) == (0.0, 0.0)
