"""lorakit.claims.figures: the published tables, read back and shown in docs/claims.md."""

import json

import pytest

from lorakit import claims, config
from lorakit.claims import figures


def test_published_tables_name_the_command_that_makes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "PUBLISHED_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="--claim 7"):
        claims.published_table(7)
    printed = (
        '  many_styles {"count": 1} -> {"r": 1}\n\nclaim 7, several styles\nstyles  r1\n'
        '  vae_ceiling {"style": "outline"} -> {"pictures": 16}\noutline 80%\n'
    )
    (tmp_path / "claim7.json").write_text(json.dumps({"table": claims.table_of(printed)}))
    assert claims.published_table(7) == "claim 7, several styles\nstyles  r1\noutline 80%"
    assert claims.published_name(3) == claims.published_name(2) == "claim2-3.json"
    assert claims.published_path(3) == tmp_path / "claim2-3.json"
    with pytest.raises(ValueError, match="claims 1 to 9"):
        claims.published_name(10)
    with pytest.raises(FileNotFoundError, match="benchmarks.controls --study rank"):
        claims.published("rank")
    assert claims.published_name("truncation") == "claim8-truncation.json"
    assert (
        claims.table_of("  rank_run {} -> {}\n\nthe rank study: x\nrow") == "the rank study: x\nrow"
    )


def test_every_claim_is_published_over_four_training_seeds_and_shown_in_docs():
    """docs/claims.md shows each claim's published table as the benchmark printed it (claims 2-3:
    as a markdown table, with the same parameter counts), over at least 4 training seeds."""
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


PUBLISHED_STUDIES = (
    "rank",
    "lrgrid",
    "truncation",
    "scales",
    "complex",
    "placement",
    "speed",
    "overfit",
)  # benchmarks.controls studies whose reports the course shows


@pytest.mark.parametrize("study", PUBLISHED_STUDIES)
def test_each_controlled_study_is_shown_as_published_and_its_verdicts_recompute(study):
    """docs/claims.md shows the study's table as printed; every comparison's interval and verdict
    follow from its differences and the threshold the report names, and every run records its
    settings."""
    page = (config.REPO_ROOT / "docs" / "claims.md").read_text()
    report = claims.published(study)
    assert report["table"] in page, f"docs/claims.md does not show the {study} study's table"
    assert len(report["train_seeds"]) >= 4 and "--reuse" not in report["command"]
    for row in report["comparisons"]:
        again = claims.t_interval(row["differences"])
        assert row["t"] == pytest.approx([again.mean, again.low, again.high])
        threshold = report["thresholds"][row["threshold"]]
        kind = threshold.get("kind", "at least")
        assert row["verdict"] == claims.verdict(
            again, claims.Threshold(threshold["margin"], threshold["measures"], kind)
        )
    runs = [
        c["result"]
        for c in report["calls"]
        if isinstance(c["result"], dict) and "settings" in c["result"]
    ]
    assert runs and all({"method", "lr", "steps", "seed"} <= set(r["settings"]) for r in runs)
