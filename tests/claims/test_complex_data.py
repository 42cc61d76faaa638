"""lorakit.claims.complex_data (claim 7): one LoRA sees every style, each under its trigger."""

import pytest

from lorakit import claims, shapes, styles
from lorakit.claims import harness


def test_claim_7_one_lora_sees_every_style_under_its_trigger(claims_pipe, monkeypatch):
    seen = []
    real = harness.fit

    def spy(p, dataset, *args, **kwargs):
        seen.append(dataset)
        return real(p, dataset, *args, **kwargs)

    monkeypatch.setattr(harness, "fit", spy)
    run = claims.many_styles(3, r=1, steps_per_style=1, pipe=claims_pipe, seeds=(0,))
    triggers = {text.split(" in ")[1] for _, text in seen[0]}
    assert len(seen[0]) == 48 and triggers == {
        f"{styles.TRIGGERS[s]} style" for s in claims.STYLE_ORDER
    }
    assert run["steps"] == 3 and set(run["styles"]) == set(claims.STYLE_ORDER)
    with pytest.raises(ValueError, match="count is 1 to 3"):
        claims.many_styles(4, pipe=claims_pipe)
    with pytest.raises(ValueError, match="'lora' or 'full'"):
        claims.many_styles(2, pipe=claims_pipe, method="dora")


def test_claim_7_control_a_full_fine_tune_and_which_style_each_trigger_draws(
    claims_pipe, unchanged
):
    run = claims.many_styles(2, steps_per_style=1, pipe=claims_pipe, seeds=(0,), method="full")
    unchanged.check()
    assert run["method"] == "full" and run["r"] is None
    assert run["settings"]["targets"] == "every UNet weight"
    for style in claims.STYLE_ORDER[:2]:
        drawn = {k: v for k, v in run["confusion"][style].items() if k != "content"}
        assert sum(drawn.values()) == pytest.approx(1.0)  # every picture read as one style
        assert set(drawn) <= {*shapes.ALL_STYLES, "none"}
        assert run["styles"][style]["style"] == drawn.get(style, 0.0)
