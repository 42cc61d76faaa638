"""lorakit.claims: each claim's experiment on a tiny budget, and the pieces its figures rest on.

The figures themselves (what a LoRA learns in 300 steps) are the benchmark's (benchmarks/claims.py,
docs/claims.md); here every experiment runs a step or two, and the tests check what must hold at any
budget: the pipeline comes back exactly as it was, each method trains what it says and nothing else,
the bookkeeping (combined LoRAs, update ranks, memorisation, outcomes) is right, and the figures are
fractions of the pictures drawn.
"""

import json

import pytest
import torch

from lorakit import claims, config, inject, models, shapes, styles

ONE = (0,)  # one picture a prompt


@pytest.fixture(scope="module")
def pipe():
    return models.load_pipeline("tiny", dtype="float32")


def snapshot(pipe):
    return {
        name: {k: v.clone() for k, v in part.state_dict().items()}
        for name, part in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder))
    }


def assert_as_before(pipe, before):
    for name, part in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        now = part.state_dict()
        assert set(now) == set(before[name]), f"{name} has other modules than before"
        changed = [k for k in now if not torch.equal(now[k], before[name][k])]
        assert not changed, f"{name}: {changed[:3]} changed"
    assert (
        next(inject.lora_layers(pipe.unet), None) is None
        and next(inject.lora_layers(pipe.text_encoder), None) is None
    )


def rate(value):
    return 0.0 <= value <= 1.0


def test_restored_undoes_a_full_fine_tune_and_a_text_encoder_lora(pipe):
    before, flags = snapshot(pipe), {k: p.requires_grad for k, p in pipe.unet.named_parameters()}
    with claims.restored(pipe):
        with torch.no_grad():
            next(pipe.unet.parameters()).add_(1.0)
        inject.inject_lora(pipe.text_encoder, r=2, target_modules=list(claims.TEXT_TARGETS))
        pipe.unet.requires_grad_(False)
    assert_as_before(pipe, before)
    assert {k: p.requires_grad for k, p in pipe.unet.named_parameters()} == flags


@pytest.mark.parametrize("variant", ["attn2", "full fine-tune"])
def test_claim_1_trains_where_it_says_and_gives_the_pipeline_back(pipe, variant):
    before = snapshot(pipe)
    run = claims.where_lora_sits(variant, "concept", steps=1, pipe=pipe, seeds=ONE)
    assert_as_before(pipe, before)
    want = (
        sum(p.numel() for p in pipe.unet.parameters())
        if variant == "full fine-tune"
        else inject.lora_parameter_count(pipe.unet, 8, "attn2")
    )
    assert run["trainable_params"] == want
    assert all(
        rate(run[k]) for k in ("concept_shape", "concept_colour", "plain_content", "plain_outline")
    )
    with pytest.raises(ValueError, match="no variant"):
        claims.where_lora_sits("attn3", pipe=pipe)


def test_claims_2_and_3_count_the_file_and_adams_two_moments(pipe, tmp_path):
    run = claims.size_and_speed("lora", steps=1, pipe=pipe, output_dir=tmp_path)
    assert (
        run["optimizer_bytes"] == 2 * 4 * run["trainable_params"]
    )  # exp_avg and exp_avg_sq, float32
    assert run["file_bytes"] == (tmp_path / "lora.safetensors").stat().st_size
    assert run["trainable_params"] == inject.lora_parameter_count(pipe.unet, 8, "attn2+ff")


def test_memorisation_is_one_for_the_training_pictures_themselves():
    pictures = [
        shapes.render(spec, styles.OUTLINE_RESOLUTION) for spec, _ in styles.outline_examples()[:4]
    ]
    assert claims.memorisation(pictures, 4) == pytest.approx(1.0)
    blank = [shapes.render(shapes.sample_spec(0, 5, shape="square"), styles.OUTLINE_RESOLUTION)]
    assert claims.memorisation(blank, 4) < 1.0


def test_claim_4_trains_on_the_first_pictures_only(pipe, monkeypatch):
    seen = []
    real = claims.fit
    monkeypatch.setattr(
        claims,
        "fit",
        lambda p, dataset, *a, **k: (
            seen.append([t for _, t in dataset]) or real(p, dataset, *a, **k)
        ),
    )
    before = snapshot(pipe)
    run = claims.small_data("full", size=2, steps=1, pipe=pipe, seeds=ONE)
    assert_as_before(pipe, before)
    assert seen == [[text for _, text in styles.outline_examples()[:2]]]
    assert run["lr"] == claims.FULL_LR and run["r"] is None
    assert all(rate(run[k]) for k in ("style_rate", "content", "plain_content", "memorised"))
    with pytest.raises(ValueError, match="has 16 pictures"):
        claims.style_set(size=17)


