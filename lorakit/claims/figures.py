"""The benchmark's published figures: what ``python -m benchmarks.claims --publish`` wrote.

Introduced in notebooks/09_claims_advantages.ipynb.

A lesson runs each claim's experiment in small; the figures over four training seeds and full
budgets are the benchmark's, one JSON a claim in ``docs/claims/`` (every run, the command and the
table it printed). :func:`published_table` reads a claim's table back, :func:`table_of` cuts it
from what the benchmark printed, and :func:`published_name` names the file (claims 2 and 3 are one
experiment).

Left out: running the benchmark (``benchmarks/claims.py``), the verdicts (docs/claims.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lorakit import config as course

__all__ = [
    "PUBLISHED_DIR",
    "STUDY_FILES",
    "published",
    "published_name",
    "published_path",
    "published_table",
    "table_of",
]

# the benchmark's runs and tables: a JSON a claim
PUBLISHED_DIR = course.REPO_ROOT / "docs" / "claims"


# the controlled studies of ``benchmarks.controls`` (--study), and their files
STUDY_FILES = {
    "rank": "rank-study.json",
    "truncation": "claim8-truncation.json",
    "scales": "claim6-scales.json",
    "lrgrid": "rank-lr-grid.json",
    "complex": "claim7-control.json",
    "placement": "claim1-control.json",
    "speed": "claim3-control.json",
    "overfit": "claim4-control.json",
}


def published_name(claim: int | str) -> str:
    """The file a claim's benchmark writes in ``PUBLISHED_DIR``: claims 2 and 3 are one
    experiment; a controlled study (``STUDY_FILES``) has its own."""
    if str(claim) in STUDY_FILES:
        return STUDY_FILES[str(claim)]
    label = "2-3" if str(claim) in ("2", "3", "2-3") else str(claim)
    if label not in ("1", "2-3", *map(str, range(4, 10))):
        raise ValueError(f"the article has claims 1 to 9, not {claim!r}.")
    return f"claim{label}.json"


def published_path(claim: int | str) -> Path:
    """Where ``claim``'s report is, or goes: ``PUBLISHED_DIR`` / :func:`published_name`."""
    return PUBLISHED_DIR / published_name(claim)


def table_of(printed: str) -> str:
    """The table part of what ``benchmarks.claims`` printed: from its "claim N" heading on (no
    per-run lines)."""
    match = re.search(r"^(claims? \d|the rank study).*", printed, re.MULTILINE | re.DOTALL)
    lines = match.group(0).rstrip().splitlines() if match else []
    # without a run's own line
    return "\n".join(line for line in lines if not re.match(r"  \w+ \{.*\} -> ", line))


def published(claim: int | str) -> dict:
    """The benchmark's report for ``claim`` (every run's figures, and its printed ``table``) in
    docs/claims/.

    Raises FileNotFoundError, saying which command measures it, when that claim has not been
    published.
    """
    path = published_path(claim)
    if not path.is_file():
        command = (
            f"python -m benchmarks.controls --study {claim} --publish"
            if str(claim) in STUDY_FILES
            else f"python -m benchmarks.claims --claim {claim} --train-seeds 0 1 2 3 --publish"
        )
        raise FileNotFoundError(
            f"{claim} has no published figures ({path.name} is not in docs/claims/): {command}"
        )
    return json.loads(path.read_text())


def published_table(claim: int | str) -> str:
    """The table ``python -m benchmarks.claims --claim N --publish`` printed, over its training
    seeds."""
    return published(claim)["table"]
