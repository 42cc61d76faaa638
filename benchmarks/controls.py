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
preset's 1e-3).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

from benchmarks import claims as runner
from benchmarks import curve_studies
from benchmarks.verdicts import THRESHOLDS, by_seed, compare, header
from lorakit import claims, files
from lorakit import config as course

STUDIES = ("rank", "truncation", "scales", "lrgrid", "complex", "placement", "speed", "overfit")
# name: word_run's arguments; attn2 r 8, attn1 r 8 and ff r 4 train about as many numbers
PLACEMENTS = {
    "attn2 r 8": {"variant": "attn2", "r": 8},
    "attn1 r 8": {"variant": "attn1", "r": 8},
    "ff r 4": {"variant": "ff", "r": 4},
    "attn2 r 8, no caption dropout": {"variant": "attn2", "r": 8, "caption_dropout": 0.0},
}
GRID_LRS = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3)  # factors of 2 around the preset's 1e-3


def study_rank(args) -> dict:
    runs = [
        runner.child("rank_run", r=r, convention=c, seed=seed, steps=args.steps)
        for seed in args.train_seeds
        for r in args.ranks
        for c in claims.CONVENTIONS
        if not (r == claims.ANCHOR_RANK and c != "alpha = r")  # the conventions agree there
    ]
    for run in [r for r in runs if r["r"] == claims.ANCHOR_RANK]:
        runs += [run | {"convention": c} for c in claims.CONVENTIONS[1:]]
    print(
        f"\nthe rank study: the outline LoRA (attn2+ff), {args.steps} steps, lr 1e-3; "
        f"{runner.seeds_line(args)}; 16 pictures a style figure"
    )
    print(
        f"  {'convention':<14}"
        + "".join(f"{'r ' + str(r):>19}" for r in args.ranks)
        + "   (style rate; scaling)"
    )
    for c in claims.CONVENTIONS:
        cells = []
        for r in args.ranks:
            mine = [x for x in runs if x["r"] == r and x["convention"] == c]
            scale = mine[0]["settings"]["scaling"]
            cells.append(f"{runner.cell([x['style_rate'] for x in mine])} ({scale:.2g})")
        print(f"  {c:<14}" + "".join(f"{x:>19}" for x in cells))
    print("  median ||delta W|| / ||W|| of the LoRA layers, in %:")
    for c in claims.CONVENTIONS:
        cells = [
            runner.cell(
                [
                    100 * x["update_ratio_median"]
                    for x in runs
                    if x["r"] == r and x["convention"] == c
                ],
                percent=False,
            )
            for r in args.ranks
        ]
        print(f"  {c:<14}" + "".join(f"{x:>22}" for x in cells))
    low, high = min(args.ranks), max(args.ranks)
    header(
        f"r {high} against r {low}, style rate (threshold {THRESHOLDS['rank'].margin:.2f}, "
        "set before the runs)"
    )
    rows = [
        compare(
            f"{c}: r {high} - r {low}",
            by_seed(runs, "style_rate", r=high, convention=c),
            by_seed(runs, "style_rate", r=low, convention=c),
            "rank",
        )
        for c in claims.CONVENTIONS
    ]
    return {"study": "rank", "runs": runs, "comparisons": rows}


def _cross_by(runs: list[dict], scope: str, k) -> dict[int, float]:
    return {
        run["seed"]: next(x["cross"] for x in run["rows"] if x["scope"] == scope and x["k"] == k)
        for run in runs
    }


