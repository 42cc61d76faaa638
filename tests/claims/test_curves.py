"""lorakit.claims.curves (claims 3 and 4 over training): one run read at several checkpoints, the
validation split kept apart from the judged one, and the UNet's dropout given back."""

import pytest
import torch
from torch import nn

from lorakit import claims, styles
from lorakit.claims import harness, judging


def test_a_curve_is_one_run_read_at_each_checkpoint(claims_pipe, unchanged, monkeypatch):
    seen = []
    real = harness.fit

    def spy(pipe, dataset, where, **kw):
        seen.append((len(dataset), where, kw["steps"], kw["output_dir"]))
        return real(pipe, dataset, where, **kw)

    monkeypatch.setattr(harness, "fit", spy)
    run = claims.learning_curve(
        "lora", checkpoints=(1, 3), size=2, forgetting=False, pipe=claims_pipe, r=2
    )
    unchanged.check()
    assert [s[:3] for s in seen] == [(2, "attn2+ff", 1), (2, "attn2+ff", 3)]
    assert seen[0][3] == seen[1][3]  # the second reading goes on from the first one's checkpoint
    first, second = run["curve"]
    assert (first["steps"], second["steps"]) == (1, 3)
    assert 0 < first["train_seconds"] < second["train_seconds"]
    assert {"style_rate", "content", "memorised"} <= set(second) and "plain_content" not in second
    assert run["settings"]["steps"] == 3 and run["settings"]["r"] == 2


def test_stop_at_ends_the_run_at_the_first_point_that_reaches_it(claims_pipe, unchanged):
    run = claims.learning_curve("full", checkpoints=(1, 2, 3), stop_at=(0.0, 0.0), pipe=claims_pipe)
    unchanged.check()
    assert [p["steps"] for p in run["curve"]] == [1]
    assert "plain_content" in run["curve"][0] and "memorised" not in run["curve"][0]
    assert run["settings"]["method"] == "full" and run["settings"]["lr"] == claims.FULL_LR


@pytest.mark.parametrize("checkpoints", [(), (0, 5), (5, 5), (10, 5)])
def test_checkpoints_must_rise(checkpoints):
    with pytest.raises(ValueError, match="each larger than the last"):
        claims.learning_curve(checkpoints=checkpoints, pipe=object())


def test_unknown_methods_and_splits_are_refused():
    with pytest.raises(ValueError, match="'lora' or 'full'"):
        claims.learning_curve("dora", pipe=object())
    with pytest.raises(ValueError, match="'validation'"):
        claims.learning_curve(split="train", pipe=object())


def test_the_validation_split_shares_no_prompt_and_no_seed_with_the_test():
    small = claims.validation_prompts(2)
    trained = {styles.style_caption("outline", c, s) for c, s in styles.OUTLINE_TRAIN[:8]}
    assert small and not set(small) & (set(styles.style_prompts()) | trained)
    assert claims.validation_prompts(16) == styles.style_prompts()
    assert not set(claims.VALIDATION_SEEDS) & set(judging.EVAL_SEEDS)


def test_unet_dropout_is_set_while_the_block_runs_and_given_back_after_an_error():
    unet = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0), nn.Sequential(nn.Dropout(0.2)))
    with pytest.raises(RuntimeError), claims.unet_dropout(unet, 0.5):
        assert [m.p for m in unet.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
        raise RuntimeError
    assert [m.p for m in unet.modules() if isinstance(m, nn.Dropout)] == [0.0, 0.2]
    with claims.unet_dropout(unet, None):
        assert unet[2][0].p == 0.2
    unet.train()
    with claims.unet_dropout(unet, 0.5):  # the layers really drop: about half the numbers
        zeroed = (unet[1](torch.ones(10_000)) == 0).float().mean()
    assert 0.45 < zeroed < 0.55


def test_first_reaching_needs_both_figures():
    curve = [
        {"steps": 10, "style_rate": 0.8, "content": 0.2},
        {"steps": 20, "style_rate": 0.7, "content": 0.9},
        {"steps": 30, "style_rate": 0.8, "content": 0.6},
    ]
    assert claims.first_reaching(curve, 0.75)["steps"] == 10
    assert claims.first_reaching(curve, 0.75, 0.5)["steps"] == 30
    assert claims.first_reaching(curve, 0.9) is None
