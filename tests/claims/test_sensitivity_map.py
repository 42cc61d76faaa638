"""lorakit.claims.sensitivity_map (claim 9): each outcome named, a diverged run kept."""

from lorakit import claims


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


def test_claim_9_a_huge_learning_rate_is_named_and_leaves_the_model_alone(claims_pipe, unchanged):
    run = claims.sensitivity(lr=1e6, steps=3, pipe=claims_pipe, seeds=(0,))
    assert run["settings"]["lr"] == 1e6 and run["settings"]["steps"] == 3  # diverged: still said
    unchanged.check()
    assert run["outcome"] in ("NaN", "content destroyed") and run["lr_x_scaling"] == 1e6
