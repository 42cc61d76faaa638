"""Claims 6 to 9 of the article, as ``benchmarks.claims`` runs them: combining with other methods
(6), complex data (7), large changes (8), sensitivity to the settings (9).

Each function takes the parsed arguments of ``python -m benchmarks.claims``, runs the experiments
of ``lorakit.claims`` through :func:`benchmarks.claim_runs.child` (each in a fresh process), prints
the claim's table and returns its runs; ``benchmarks/claims.py`` says what each claim runs.

Left out: claims 1 to 5 (``benchmarks.claims_1_to_5``), the controlled studies
(``benchmarks.controls``), the verdicts (docs/claims.md).
"""

from __future__ import annotations

import statistics

from benchmarks import _common, claim_runs
from benchmarks.claim_runs import cell, seeds_line
from lorakit import claims


def claim_6(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        runs.append(claim_runs.child("two_loras", seed=seed, steps=args.steps))
        for method in ("inversion", "lora", "both"):
            runs.append(
                claim_runs.child("inversion_and_lora", method=method, seed=seed, steps=args.steps)
            )
    print(
        f"\nclaim 6, LoRA with other LoRAs and with textual inversion; {args.steps} steps; "
        f"{seeds_line(args)}"
    )
    two = [r for r in runs if "together" in r]
    print(
        "two style LoRAs (outline under 'sks', striped under 'ohwx'), trained apart, used together "
        "(16 pictures a figure):"
    )
    print(f"{'':<4}{'':<22}{'outline rate':>16}{'striped rate':>16}{'content':>12}")
    for name in ("outline alone", "striped alone", "together"):
        rows = [r[name] for r in two]
        content = [
            statistics.fmean([x["outline"]["content"], x["striped"]["content"]]) for x in rows
        ]
        print(
            f"{'':<4}{name:<22}{cell([x['outline']['style'] for x in rows]):>16}"
            f"{cell([x['striped']['style'] for x in rows]):>16}{cell(content):>12}"
        )
    ceilings = {
        style: claim_runs.child("vae_ceiling", style=style)["style_rate"]
        for style in ("outline", "striped")
    }
    print(
        "    the most any LoRA can draw of each style (its set through the VAE alone): "
        + ", ".join(f"{k} {v:.0%}" for k, v in ceilings.items())
    )
    print(
        "    together, plain prompts right: "
        f"{cell([r['together']['plain_content'] for r in two])}; merged into the "
        "weights against applied: largest pixel difference "
        f"{max(r['merged_vs_applied_max_pixel'] for r in two)} of 255"
    )
    inv = [r for r in runs if "method" in r and "cross" in r]
    print("'a red plim' = a red cross, a shape the tiny SD never saw (20 pictures a figure):")
    print(
        f"{'':<4}{'method':<26}{'trainable':>10}{'plim = cross':>16}{'its colour':>14}"
        f"{'plain prompts right':>22}"
    )
    for method in ("inversion", "lora", "both"):
        mine = [r for r in inv if r["method"] == method]
        label = {
            "inversion": "textual inversion",
            "lora": "LoRA (attn2+ff r8)",
            "both": "both, trained together",
        }[method]
        print(
            f"{'':<4}{label:<26}{mine[0]['trainable_params']:>10,}"
            f"{cell([r['cross'] for r in mine]):>16}"
            f"{cell([r['colour'] for r in mine]):>14}{cell([r['plain_content'] for r in mine]):>22}"
        )
    return {"claim": "6", "runs": runs}


def claim_7(args) -> dict:
    ceilings = {style: claim_runs.child("vae_ceiling", style=style) for style in claims.STYLE_ORDER}
    runs = [
        claim_runs.child(
            "many_styles", count=count, r=r, seed=seed, steps_per_style=args.steps_per_style
        )
        for seed in args.train_seeds
        for count in (1, 2, 3)
        for r in args.ranks
    ]
    print(
        f"\nclaim 7, several styles in one LoRA, each under its trigger; {args.steps_per_style} "
        "steps a style; "
        f"{seeds_line(args)}; the mean style rate over the styles (16 pictures a style)"
    )
    print(f"{'styles':<30}" + "".join(f"{'r' + str(r):>14}" for r in args.ranks))
    for count in (1, 2, 3):
        row = [
            cell([x["mean_style"] for x in runs if x["count"] == count and x["r"] == r])
            for r in args.ranks
        ]
        print(f"{' + '.join(claims.STYLE_ORDER[:count]):<30}" + "".join(f"{c:>14}" for c in row))
        for style in claims.STYLE_ORDER[:count] if count > 1 else ():
            row = [
                cell(
                    [
                        x["styles"][style]["style"]
                        for x in runs
                        if x["count"] == count and x["r"] == r
                    ]
                )
                for r in args.ranks
            ]
            print(f"{'    ' + style:<30}" + "".join(f"{c:>14}" for c in row))
    print(
        "the most any LoRA can draw of each style: its set's pictures through the VAE alone, read "
        "as that style: "
        + ", ".join(f"{style} {c['style_rate']:.0%}" for style, c in ceilings.items())
        + f" ({ceilings['outline']['pictures']} pictures each)"
    )
    print("content (colour and shape right) under the triggers, mean over the styles:")
    for count in (1, 2, 3):
        row = [
            cell([x["mean_content"] for x in runs if x["count"] == count and x["r"] == r])
            for r in args.ranks
        ]
        print(f"{' + '.join(claims.STYLE_ORDER[:count]):<30}" + "".join(f"{c:>14}" for c in row))
    return {"claim": "7", "runs": runs, "vae_ceiling": ceilings}


def claim_8(args) -> dict:
    variants = [
        ("attn2", 8),
        ("attn2+ff", 8),
        ("every linear", 4),
        ("every linear", 32),
        ("full fine-tune", None),
    ]
    runs = [
        claim_runs.child("large_change", variant=v, r=r or 8, seed=seed, steps=args.steps)
        | {"r": r}
        for seed in args.train_seeds
        for v, r in variants
    ]
    print(
        f"\nclaim 8, a shape the tiny SD never saw ('a red cross'), {args.steps} steps; "
        f"{seeds_line(args)}; 20 pictures "
        "a figure, 32 plain"
    )
    print(
        f"{'':<4}{'where':<22}{'trainable':>11}{'cross drawn':>16}{'its colour':>14}"
        f"{'plain prompts right':>22}"
    )
    for v, r in variants:
        mine = [x for x in runs if x["variant"] == v and x["r"] == r]
        label = v + (f" r{r}" if r else "")
        print(
            f"{'':<4}{label:<22}{mine[0]['trainable_params']:>11,}"
            f"{cell([x['cross'] for x in mine]):>16}"
            f"{cell([x['colour'] for x in mine]):>14}{cell([x['plain_content'] for x in mine]):>22}"
        )
    full = [x for x in runs if x["variant"] == "full fine-tune"]
    layers = [row for x in full for row in x["update_ranks"]]
    ranks = [row["rank"] for row in layers]
    share = [row["rank"] / row["max_rank"] for row in layers]
    attn2 = [row["rank"] for row in layers if ".attn2." in row["name"]]
    noise = [row["noise_rank"] / row["max_rank"] for row in layers if "noise_rank" in row]
    print(
        "the full fine-tune's update, rank keeping 90 % of each linear layer's energy "
        f"({len(layers) // len(full)} "
        f"layers x {len(full)} runs): median {statistics.median(ranks):g}, largest {max(ranks)}, "
        "median share of the "
        f"layer's full rank {statistics.median(share):.0%}; attn2 layers: median "
        f"{statistics.median(attn2):g}, "
        f"largest {max(attn2)} (LoRA here: r 8)"
        + (
            f"; a random matrix of each layer's shape needs a median "
            f"{statistics.median(noise):.0%} of its rank"
            if noise
            else ""
        )
    )
    return {"claim": "8", "runs": runs}


def claim_9(args) -> dict:
    runs = [
        claim_runs.child("sensitivity", lr=lr, r=r, alpha=alpha, seed=seed, steps=args.steps)
        for seed in args.train_seeds
        for r in args.ranks
        for alpha in args.alphas
        for lr in args.lrs
    ]
    print(
        f"\nclaim 9, the outline LoRA over learning rate x rank x alpha, {args.steps} steps; "
        f"{seeds_line(args)}; "
        "each cell: the outcome of most seeds, style / content on the held-out prompts"
    )
    print(
        f"{'r':>4}{'alpha':>7}{'alpha/r':>9}"
        + "".join(f"{'lr ' + format(lr, 'g'):>26}" for lr in args.lrs)
    )
    for r in args.ranks:
        for alpha in args.alphas:
            cells = []
            for lr in args.lrs:
                mine = [x for x in runs if x["r"] == r and x["alpha"] == alpha and x["lr"] == lr]
                names = [claims.outcome(x) for x in mine]
                common = max(set(names), key=names.count)
                cells.append(
                    f"{common} {_common.mean_se([x['style_rate'] for x in mine])[0]:.0%}/"
                    f"{_common.mean_se([x['content'] for x in mine])[0]:.0%}"
                )
            print(f"{r:>4}{alpha:>7g}{alpha / r:>9.3g}" + "".join(f"{c:>26}" for c in cells))
    for label, product in (
        ("lr x alpha", lambda x: x["lr"] * x["alpha"]),
        ("lr x alpha / r", lambda x: x["lr_x_scaling"]),
    ):
        print(f"the same runs by {label}:")
        by = {}
        for x in runs:
            by.setdefault(float(f"{product(x):.6g}"), []).append(x)
        for key in sorted(by):
            names = [claims.outcome(x) for x in by[key]]
            ranks = sorted({x["r"] for x in by[key]})
            print(
                f"    {label} = {key:<10.3g} r {','.join(map(str, ranks)):<6} {len(names):>2} "
                "runs: " + ", ".join(f"{n} {names.count(n)}" for n in sorted(set(names)))
            )
    return {"claim": "9", "runs": runs}
