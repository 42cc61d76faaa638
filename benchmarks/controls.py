"""The controlled studies behind the claims' verdicts:
``python -m benchmarks.controls --study rank``.

Each study trains with ``lorakit.claims`` (every run in a fresh process, as ``benchmarks.claims``
does), pairs its runs by training seed, and prints each comparison's mean difference, its 95 %
interval (Student's t with n - 1 degrees of freedom; a bootstrap beside it) and the verdict read
off the interval against the threshold in ``THRESHOLDS``, which was set before the runs. Studies:

* **rank**: the outline LoRA at ranks ``--ranks`` under three conventions for alpha (``alpha = r``,
  a fixed alpha, rsLoRA; ``claims.rank_study``): is it the rank or the step that draws the style?
* **truncation** (claim 8): a full fine-tune's update on the cross cut by SVD to rank k, on the
  linear layers or on the linear layers and convolutions, beside a trained rank-8 LoRA on every
  linear layer (``claims.truncated_update``).
* **scales** (claim 6): the outline and striped LoRAs applied together at the scales people use
  (``claims.two_loras_at_scales``), and each alone at the same scale.
* **lrgrid**: a learning rate a rank (``alpha = r``), chosen on two training seeds from a grid in
  factors of 2, then rank 16 against rank 1 on the other seeds.
* **placement** (claim 1): "vex" taught on ``attn2``, ``attn1`` and ``ff`` at about equal trainable
  numbers, against a control word no caption has, and on ``attn2`` without caption dropout.
* **complex** (claim 7): one LoRA and a full fine-tune on one style and on three, and which style
  each trigger draws (``claims.many_styles``).
* **speed** (claim 3) and **overfit** (claim 4): learning curves from checkpoints, each method at
  a learning rate chosen on a validation split (``benchmarks.curve_studies``).

Every finished run is written at once to ``--journal`` (by default
runs/controls/<study>.journal.json), so a stopped study resumes where it stopped (the journal's runs
are reused); ``--publish`` writes the runs and the tables to docs/claims/. A published report is not
read back unless ``--reuse`` names it (the learning-rate grid takes the rank study's runs at the
preset's 1e-3). The studies' code is in ``benchmarks.rank_studies``, ``benchmarks.claim_studies``
and ``benchmarks.curve_studies``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

from benchmarks import _common, claim_studies, curve_studies, rank_studies
from benchmarks import claim_runs as runner
from benchmarks.verdicts import THRESHOLDS
from lorakit import claims, files
from lorakit import config as course

STUDIES = ("rank", "truncation", "scales", "lrgrid", "complex", "placement", "speed", "overfit")
RUNS = {
    "rank": rank_studies.study_rank,
    "truncation": claim_studies.study_truncation,
    "scales": claim_studies.study_scales,
    "lrgrid": rank_studies.study_lrgrid,
    "complex": claim_studies.study_complex,
    "placement": claim_studies.study_placement,
    "speed": curve_studies.study_speed,
    "overfit": curve_studies.study_overfit,
}


def options(parser) -> None:
    """The command line's options."""
    parser.add_argument("--study", choices=STUDIES, required=True)
    parser.add_argument(
        "--train-seeds", type=int, nargs="+", help="default: 0-5 for rank and lrgrid, 0-3 otherwise"
    )
    parser.add_argument("--steps", type=int, help="rank: 150; truncation and scales: 300")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16], help="rank study")
    parser.add_argument("--steps-per-style", type=int, default=250, help="complex study")
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[0.5, 0.7, 1.0],
        help="scales study: each LoRA's scale when applied together",
    )
    parser.add_argument(
        "--journal",
        help="every finished run, written as it finishes, and taken from there when the study "
        "runs again (default: runs/controls/<study>.journal.json)",
    )
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="JSON",
        help="other reports or journals whose runs to take instead of training them",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(curve_studies.OVERFITS),
        help="overfit: the methods to run (default: all four)",
    )
    parser.add_argument("--publish", action="store_true", help="write the tables to docs/claims/")


def journal_and_reuse(args) -> Path:
    """Where the study's runs are journalled; the runs already known (the journal's, ``--reuse``'s,
    and for the learning-rate grid the rank study's) go into ``REUSE``, not to be trained again."""
    path = Path(
        args.journal or course.REPO_ROOT / "runs" / "controls" / f"{args.study}.journal.json"
    )
    known = [*args.reuse, path]
    if args.study == "lrgrid":  # its runs at the preset's 1e-3 are the rank study's
        known.append(claims.published_path("rank"))
    for found in map(Path, known):
        if found.exists():
            runner.reuse(found)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__)
    options(parser)
    args = parser.parse_args(argv)
    steps = {"rank": 150, "lrgrid": 150, "placement": 100, "speed": 200, "overfit": 200}
    args.steps = args.steps or steps.get(args.study, 300)
    seeds = {"rank": 6, "lrgrid": 6, "speed": 5, "overfit": 5}.get(args.study, 4)
    args.train_seeds = args.train_seeds or list(range(seeds))
    if len(set(args.train_seeds)) != len(args.train_seeds):
        parser.error(f"--train-seeds {args.train_seeds} repeats a seed: give each once.")
    if args.study in ("speed", "overfit") and len(args.train_seeds) < 3:
        parser.error(
            f"{args.study} chooses on the first seed and compares on the rest: give 3 or more."
        )
    if args.study == "lrgrid" and len(args.train_seeds) < 4:
        parser.error(
            "lrgrid chooses on the first 2 seeds and compares on the rest: give 4 or more."
        )
    path = journal_and_reuse(args)
    runner.JOURNAL = path
    runner.CALLS.clear()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(runner.Tee(sys.stdout, printed)):
            report = RUNS[args.study](args)
    finally:
        runner.JOURNAL = None
        runner.REUSE.clear()
    report |= {
        "train_seeds": args.train_seeds,
        "thresholds": {
            k: {"margin": t.margin, "kind": t.kind, "measures": t.measures}
            for k, t in THRESHOLDS.items()
        },
        "command": runner.command_line(argv if argv is not None else sys.argv[1:]).replace(
            "benchmarks.claims", "benchmarks.controls"
        ),
        "table": claims.table_of(printed.getvalue()),
        "calls": list(runner.CALLS),
    }
    if args.publish:
        files.write_atomically(claims.published_path(args.study), json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LORAKIT_MODE", "small")
    main()
