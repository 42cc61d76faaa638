"""lorakit.claims.overfitting (claim 4): memorisation, and training on the first pictures only."""

import pytest

from lorakit import claims, shapes, styles
from lorakit.claims import harness


def test_memorisation_is_one_for_the_training_pictures_themselves():
    pictures = [
        shapes.render(spec, styles.OUTLINE_RESOLUTION) for spec, _ in styles.outline_examples()[:4]
    ]
    assert claims.memorisation(pictures, 4) == pytest.approx(1.0)
    blank = [shapes.render(shapes.sample_spec(0, 5, shape="square"), styles.OUTLINE_RESOLUTION)]
    assert claims.memorisation(blank, 4) < 1.0


def test_claim_4_trains_on_the_first_pictures_only(claims_pipe, unchanged, monkeypatch):
    seen = []
    real = harness.fit

    def spy(p, dataset, *args, **kwargs):
        seen.append([t for _, t in dataset])
        return real(p, dataset, *args, **kwargs)

    monkeypatch.setattr(harness, "fit", spy)
    run = claims.small_data("full", size=2, steps=1, pipe=claims_pipe, seeds=(0,))
    assert run["settings"]["method"] == "full" and run["settings"]["lr"] == claims.FULL_LR
    unchanged.check()
    assert seen == [[text for _, text in styles.outline_examples()[:2]]]
    assert run["lr"] == claims.FULL_LR and run["r"] is None
    assert all(
        0.0 <= run[k] <= 1.0 for k in ("style_rate", "content", "plain_content", "memorised")
    )
    with pytest.raises(ValueError, match="has 16 pictures"):
        claims.style_set(size=17)
