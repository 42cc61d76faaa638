"""lorakit.claims.large_changes (claim 8): the rank of an update, read right."""

import torch

from lorakit import claims


def test_update_ranks_reads_the_rank_of_a_known_update():
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Linear(30, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # rank 2
        model[0].weight += torch.randn(30, 2, generator=gen) @ torch.randn(2, 20, generator=gen)
    rows = claims.update_ranks(before, model, fraction=0.999)
    assert [{k: v for k, v in row.items() if k != "noise_rank"} for row in rows] == [
        {"name": "0.weight", "shape": [30, 20], "max_rank": 20, "rank": 2}
    ]  # the unchanged layer is left out
    assert rows[0]["noise_rank"] > 10  # no structure: most of the rank is needed


def test_claim_8_a_full_fine_tune_reports_the_rank_of_every_changed_layer(claims_pipe):
    run = claims.large_change("full fine-tune", steps=1, pipe=claims_pipe, seeds=(0,))
    assert run["settings"]["method"] == "full" and run["settings"]["r"] is None
    linears = {
        f"{n}.weight" for n, m in claims_pipe.unet.named_modules() if isinstance(m, torch.nn.Linear)
    }
    assert {row["name"] for row in run["update_ranks"]} <= linears
    assert len(run["update_ranks"]) > 100
    assert all(1 <= row["rank"] <= row["max_rank"] for row in run["update_ranks"])
    assert 0.0 <= run["cross"] <= 1.0 and run["r"] is None