def study_truncation(args) -> dict:
    runs = [
        runner.child("truncated_update", seed=seed, steps=args.steps) for seed in args.train_seeds
    ]
    ks = [x["k"] for x in runs[0]["rows"] if x["scope"] == "linear"]
    print(
        f"\nclaim 8 by truncation: a full fine-tune on the cross ({args.steps} steps), its update "
        f"cut to rank k; {runner.seeds_line(args)}; 20 pictures a figure"
    )
    print(
        f"  {'update put back':<22}" + "".join(f"{'k ' + str(k) if k else 'whole':>12}" for k in ks)
    )
    for scope in claims.SCOPES:
        print(
            f"  {scope:<22}"
            + "".join(f"{runner.cell(list(_cross_by(runs, scope, k).values())):>12}" for k in ks)
        )
    every = list(_cross_by(runs, "every weight", None).values())
    lora = {run["seed"]: run["lora"]["cross"] for run in runs}
    print(
        f"  every weight (the fine-tune itself): {runner.cell(every)}; a trained LoRA, rank "
        f"{runs[0]['lora']['r']} on every linear layer: {runner.cell(list(lora.values()))}"
    )
    dist = [(run["lora"]["distance_trained"], run["lora"]["distance_truncated"]) for run in runs]
    print(
        "  distance from the full update (relative): trained LoRA "
        f"{runner.cell([d[0] for d in dist], percent=False)}, its rank-"
        f"{runs[0]['lora']['r']} truncation {runner.cell([d[1] for d in dist], percent=False)}"
    )
    k = runs[0]["lora"]["r"]  # the LoRA's rank: the truncation it is compared with
    if k not in ks:
        raise ValueError(f"the runs cut the update to ranks {ks}, not to the LoRA's {k}.")
    header("comparisons, crosses drawn (thresholds set before the runs)")
    rows = [
        compare(
            f"linear: whole - rank {k}",
            _cross_by(runs, "linear", None),
            _cross_by(runs, "linear", k),
            "truncation-rank",
        ),
        compare(
            "whole: linear + conv - linear",
            _cross_by(runs, "linear+conv", None),
            _cross_by(runs, "linear", None),
            "truncation-conv",
        ),
        compare(
            f"rank {k} linear: truncated - trained LoRA",
            _cross_by(runs, "linear", k),
            lora,
            "truncation-lora",
        ),
    ]
    return {"study": "truncation", "runs": runs, "comparisons": rows}


def study_scales(args) -> dict:
    runs = [
        runner.child("two_loras_at_scales", seed=seed, steps=args.steps, scales=args.scales)
        for seed in args.train_seeds
    ]
    print(
        f"\nclaim 6 at the scales people use: outline and striped LoRAs, {args.steps} steps "
        f"each, applied together at each scale; {runner.seeds_line(args)}"
    )
    print(f"  {'':<18}{'outline':>12}{'striped':>12}{'mean':>12}{'content':>12}{'plain right':>13}")
    alone = {run["seed"]: run["alone_mean"] for run in runs}
    print(f"  {'alone, scale 1':<18}{'':>36}{runner.cell(list(alone.values())):>12}")
    for s in args.scales:
        at = [run["together"][str(s)] for run in runs]
        print(
            f"  {'together, ' + str(s):<18}"
            + "".join(
                f"{runner.cell([x[k] for x in at]):>12}"
                for k in ("outline", "striped", "mean", "content")
            )
            + f"{runner.cell([x['plain_content'] for x in at]):>13}"
        )
        alone_at = [run["alone_at"][str(s)] for run in runs if "alone_at" in run]
        if alone_at:
            print(
                f"  {'each alone, ' + str(s):<18}"
                + "".join(
                    f"{runner.cell([x[k] for x in alone_at]):>12}"
                    for k in ("outline", "striped", "mean")
                )
            )
    header("each alone at 1 - both together, mean style rate (threshold set before the runs)")
    rows = [
        compare(
            f"alone - together at {s}",
            alone,
            {run["seed"]: run["together"][str(s)]["mean"] for run in runs},
            "scales",
        )
        for s in args.scales
    ]
    if all("alone_at" in run for run in runs):  # the control: each alone at the same scale
        header("each alone at s - both together at s: what is lost to the other LoRA")
        rows += [
            compare(
                f"alone at {s} - together at {s}",
                {run["seed"]: run["alone_at"][str(s)]["mean"] for run in runs},
                {run["seed"]: run["together"][str(s)]["mean"] for run in runs},
                "scales-interference",
            )
            for s in args.scales
        ]
    return {"study": "scales", "runs": runs, "comparisons": rows}


