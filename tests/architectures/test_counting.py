"""LoRA parameters counted from the modules diffusers builds, by the formula r * (in + out) written
here, and against PEFT's own count of the trainable parameters it adds."""

import peft
import pytest
from torch import nn

from lorakit import architectures


def by_formula(model, suffixes, r):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(
            name == s or name.endswith("." + s) for s in suffixes
        ):
            total += r * (module.in_features + module.out_features)
    return total


@pytest.fixture(scope="module")
def meta_models():
    return {name: architectures.build(name) for name in architectures.ARCHITECTURES}


def test_each_row_is_the_formula_over_the_built_modules(meta_models):
    rows = architectures.lora_rows(meta_models, r=16)
    assert [(row.name, row.source.endswith(".py")) for row in rows] == [
        ("sd15", False),
        ("sdxl", False),
        ("sdxl", True),
        ("sd3", True),
        ("flux", True),
    ]
    for row in rows:
        model = meta_models[row.name]
        chosen = (
            architectures.SCRIPT_TARGETS
            if row.source.endswith(".py")
            else architectures.ARTICLE_TARGETS
        )
        assert row.parameters == by_formula(model, chosen[row.name][1], 16)
        assert row.parameters == sum(row.by_input.values())
        assert row.base_parameters == sum(p.numel() for p in model.parameters())
        assert row.megabytes(2) == row.parameters * 2 / 1e6


def test_the_streams_of_sd3_and_flux(meta_models):
    rows = {row.name: row for row in architectures.lora_rows(meta_models, r=4)}
    sd3, flux = meta_models["sd3"], meta_models["flux"]
    text = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
    assert rows["sd3"].by_input["text"] == by_formula(sd3, text, 4)
    assert rows["sd3"].by_input["both"] == 0
    single = [f"single_transformer_blocks.{i}.attn.to_{p}" for i in range(38) for p in "qkv"]
    assert rows["flux"].by_input["both"] == by_formula(flux, single, 4)
    assert rows["flux"].by_input["text"] == by_formula(
        flux, text + ("ff_context.net.0.proj", "ff_context.net.2"), 4
    )


@pytest.mark.parametrize("name", ["sdxl", "sd3", "flux"])
def test_peft_adds_as_many_trainable_parameters(name):
    model = architectures.build_tiny(name)
    ours = architectures.lora_rows({name: model}, r=2)[-1].parameters
    model.requires_grad_(False)
    suffixes = list(architectures.SCRIPT_TARGETS[name][1])
    peft.inject_adapter_in_model(peft.LoraConfig(r=2, target_modules=suffixes), model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ours
