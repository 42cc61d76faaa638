"""The controlled studies of claims 1, 6, 7 and 8: ``python -m benchmarks.controls --study
placement | scales | complex | truncation``.

* :func:`study_placement` (claim 1): "vex" taught on ``attn2``, ``attn1`` and ``ff`` at about equal
  trainable numbers (:data:`PLACEMENTS`), against a control word no caption has.
* :func:`study_scales` (claim 6): two LoRAs together at the scales people use, and each alone at the
  same scale.
* :func:`study_complex` (claim 7): one LoRA and a full fine-tune on one style and on three.
* :func:`study_truncation` (claim 8): a full fine-tune's update cut by SVD to rank k.

Left out: the command line (``benchmarks.controls``), the rank studies
(``benchmarks.rank_studies``).
"""

from __future__ import annotations

from benchmarks import claim_runs as runner
from benchmarks.verdicts import by_seed, compare, header
from lorakit import claims

# name: word_run's arguments; attn2 r 8, attn1 r 8 and ff r 4 train about as many numbers
PLACEMENTS = {
    "attn2 r 8": {"variant": "attn2", "r": 8},
    "attn1 r 8": {"variant": "attn1", "r": 8},
    "ff r 4": {"variant": "ff", "r": 4},
    "attn2 r 8, no caption dropout": {"variant": "attn2", "r": 8, "caption_dropout": 0.0},
}


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