def _rank_run(r: int, seed: int, lr: float, steps: int) -> dict:
    """A rank-study run under ``alpha = r``; at the preset's 1e-3 the very run of the rank study."""
    extra = {} if lr == 1e-3 else {"lr": lr}
    return runner.child("rank_run", r=r, convention="alpha = r", seed=seed, steps=steps, **extra)


def study_lrgrid(args) -> dict:
    """A learning rate a rank, chosen on the first two training seeds, then compared on the
    others."""
    choose, judge = args.train_seeds[:2], args.train_seeds[2:]
    low, high = min(args.ranks), max(args.ranks)
    grid = {
        (r, lr): [_rank_run(r, s, lr, args.steps) for s in choose]
        for r in (low, high)
        for lr in GRID_LRS
    }
    print(
        f"\nthe rank study, a learning rate a rank: the outline LoRA (attn2+ff, alpha = r), "
        f"{args.steps} steps; the grid on training seeds {choose}, the comparison on {judge}"
    )
    print(
        f"  {'rank':<8}"
        + "".join(f"{'lr ' + format(lr, 'g'):>14}" for lr in GRID_LRS)
        + "   (style rate / content, mean of the grid's seeds)"
    )
    best = {}
    for r in (low, high):
        score = {lr: sum(x["style_rate"] + x["content"] for x in grid[(r, lr)]) for lr in GRID_LRS}
        best[r] = max(GRID_LRS, key=lambda lr: score[lr])
        print(
            f"  {'r ' + str(r):<8}"
            + "".join(
                f"{runner.cell([x['style_rate'] for x in grid[(r, lr)]]).split(' ')[0]:>8}/"
                f"{runner.cell([x['content'] for x in grid[(r, lr)]]).split(' ')[0]:<5}"
                for lr in GRID_LRS
            )
        )
    print(
        "  chosen (most style + content): "
        + ", ".join(f"r {r}: lr {best[r]:g}" for r in best)
        + f"; ratio {best[low] / best[high]:g} (a step growing like r predicts {high // low}, "
        f"like sqrt(r) {(high / low) ** 0.5:.2g}, rank not mattering 1)"
    )
    runs = {r: [_rank_run(r, s, best[r], args.steps) for s in judge] for r in (low, high)}
    header(f"r {high} against r {low}, each at its chosen learning rate, seeds {judge}")
    rows = [
        compare(
            f"style: r {high} - r {low}",
            by_seed(runs[high], "style_rate"),
            by_seed(runs[low], "style_rate"),
            "lrgrid",
        )
    ]
    grid_runs = [x for v in grid.values() for x in v]
    return {
        "study": "lrgrid",
        "best_lr": best,
        "runs": grid_runs + runs[low] + runs[high],
        "comparisons": rows,
    }


def study_complex(args) -> dict:
    """Claim 7 with its control: LoRA and a full fine-tune on one style and on three."""
    how = {"LoRA": {"method": "lora", "r": claims.ANCHOR_RANK}, "full": {"method": "full"}}
    runs = [
        runner.child(
            "many_styles", count=count, seed=seed, steps_per_style=args.steps_per_style, **kw
        )
        | {"name": name}
        for seed in args.train_seeds
        for count in (1, 3)
        for name, kw in how.items()
    ]
    print(
        f"\nclaim 7 with a control: one LoRA (r {claims.ANCHOR_RANK}, alpha = r) and a full "
        f"fine-tune on 1 and 3 styles, {args.steps_per_style} steps a style; "
        f"{runner.seeds_line(args)}; 16 pictures a style"
    )
    for name in how:
        for count in (1, 3):
            mine = [x for x in runs if x["name"] == name and x["count"] == count]
            print(
                f"  {name:<6}{count} style{'s' if count > 1 else ' '}: mean style "
                f"{runner.cell([x['mean_style'] for x in mine])}, content "
                f"{runner.cell([x['mean_content'] for x in mine])}"
            )
    print(
        "  which style each trigger draws, 3 styles (rows: the trigger's style; mean over seeds):"
    )
    names = sorted({k for x in runs for c in x["confusion"].values() for k in c} - {"content"})
    for name in how:
        mine = [x for x in runs if x["name"] == name and x["count"] == 3]
        print(f"  {name:<16}" + "".join(f"{n:>10}" for n in names))
        for style in claims.STYLE_ORDER:
            print(
                f"    {style:<14}"
                + "".join(
                    f"{sum(x['confusion'][style].get(n, 0.0) for x in mine) / len(mine):>10.0%}"
                    for n in names
                )
            )

    def rate(name, count):
        return by_seed([x for x in runs if x["name"] == name and x["count"] == count], "mean_style")

    drop = {n: {seed: one - rate(n, 3)[seed] for seed, one in rate(n, 1).items()} for n in how}
    header("comparisons, mean style rate (thresholds set before the runs)")
    rows = [
        compare("3 styles: full - LoRA", rate("full", 3), rate("LoRA", 3), "complex-shortfall"),
        compare("drop 1 -> 3 styles: LoRA's - full's", drop["LoRA"], drop["full"], "complex"),
    ]
    return {"study": "complex", "runs": runs, "comparisons": rows}