def test_claim_5_the_text_encoder_lora_trains_the_text_encoder_alone(pipe, monkeypatch):
    before = snapshot(pipe)
    trained = {}
    real = claims.train_text_side

    def spy(p, dataset, groups, *args, **kwargs):
        history = real(p, dataset, groups, *args, **kwargs)
        trained["text_encoder"] = {k: v.clone() for k, v in p.text_encoder.state_dict().items()}
        trained["unet"] = {k: v.clone() for k, v in p.unet.state_dict().items()}
        return history

    monkeypatch.setattr(claims, "train_text_side", spy)
    run = claims.text_encoder_lora(steps=2, pipe=pipe, seeds=ONE)
    assert_as_before(pipe, before)
    assert all(torch.equal(v, before["unet"][k]) for k, v in trained["unet"].items()), (
        "the UNet must not change"
    )
    moved = [k for k, v in trained["text_encoder"].items() if ".lora_B." in k and torch.any(v != 0)]
    assert moved and all(k.split(".lora_")[0].endswith(claims.TEXT_TARGETS) for k in moved)
    assert run["trainable_params"] == sum(
        v.numel() for k, v in trained["text_encoder"].items() if ".lora_" in k
    )


def test_claim_5_the_classifier_is_adapted_by_the_same_inject_lora():
    study = claims.classifier_study(seed=0, r=2)
    assert study["base"]["names"] > 0.95  # it learnt its first task
    linears = [(32, 64), (64, 64), (64, 3)]
    assert study["lora"]["trainable_params"] == sum(2 * (i + o) for i, o in linears)
    assert study["head only"]["trainable_params"] == 64 * 3 + 3
    assert study["full"]["trainable_params"] == study["base"]["trainable_params"]
    for how in ("lora", "full"):
        assert study[how]["corners"] > study["base"]["corners"], how  # the shifted task is learnt


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


def test_claim_6_two_loras_applied_and_merged_draw_the_same(pipe):
    before = snapshot(pipe)
    run = claims.two_loras(steps=1, pipe=pipe, seeds=ONE)
    assert_as_before(pipe, before)
    assert run["merged_vs_applied_max_pixel"] <= 2
    for name in ("outline alone", "striped alone", "together"):
        assert set(run[name]) >= {"outline", "striped"} and rate(run[name]["striped"]["style"])


def test_claim_6_textual_inversion_trains_one_row_of_the_embedding_table(pipe):
    table = pipe.text_encoder.get_input_embeddings().weight
    row = pipe.tokenizer.convert_tokens_to_ids(claims.INVERSION_WORD + "</w>")
    before = snapshot(pipe)
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
    changed = torch.nonzero(torch.any(after != before["text_encoder"][key], dim=1))
    assert changed.flatten().tolist() == [row]
    assert_as_before(pipe, before)
    run = claims.inversion_and_lora("inversion", steps=1, pipe=pipe, seeds=ONE)
    assert run["trainable_params"] == pipe.text_encoder.config.hidden_size and rate(run["cross"])
    with pytest.raises(ValueError, match="inversion"):
        claims.inversion_and_lora("dreambooth", pipe=pipe)


def test_claim_7_one_lora_sees_every_style_under_its_trigger(pipe, monkeypatch):
    seen = []
    real = claims.fit
    monkeypatch.setattr(
        claims, "fit", lambda p, dataset, *a, **k: seen.append(dataset) or real(p, dataset, *a, **k)
    )
    run = claims.many_styles(3, r=1, steps_per_style=1, pipe=pipe, seeds=ONE)
    triggers = {text.split(" in ")[1] for _, text in seen[0]}
    assert len(seen[0]) == 48 and triggers == {
        f"{styles.TRIGGERS[s]} style" for s in claims.STYLE_ORDER
    }
    assert run["steps"] == 3 and set(run["styles"]) == set(claims.STYLE_ORDER)
    with pytest.raises(ValueError, match="count is 1 to 3"):
        claims.many_styles(4, pipe=pipe)


