"""lorakit.claims.where (claim 1): each variant trains where it says and gives the pipeline back."""

import numpy as np
import pytest

from lorakit import claims, inject, models, styles


@pytest.mark.parametrize("variant", ["attn2", "full fine-tune"])
def test_claim_1_trains_where_it_says_and_gives_the_pipeline_back(claims_pipe, unchanged, variant):
    pipe = claims_pipe
    run = claims.where_lora_sits(variant, "concept", steps=1, pipe=pipe, seeds=(0,))
    assert run["settings"]["steps"] == 1 and run["settings"]["seed"] == 0
    unchanged.check()
    want = (
        sum(p.numel() for p in pipe.unet.parameters())
        if variant == "full fine-tune"
        else inject.lora_parameter_count(pipe.unet, 8, "attn2")
    )
    assert run["trainable_params"] == want
    figures = ("concept_shape", "concept_colour", "plain_content", "plain_outline")
    assert all(0.0 <= run[k] <= 1.0 for k in figures)
    with pytest.raises(ValueError, match="no variant"):
        claims.where_lora_sits("attn3", pipe=pipe)


def test_claim_1_control_word_is_read_beside_the_new_word(claims_pipe, unchanged):
    run = claims.word_run("attn2", r=2, steps=1, caption_dropout=0.0, pipe=claims_pipe, seeds=(0,))
    unchanged.check()
    assert run["specific"] == pytest.approx(run["word_shape"] - run["control_shape"])
    assert run["settings"]["caption_dropout"] == 0.0 and run["settings"]["r"] == 2
    assert claims.CONTROL_WORD in models.RESERVED_WORDS
    used = {styles.CONCEPT_WORD, claims.INVERSION_WORD, *styles.TRIGGERS.values()}
    assert claims.CONTROL_WORD not in used  # no set's caption has it
    base = claims.word_base(claims_pipe, seeds=(0,))
    assert set(base) == {"word_shape", "control_shape"}
    with pytest.raises(ValueError, match="no variant"):
        claims.word_run("attn3", pipe=claims_pipe)


def test_the_placements_picture_grid_has_a_row_a_placement_and_a_column_a_prompt(
    claims_pipe, unchanged, tmp_path, monkeypatch
):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "make_claim_pictures.py"
    spec = importlib.util.spec_from_file_location("make_claim_pictures", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = {}
    real = claims.word_pictures
    monkeypatch.setattr(
        claims, "word_pictures", lambda **kw: rows.setdefault(kw["variant"], real(**kw))
    )
    out = script.main(tmp_path / "grid.png", steps=2, pipe=claims_pipe)
    unchanged.check()
    assert out.stat().st_size > 0
    assert list(rows) == [None, "attn2", "attn1", "ff"]
    prompts = claims.concept_prompts() + claims.concept_prompts(claims.CONTROL_WORD)
    assert all(list(pictures) == prompts for pictures in rows.values())
    base = rows[None]
    assert any(not np.array_equal(np.asarray(rows["attn1"][p]), np.asarray(base[p])) for p in base)
    with pytest.raises(ValueError, match="no variant 'attn3'"):
        real("attn3", pipe=claims_pipe)
    fig = script.draw({"a": {"p": np.zeros((4, 4, 3))}, "b": {"p": np.ones((4, 4, 3))}})
    assert [ax.get_ylabel() for ax in fig.axes] == ["a", "b"]
