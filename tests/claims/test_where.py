"""lorakit.claims.where (claim 1): each variant trains where it says and gives the pipeline back."""

import pytest

from lorakit import claims, inject, models, styles


@pytest.mark.parametrize("variant", ["attn2", "full fine-tune"])
def test_claim_1_trains_where_it_says_and_gives_the_pipeline_back(claims_pipe, unchanged, variant):
    pipe = claims_pipe
    run = claims.where_lora_sits(variant, "concept", steps=1, pipe=pipe, seeds=(0,))
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
