"""benchmarks/published_settings.py: the settings it gives the first published runs are those the
experiments record today for the same arguments, and a run that has its settings keeps them."""

import copy

import pytest

from benchmarks import published_settings as backfill
from lorakit import claims


@pytest.mark.parametrize(
    ("claim", "run", "live"),
    [
        (
            "9",
            {"r": 2, "alpha": 1, "lr": 1e6, "seed": 3, "steps": 3},
            lambda pipe: claims.sensitivity(lr=1e6, r=2, alpha=1, seed=3, steps=3, pipe=pipe),
        ),
        (
            "1",
            {"variant": "attn1", "task": "concept", "seed": 1, "steps": 1},
            lambda pipe: claims.where_lora_sits("attn1", "concept", seed=1, steps=1, pipe=pipe),
        ),
        (
            "4",
            {"method": "lora", "size": 2, "seed": 2, "steps": 1, "r": 2, "lr": 3e-3},
            lambda pipe: claims.small_data(
                "lora", size=2, seed=2, steps=1, lr=3e-3, r=2, pipe=pipe
            ),
        ),
    ],
)
def test_derived_settings_are_what_the_experiment_records(claim, run, live, claims_pipe):
    recorded = live(claims_pipe)["settings"]
    assert backfill.settings_for(claim, run) == recorded


def test_runs_that_have_settings_keep_them_and_the_rest_are_marked(tmp_path):
    report = {
        "runs": [
            {"r": 2, "alpha": 1, "lr": 1e-3, "seed": 0, "steps": 150},
            {"r": 2, "alpha": 1, "lr": 1e-3, "seed": 1, "steps": 150, "settings": {"kept": 1}},
        ]
    }
    before = copy.deepcopy(report)
    assert backfill.complete("9", report) == 1
    assert report["runs"][1] == before["runs"][1]
    first = report["runs"][0]
    assert first["settings_derived"] is True
    assert (first["settings"]["alpha"], first["settings"]["scaling"]) == (1, 0.5)
    assert backfill.complete("9", report) == 0  # a second pass changes nothing


def test_every_published_run_of_the_first_claims_has_its_settings():
    for claim in ("1", "2-3", "4", "5", "6", "7", "8", "9"):
        report = claims.published(claim)
        missing = [run for run in report["runs"] + report.get("sweep", []) if "settings" not in run]
        trained = [run for run in missing if "steps" in run or "r" in run]
        assert not trained, f"claim {claim}: {len(trained)} runs without settings"