def study_placement(args) -> dict:
    """Claim 1 with a control word, at about equal trainable numbers, off the ceiling."""
    runs = [
        runner.child("word_run", seed=seed, steps=args.steps, **kw) | {"name": name}
        for seed in args.train_seeds
        for name, kw in PLACEMENTS.items()
    ]
    base = runner.child("word_base")
    print(
        f"\nclaim 1 with a control word: 'a red vex' = a red triangle, {args.steps} steps; "
        f"{runner.seeds_line(args)}; 20 pictures a word, 32 plain"
    )
    print(
        f"  {'where':<32}{'trainable':>10}{'vex':>12}{'quill':>12}{'vex - quill':>14}"
        f"{'plain right':>14}"
    )
    for name in PLACEMENTS:
        mine = [x for x in runs if x["name"] == name]
        print(
            f"  {name:<32}{mine[0]['trainable_params']:>10,}"
            + "".join(
                f"{runner.cell([x[k] for x in mine]):>{w}}"
                for k, w in (
                    ("word_shape", 12),
                    ("control_shape", 12),
                    ("specific", 14),
                    ("plain_content", 14),
                )
            )
        )
    print(f"  {'no training':<32}{0:>10,}{base['word_shape']:>12.0%}{base['control_shape']:>12.0%}")

    def of(name, key):
        return by_seed([x for x in runs if x["name"] == name], key)

    header("comparisons (thresholds set before the runs)")
    rows = [
        compare(
            "specific: attn2 - attn1",
            of("attn2 r 8", "specific"),
            of("attn1 r 8", "specific"),
            "placement-route",
        ),
        compare(
            "specific: ff - attn2",
            of("ff r 4", "specific"),
            of("attn2 r 8", "specific"),
            "placement-enough",
        ),
        compare(
            "plain right: no caption dropout - 0.3",
            of("attn2 r 8, no caption dropout", "plain_content"),
            of("attn2 r 8", "plain_content"),
            "caption-dropout",
        ),
    ]
    return {"study": "placement", "runs": runs, "base": base, "comparisons": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = runner._common.parser(__doc__)
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
    path = Path(
        args.journal or course.REPO_ROOT / "runs" / "controls" / f"{args.study}.journal.json"
    )
    known = [*args.reuse, path]
    if args.study == "lrgrid":  # its runs at the preset's 1e-3 are the rank study's
        known.append(claims.published_path("rank"))
    for found in map(Path, known):
        if found.exists():
            runner.REUSE.update(
                {
                    runner.call_key(c["function"], c["kwargs"]): c["result"]
                    for c in json.loads(found.read_text())["calls"]
                }
            )
    runner.JOURNAL = path
    runner.CALLS.clear()
    printed = io.StringIO()
    studies = {
        "rank": study_rank,
        "truncation": study_truncation,
        "scales": study_scales,
        "lrgrid": study_lrgrid,
        "complex": study_complex,
        "placement": study_placement,
        "speed": curve_studies.study_speed,
        "overfit": curve_studies.study_overfit,
    }
    try:
        with contextlib.redirect_stdout(runner.Tee(sys.stdout, printed)):
            report = studies[args.study](args)
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
