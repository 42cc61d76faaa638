"""lorakit.claims.combining (claim 6): two LoRAs added into one, applied and merged alike, and
textual inversion training one row of the embedding table."""

import pytest
import torch

from lorakit import claims, inject, styles
from lorakit.claims import judging


def test_combined_state_adds_the_two_updates_with_their_scales():
    gen = torch.Generator().manual_seed(0)
    first = {
        "m.lora_A.weight": torch.randn(3, 5, generator=gen),
        "m.lora_B.weight": torch.randn(4, 3, generator=gen),
    }
    second = {
        "m.lora_A.weight": torch.randn(2, 5, generator=gen),
        "m.lora_B.weight": torch.randn(4, 2, generator=gen),
    }
    both = claims.combined_state(first, second, (0.25, 3.0))
    assert both["m.lora_A.weight"].shape == (5, 5)
    want = (
        0.25 * first["m.lora_B.weight"] @ first["m.lora_A.weight"]
        + 3.0 * second["m.lora_B.weight"] @ second["m.lora_A.weight"]
    )
    torch.testing.assert_close(both["m.lora_B.weight"] @ both["m.lora_A.weight"], want)


def test_claim_6_two_loras_applied_and_merged_draw_the_same(claims_pipe, unchanged):
    run = claims.two_loras(steps=1, pipe=claims_pipe, seeds=(0,))
    assert run["settings"]["steps"] == 1 and run["settings"]["r"] == 8
    unchanged.check()
    assert run["merged_vs_applied_max_pixel"] <= 2
    for name in ("outline alone", "striped alone", "together"):
        assert set(run[name]) >= {"outline", "striped"}
        assert 0.0 <= run[name]["striped"]["style"] <= 1.0


def test_claim_6_textual_inversion_trains_one_row_of_the_embedding_table(claims_pipe, unchanged):
    pipe = claims_pipe
    table = pipe.text_encoder.get_input_embeddings().weight
    row = pipe.tokenizer.convert_tokens_to_ids(claims.INVERSION_WORD + "</w>")
    with claims.restored(pipe):
        pipe.unet.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        table.requires_grad_(True)
        mask = torch.zeros_like(table)
        mask[row] = 1.0
        pairs = claims.pairs_set(
            styles.concept_examples(claims.INVERSION_WORD, "cross", 4, styles.CROSS_SEED)
        )
        claims.train_text_side(
            pipe, pairs, [{"params": [table], "lr": 1e-2}], 2, grad_mask={table: mask}
        )
        after = table.detach().clone()
    key = next(k for k, p in pipe.text_encoder.named_parameters() if p is table)
    changed = torch.nonzero(torch.any(after != unchanged.weights["text_encoder"][key], dim=1))
    assert changed.flatten().tolist() == [row]
    unchanged.check()
    run = claims.inversion_and_lora("inversion", steps=1, pipe=pipe, seeds=(0,))
    assert run["trainable_params"] == pipe.text_encoder.config.hidden_size
    assert 0.0 <= run["cross"] <= 1.0
    with pytest.raises(ValueError, match="inversion"):
        claims.inversion_and_lora("dreambooth", pipe=pipe)


def test_claim_6_at_scales_scale_0_draws_the_base_model(claims_pipe, unchanged):
    run = claims.two_loras_at_scales(steps=2, scales=(0.0, 1.0), pipe=claims_pipe, seeds=(0,))
    unchanged.check()
    base = judging.style_rates(claims_pipe, ("outline", "striped"), (0,))
    at_zero = run["together"]["0.0"]
    assert (at_zero["outline"], at_zero["striped"]) == (
        base["outline"]["style"],
        base["striped"]["style"],
    )
    assert run["settings"]["steps"] == 2 and set(run["alone"]) == {"outline", "striped"}
    assert run["alone_mean"] == pytest.approx(sum(run["alone"].values()) / 2)
    assert {k: run["alone_at"]["1.0"][k] for k in run["alone"]} == run["alone"]
    assert run["alone_at"]["0.0"]["mean"] == pytest.approx(
        (base["outline"]["style"] + base["striped"]["style"]) / 2
    )


def test_each_lora_alone_at_a_scale_keeps_its_own_half_scaled_and_zeroes_the_other(monkeypatch):
    loaded = []
    monkeypatch.setattr(inject, "load_lora_state_dict", lambda unet, s: loaded.append(s))
    rates = {"outline": 0.5, "striped": 0.25}
    monkeypatch.setattr(
        judging, "style_rates", lambda pipe, styles, seeds: {s: {"style": rates[s]} for s in styles}
    )
    a = {"m.lora_A.weight": torch.randn(2, 5), "m.lora_B.weight": torch.randn(3, 2)}
    b = {"m.lora_A.weight": torch.randn(2, 5), "m.lora_B.weight": torch.randn(3, 2)}
    pipe = type("Pipe", (), {"unet": None})()
    found = claims.alone_at(pipe, {"outline": a, "striped": b}, ("outline", "striped"), 0.7, (0,))
    assert found == {"outline": 0.5, "striped": 0.25, "mean": 0.375}
    first, second = (s["m.lora_B.weight"] for s in loaded)
    torch.testing.assert_close(
        first, torch.cat([0.7 * a["m.lora_B.weight"], 0 * b["m.lora_B.weight"]], 1)
    )
    torch.testing.assert_close(
        second, torch.cat([0 * a["m.lora_B.weight"], 0.7 * b["m.lora_B.weight"]], 1)
    )