def test_update_ranks_reads_the_rank_of_a_known_update():
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Linear(30, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model[0].weight += torch.randn(30, 2, generator=gen) @ torch.randn(
            2, 20, generator=gen
        )  # rank 2
    rows = claims.update_ranks(before, model, fraction=0.999)
    assert [{k: v for k, v in row.items() if k != "noise_rank"} for row in rows] == [
        {"name": "0.weight", "shape": [30, 20], "max_rank": 20, "rank": 2}
    ]  # the unchanged layer is left out
    assert rows[0]["noise_rank"] > 10  # no structure: most of the rank is needed


def test_claim_8_a_full_fine_tune_reports_the_rank_of_every_changed_layer(pipe):
    run = claims.large_change("full fine-tune", steps=1, pipe=pipe, seeds=ONE)
    linears = {
        f"{n}.weight" for n, m in pipe.unet.named_modules() if isinstance(m, torch.nn.Linear)
    }
    assert {row["name"] for row in run["update_ranks"]} <= linears and len(
        run["update_ranks"]
    ) > 100
    assert all(1 <= row["rank"] <= row["max_rank"] for row in run["update_ranks"])
    assert rate(run["cross"]) and run["r"] is None


def test_claim_9_names_each_outcome():
    ok = {"diverged": False, "plain_content": 1.0}
    assert claims.outcome(ok | {"style_rate": 0.8, "content": 0.9}) == "style learned"
    assert claims.outcome(ok | {"style_rate": 0.1, "content": 0.9}) == "nothing learned"
    assert claims.outcome(ok | {"style_rate": 0.5, "content": 0.9}) == "partial"
    assert (
        claims.outcome(ok | {"style_rate": 0.8, "content": 0.9, "plain_content": 0.4}) == "partial"
    )  # it broke plain prompts
    assert (
        claims.outcome({"diverged": False, "style_rate": 0.5, "content": 0.1, "plain_content": 0.2})
        == "content destroyed"
    )
    assert claims.outcome({"diverged": True}) == "NaN"


def test_claim_9_a_huge_learning_rate_is_named_and_leaves_the_model_alone(pipe):
    before = snapshot(pipe)
    run = claims.sensitivity(lr=1e6, steps=3, pipe=pipe, seeds=ONE)
    assert_as_before(pipe, before)
    assert run["outcome"] in ("NaN", "content destroyed") and run["lr_x_scaling"] == 1e6


def test_published_tables_name_the_command_that_makes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "PUBLISHED_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="--claim 7"):
        claims.published_table(7)
    printed = (
        '  many_styles {"count": 1} -> {"r": 1}\n\nclaim 7, several styles\nstyles  r1\n'
        '  vae_ceiling {"style": "outline"} -> {"pictures": 16}\noutline 80%\n'
    )
    (tmp_path / "claim7.json").write_text(json.dumps({"table": claims.table_of(printed)}))
    assert claims.published_table(7) == "claim 7, several styles\nstyles  r1\noutline 80%"
    assert claims.published_name(3) == claims.published_name(2) == "claim2-3.json"
    with pytest.raises(ValueError, match="claims 1 to 9"):
        claims.published_name(10)


def test_the_vae_keeps_every_style_set(pipe):
    """The ceiling of claims 6 and 7: the UNet draws latents, and the VAE decodes what it can. Every style set
    survives it (the striped and double styles are drawn large, with strokes a latent wide), so a LoRA's style
    rate on them measures the LoRA, not the VAE. The thin strokes lose some colour: content is the lower ceiling."""
    outline, striped, double = (
        claims.vae_ceiling(s, pipe) for s in ("outline", "striped", "double")
    )
    assert outline["style_rate"] == 1.0 and outline["pictures"] == 16
    assert striped["style_rate"] >= 0.9 and double["style_rate"] >= 0.9
    assert min(striped["content"], double["content"]) >= 0.75
    with pytest.raises(ValueError, match="no style set"):
        claims.vae_ceiling("cross", pipe)


def test_every_claim_is_published_over_four_training_seeds_and_shown_in_docs():
    """docs/claims.md shows each claim's published table as the benchmark printed it (claims 2-3: as a markdown
    table, with the same parameter counts), over at least 4 training seeds."""
    page = (config.REPO_ROOT / "docs" / "claims.md").read_text()
    for claim in (1, 2, 4, 5, 6, 7, 8, 9):
        report = json.loads((claims.PUBLISHED_DIR / claims.published_name(claim)).read_text())
        assert len(set(report["train_seeds"])) >= 4, (claim, report["train_seeds"])
        assert f"--train-seeds {' '.join(map(str, report['train_seeds']))}" in report["command"], (
            claim
        )
        if claim == 2:
            counts = next(
                line
                for line in report["table"].splitlines()
                if line.startswith("trainable parameters")
            )
            assert f"| trainable parameters | {counts.split()[2]} | {counts.split()[3]} |" in page
        else:
            assert report["table"] in page, (
                f"docs/claims.md does not show claim {claim}'s published table"
            )
