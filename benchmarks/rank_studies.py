"""The rank studies behind lesson 10's section 3: ``python -m benchmarks.controls --study rank``
and ``--study lrgrid``.

:func:`study_rank` trains the outline LoRA at ``--ranks`` under three conventions for alpha
(``alpha = r``, a fixed alpha, rsLoRA): is it the rank or the step that draws the style?
:func:`study_lrgrid` gives each rank its own learning rate, chosen on two training seeds from a
grid in factors of 2 (:data:`GRID_LRS`), then compares rank 16 with rank 1 on the other seeds.
Each pairs its runs by training seed and reads its verdicts off ``benchmarks.verdicts``.

Left out: the command line (``benchmarks.controls``), the claims' own studies
(``benchmarks.claim_studies``).
"""

from __future__ import annotations

from benchmarks import claim_runs as runner
from benchmarks.verdicts import THRESHOLDS, by_seed, compare, header
from lorakit import claims

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
