"""Claims 1 to 5 of the article, as ``benchmarks.claims`` runs them: where LoRA sits (1), its size
and resources against a full fine-tune (2 and 3), small data (4), many kinds of models (5).

Each function takes the parsed arguments of ``python -m benchmarks.claims``, runs the experiments
of ``lorakit.claims`` through :func:`benchmarks.claim_runs.child` (each in a fresh process), prints
the claim's table and returns its runs; ``benchmarks/claims.py`` says what each claim runs.

Left out: claims 6 to 9 (``benchmarks.claims_6_to_9``), the controlled studies
(``benchmarks.controls``), the verdicts (docs/claims.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks import _common, claim_runs
from benchmarks.claim_runs import cell, seeds_line
from lorakit.claims import FULL_LR


def claim_1(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        for task in args.tasks:
            for variant in args.variants:
                runs.append(
                    claim_runs.child(
                        "where_lora_sits", variant=variant, task=task, seed=seed, steps=args.steps
                    )
                )
    base = claim_runs.child("base_model")
    n = len(args.train_seeds)
    print(
        f"\nclaim 1, where the LoRA sits: rank 8, {args.steps} steps, the small preset otherwise; "
        "full fine-tune at "
        f"lr {FULL_LR} ({n} training seed{'s' if n > 1 else ''}; mean ± standard error; 16-20 "
        "pictures a figure)"
    )
    columns = {
        "style": [("style", "style_rate"), ("content", "content")],
        "concept": [("'vex' = triangle", "concept_shape"), ("its colour", "concept_colour")],
    }
    for task in args.tasks:
        heads = columns[task] + [
            ("plain prompts right", "plain_content"),
            ("plain drawn hollow", "plain_outline"),
        ]
        print(f"\n{task}: {'variant':<16}{'trainable':>11}" + "".join(f"{h:>22}" for h, _ in heads))
        for variant in args.variants:
            mine = [r for r in runs if r["task"] == task and r["variant"] == variant]
            cells = []
            for _, key in heads:
                mean, se = _common.mean_se([r[key] for r in mine])
                cells.append(f"{mean:.0%}" + (f" ± {se:.0%}" if se else ""))
            print(
                f"{'':<7}{variant:<16}{mine[0]['trainable_params']:>11,}"
                + "".join(f"{c:>22}" for c in cells)
            )
        print(
            f"{'':<7}{'no training':<16}{0:>11,}"
            + f"{'':>44}"
            + f"{base['plain_content']:>22.0%}{base['plain_outline']:>22.0%}"
        )
    return {"claim": "1", "runs": runs, "base_model": base}


def resources_command(args, method: str, seed: int) -> list[str]:
    """The command of one run of claims 2 and 3 (``claim_runs.resources_run``), in a child."""
    command = [sys.executable, "-m", "benchmarks.claims", "--one", method, str(seed)]
    command += ["--target", str(args.target), "--every", str(args.every)]
    command += ["--max-steps", str(args.max_steps)]
    if method == "full" and args.full_lr:
        command += ["--lr", str(args.full_lr)]
    return command


def claim_2_3(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        for method in ("lora", "full"):
            command = resources_command(args, method, seed)
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(
                f"  seed {seed} {method}: "
                f"{json.dumps({k: v for k, v in runs[-1].items() if k != 'curve'})}",
                flush=True,
            )
    print(
        f"\nclaims 2 and 3, LoRA against a full fine-tune of the tiny SD's UNet on the outline set "
        f"({len(args.train_seeds)} training seed{'s' if len(args.train_seeds) > 1 else ''}; mean ± "
        "standard error)"
    )
    rows = [
        ("trainable parameters", "trainable_params", "{:,.0f}"),
        ("file saved, KB", "file_bytes", "{:,.1f}"),
        ("optimizer state, KB", "optimizer_bytes", "{:,.1f}"),
        ("step, ms (median)", "step_seconds_median", "{:,.1f}"),
        ("peak process memory, MB", "peak_rss_mb", "{:,.0f}"),
    ]
    scale = {"file_bytes": 1 / 1024, "optimizer_bytes": 1 / 1024, "step_seconds_median": 1000}
    print(f"{'':<28}{'LoRA':>22}{'full fine-tune':>22}{'full / LoRA':>13}")
    for name, key, fmt in rows:
        cells, means = [], []
        for method in ("lora", "full"):
            mean, se = _common.mean_se(
                [r[key] * scale.get(key, 1) for r in runs if r["method"] == method]
            )
            means.append(mean)
            cells.append((fmt.format(mean) + (f" ± {fmt.format(se)}" if se else "")).rjust(22))
        print(f"{name:<28}{''.join(cells)}{means[1] / means[0]:>12.2f}x")
    for method in ("lora", "full"):
        hits = [r["reached"] for r in runs if r["method"] == method]
        got = [h for h in hits if h]
        if got:
            (steps, steps_se), (secs, secs_se) = (
                _common.mean_se([h[k] for h in got]) for k in ("steps", "train_seconds")
            )
            text = f"{steps:.1f} ± {steps_se:.1f} steps, {secs:.1f} ± {secs_se:.1f} s"
        else:
            text = "not reached"
        print(
            f"to a style rate of {args.target:.0%} ({method}): {text} ({len(got)} of {len(hits)} "
            "runs within "
            f"{args.max_steps} steps)"
        )
    return {"claim": "2-3", "runs": runs}


def claim_4_sweep(args, methods: dict) -> tuple[list, dict, dict]:
    """Claim 4's learning-rate sweep on the whole set, first training seed: the runs, each method's
    best rate (the most learnt plus the least forgotten), and the runs at those rates by (method,
    size, seed), which the study then takes instead of training them again."""
    grids = {"lora": args.lora_lrs, "full": args.full_lrs}
    sweep, best, done = [], {}, {}
    for name in ("LoRA r8", "full fine-tune"):  # LoRA r2 takes r8's rate: the sweep is small
        how = methods[name]
        tried = [
            claim_runs.child(
                "small_data",
                size=max(args.sizes),
                seed=args.train_seeds[0],
                steps=args.steps,
                lr=lr,
                **how,
            )
            | {"name": name}
            for lr in grids[how["method"]]
        ]
        sweep += tried
        winner = max(tried, key=lambda t: t["style_rate"] + t["plain_content"])
        best[name], done[(name, max(args.sizes), args.train_seeds[0])] = winner["lr"], winner
    best["LoRA r2"] = best["LoRA r8"]
    return sweep, {name: best[name] for name in methods}, done


def claim_4(args) -> dict:
    """Small data: a learning-rate sweep at the full set (first training seed), then every size at
    each best rate."""
    methods = {
        "LoRA r2": {"method": "lora", "r": 2},
        "LoRA r8": {"method": "lora", "r": 8},
        "full fine-tune": {"method": "full"},
    }
    sweep, best, done = claim_4_sweep(args, methods)
    runs = []
    for seed in args.train_seeds:
        for size in args.sizes:
            for name, how in methods.items():
                if (name, size, seed) in done:  # the sweep's run at the chosen rate is this one
                    runs.append(done[(name, size, seed)])
                    continue
                runs.append(
                    claim_runs.child(
                        "small_data", size=size, seed=seed, steps=args.steps, lr=best[name], **how
                    )
                    | {"name": name}
                )
    base = {size: claim_runs.child("base_memorisation", size=size) for size in args.sizes}
    print(
        f"\nclaim 4, small data: the first N pictures of the outline set, {args.steps} steps, each "
        "method at its best "
        f"learning rate of the sweep ({', '.join(f'{k} {v:g}' for k, v in best.items())}); "
        f"{seeds_line(args)}; "
        "16 pictures a style figure, 32 a plain one"
    )
    heads = ("style, held-out", "content, held-out", "plain prompts right", "memorised (IoU)")
    keys = ("style_rate", "content", "plain_content", "memorised")
    print(f"{'pictures':>9}  {'method':<16}" + "".join(f"{h:>21}" for h in heads))
    for size in args.sizes:
        for name in methods:
            mine = [r for r in runs if r["size"] == size and r["name"] == name]
            cells = [cell([r[k] for r in mine], percent=k != "memorised") for k in keys]
            print(f"{size:>9}  {name:<16}" + "".join(f"{c:>21}" for c in cells))
        print(f"{size:>9}  {'base model':<16}{'':>63}{base[size]:>21.3g}")
    if args.plot:
        learning_forgetting_plot(runs, methods, args.sizes, args.plot)
    return {"claim": "4", "sweep": sweep, "best_lr": best, "runs": runs, "base_memorised": base}


def learning_forgetting_plot(runs: list[dict], methods, sizes, path: str) -> None:
    """Style learnt (held-out prompts) against content forgotten (plain prompts), a point per method
    and set size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, marker in zip(methods, "osD", strict=False):
        xs, ys = [], []
        for size in sizes:
            mine = [r for r in runs if r["size"] == size and r["name"] == name]
            xs.append(1 - _common.mean_se([r["plain_content"] for r in mine])[0])
            ys.append(_common.mean_se([r["style_rate"] for r in mine])[0])
        ax.plot(xs, ys, marker=marker, label=name)
        for x, y, size in zip(xs, ys, sizes, strict=True):
            ax.annotate(str(size), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("forgetting: plain prompts drawn wrong")
    ax.set_ylabel("learning: style on held-out prompts")
    ax.set_title("LoRA and full fine-tuning on small sets (labels: pictures)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def claim_5(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        runs.append(claim_runs.child("text_encoder_lora", seed=seed, steps=args.steps))
        runs.append(
            claim_runs.child(
                "where_lora_sits", variant="attn2", task="concept", seed=seed, steps=args.steps
            )
        )
        runs.append(claim_runs.child("classifier_study", seed=seed))
    print(f"\nclaim 5, one LoRALinear and inject_lora, three places; {seeds_line(args)}")
    te = [r for r in runs if r.get("where") == "text encoder"]
    unet = [r for r in runs if r.get("variant") == "attn2"]
    print(
        f"'a red vex' = a red triangle, {args.steps} steps, rank 8 (20 pictures a figure, 32 "
        "plain):"
    )
    print(
        f"{'':<4}{'where':<28}{'trainable':>10}{'vex = triangle':>18}{'its colour':>14}"
        f"{'plain prompts right':>22}"
    )
    for name, mine in (("CLIP text encoder (attn+mlp)", te), ("UNet attn2", unet)):
        print(
            f"{'':<4}{name:<28}{mine[0]['trainable_params']:>10,}"
            f"{cell([r['concept_shape'] for r in mine]):>18}"
            f"{cell([r['concept_colour'] for r in mine]):>14}"
            f"{cell([r['plain_content'] for r in mine]):>22}"
        )
    studies = [r for r in runs if "base" in r]
    print(
        "a text classifier (word embeddings, 2 hidden layers), trained to name the shape in a "
        "sentence, then "
        "adapted to sentences that count its corners (600 held-out sentences a figure):"
    )
    print(f"{'':<4}{'model':<26}{'trainable':>10}{'names task':>16}{'corners task':>16}")
    for how in ("base", "head only", "lora", "full"):
        label = {
            "base": "before adapting",
            "lora": f"LoRA r{studies[0]['r']} on its 3 linears",
            "full": "full fine-tune",
            "head only": "head only",
        }[how]
        print(
            f"{'':<4}{label:<26}{studies[0][how]['trainable_params']:>10,}"
            f"{cell([s[how]['names'] for s in studies]):>16}"
            f"{cell([s[how]['corners'] for s in studies]):>16}"
        )
    return {"claim": "5", "runs": runs}
