"""The article's claims about LoRA, measured on the tiny SD:
``python -m benchmarks.claims --claim 2``.

One entry per claim (``--claim N``); each runs ``lorakit.claims``' experiments (which train with
``lorakit.train``: LoRA and, as the baseline, a full fine-tune of the UNet with the same loop, data,
seeds and objective; and judge with ``lorakit.metrics``), each run in a fresh process, prints a
table of the mean and standard error over training seeds (``--train-seeds``), and writes every run
as JSON (``--out``; ``--publish``: to docs/claims/, what lessons 09-10 show). Steps: 200 for claim
4, 150 for claim 9, 300 for the others (``--steps``). What each claim runs:

* **1, where LoRA sits** (``where_lora_sits``, and ``base_model``): the same rank and steps on
  ``attn2`` (cross-attention, the article's place), ``attn1``, both, the feed-forward layers,
  ``attn2+ff``, every linear layer, and a full fine-tune, for two kinds of change: a drawing style
  (the outline set; style rate and content on the held-out prompts) and a new meaning for a word
  ("a red vex" for red triangles; how often "a <colour> vex" draws a triangle, and of its colour);
  for both, whether the model still draws its own plain prompts right, and filled.
* **2 and 3, size and resources** (one experiment, :func:`resources_run`): LoRA (the small preset,
  rank 8 on ``attn2+ff``) against a full fine-tune on the outline set: trainable parameters, the
  file it saves, the optimizer's state, the median time of a training step, the process's peak
  memory (RSS, model included), and the steps and seconds each needs to reach a style rate of
  ``--target`` on the held-out prompts (4 prompts x 4 seeds, judged every ``--every`` steps up to
  ``--max-steps``). Each run is its own process, so that peak memories do not mix.
* **4, small data** (``small_data``, ``base_memorisation``): a learning-rate sweep on the whole
  outline set (``--lora-lrs``, ``--full-lrs``; first training seed), then LoRA r2, LoRA r8 and a
  full fine-tune on its first ``--sizes`` pictures at their best rate: style and content on the
  held-out prompts, plain prompts still right, and memorisation (``--plot``: learning against
  forgetting).
* **5, many kinds of models** (``text_encoder_lora``, ``where_lora_sits``, ``classifier_study``):
  "a red vex" taught by a LoRA in CLIP's text encoder and by one on the UNet's ``attn2``; a toy
  text classifier adapted to a shifted task by LoRA, a full fine-tune or its head alone.
* **6, combining** (``two_loras``, ``inversion_and_lora``, ``vae_ceiling``): the outline and
  striped LoRAs trained apart, then applied together and merged; "a red plim" = a red cross by
  textual inversion, a LoRA, or both trained together.
* **7, complex data** (``many_styles``, ``vae_ceiling``): one LoRA holding 1, 2 or 3 styles at
  each of ``--ranks`` (1 4 16), ``--steps-per-style`` steps a style.
* **8, large changes** (``large_change``): the cross by LoRA on ``attn2`` r8, ``attn2+ff`` r8, every
  linear layer r4 and r32, and a full fine-tune, with the rank of its update.
* **9, sensitivity** (``sensitivity``): the outline LoRA over ``--lrs`` x ``--ranks`` (2 16) x
  ``--alphas``, each run's outcome, also by lr x alpha and by lr x alpha / r.

Run it with nothing else busy on the machine: two torch jobs at once slow each other down.
The figures and verdicts are in docs/claims.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _common
from lorakit import claims, files
from lorakit.claims import FULL_LR, WHERE


class Tee(io.TextIOBase):
    """A stream that writes to several (the terminal, and a buffer that keeps the table)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


CLAIMS = (1, 2, 3, 4, 5, 6, 7, 8, 9)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def resources_run(
    method: str, seed: int, target: float, every: int, max_steps: int, lr: float | None
) -> dict:
    """One training run of ``method`` ("lora" or "full"), in this process: its sizes, times and
    progress."""
    from lorakit import claims, metrics, models, sample, styles, train

    pipe = models.load_pipeline("tiny", dtype="float32")
    dataset = claims.style_set()
    prompts = [p for p in styles.style_prompts() for _ in range(4)]
    seeds = list(range(4)) * len(styles.style_prompts())
    overrides = {"lr": lr} if lr else ({"lr": FULL_LR} if method == "full" else {})
    curve, seconds, step_seconds, reached = [], 0.0, [], None
    with tempfile.TemporaryDirectory() as out:
        for steps in range(every, max_steps + 1, every):  # train on, from the checkpoint, and judge
            cfg = train.TrainConfig.for_mode(
                "small",
                method=method,
                seed=seed,
                steps=steps,
                progress=False,
                output_dir=out,
                checkpoint_every=every,
                **overrides,
            )
            start = time.perf_counter()
            result = train.train_lora(pipe, dataset, cfg)
            seconds += time.perf_counter() - start
            step_seconds += result.step_seconds
            found = metrics.score_pictures(sample.generate(pipe, prompts, seeds), prompts)
            curve.append(
                {
                    "steps": steps,
                    "style_rate": found.style_rate,
                    "content": found.both_accuracy,
                    "train_seconds": seconds,
                }
            )
            if reached is None and found.style_rate >= target:
                reached = {"steps": steps, "train_seconds": seconds}
                break
        sizes = claims.saved_sizes(pipe, method, out)
    return {
        "method": method,
        "seed": seed,
        "lr": cfg.lr,
        "settings": claims.settings_of(cfg, "full" if method == "full" else None),
        **sizes,
        "step_seconds_median": statistics.median(step_seconds),
        "peak_rss_mb": _peak_rss_mb(),
        "reached": reached,
        "target": target,
        "curve": curve,
    }


CALLS: list[dict] = []  # every run of this report: {"function", "kwargs", "result"}
REUSE: dict[str, object] = {}  # runs measured before (--reuse), by function and arguments
JOURNAL: Path | None = None  # where every new run is added as it finishes (benchmarks.controls)


def journal(entry: dict) -> None:
    """Add one finished run to ``JOURNAL``'s calls, at once: a stopped study loses no run."""
    if JOURNAL is None:
        return
    kept = json.loads(JOURNAL.read_text()) if JOURNAL.exists() else {}
    kept["calls"] = [*kept.get("calls", []), entry]
    JOURNAL.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomically(JOURNAL, json.dumps(kept, indent=1))


def call_key(function: str, kwargs: dict) -> str:
    return function + json.dumps(kwargs, sort_keys=True)


def child(function: str, **kwargs) -> dict:
    """Run ``lorakit.claims.<function>(**kwargs)`` in a fresh process (so that runs share no state)
    and return its figures; print them as they come. A run given by ``--reuse`` (the same function
    and arguments) is taken from there instead: more training seeds add to a table without training
    the first ones again."""
    if call_key(function, kwargs) in REUSE:
        result = REUSE[call_key(function, kwargs)]
        CALLS.append({"function": function, "kwargs": kwargs, "result": result})
        return result
    command = [sys.executable, "-m", "benchmarks.claims", "--run", function, json.dumps(kwargs)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{function}({kwargs}) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    short = (
        {
            k: v
            for k, v in result.items()
            if k not in ("update_ranks", "curve", "rows", "update_ratios", "lora")
        }
        if isinstance(result, dict)
        else result
    )
    print(f"  {function} {json.dumps(kwargs)} -> {json.dumps(short)}", flush=True)
    CALLS.append({"function": function, "kwargs": kwargs, "result": result})
    journal(CALLS[-1])
    return result


def cell(values: list[float], percent: bool = True) -> str:
    """ "81% ± 4%" (mean ± standard error; no ± for one value)."""
    mean, se = _common.mean_se(values)
    if percent:
        return f"{mean:.0%}" + (f" ± {se:.0%}" if se else "")
    return f"{mean:.3g}" + (f" ± {se:.2g}" if se else "")


def seeds_line(args) -> str:
    n = len(args.train_seeds)
    seeds = " ".join(map(str, args.train_seeds))
    return f"{n} training seed{'s' if n > 1 else ''} ({seeds}); mean ± standard error"


def claim_1(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        for task in args.tasks:
            for variant in args.variants:
                runs.append(
                    child(
                        "where_lora_sits", variant=variant, task=task, seed=seed, steps=args.steps
                    )
                )
    base = child("base_model")
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


def claim_2_3(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        for method in ("lora", "full"):
            command = [
                sys.executable,
                "-m",
                "benchmarks.claims",
                "--one",
                method,
                str(seed),
                "--target",
                str(args.target),
                "--every",
                str(args.every),
                "--max-steps",
                str(args.max_steps),
            ]
            if method == "full" and args.full_lr:
                command += ["--lr", str(args.full_lr)]
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


def claim_4(args) -> dict:
    """Small data: a learning-rate sweep at the full set (first training seed), then every size at
    each best rate."""
    methods = {
        "LoRA r2": {"method": "lora", "r": 2},
        "LoRA r8": {"method": "lora", "r": 8},
        "full fine-tune": {"method": "full"},
    }
    grids = {"lora": args.lora_lrs, "full": args.full_lrs}
    sweep, best, done = [], {}, {}
    for name in ("LoRA r8", "full fine-tune"):  # LoRA r2 takes r8's rate: the sweep is small
        how = methods[name]
        tried = [
            child(
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
        winner = max(
            tried, key=lambda t: t["style_rate"] + t["plain_content"]
        )  # learnt the most, forgot the least
        best[name], done[(name, max(args.sizes), args.train_seeds[0])] = winner["lr"], winner
    best["LoRA r2"] = best["LoRA r8"]
    best = {name: best[name] for name in methods}
    runs = []
    for seed in args.train_seeds:
        for size in args.sizes:
            for name, how in methods.items():
                if (name, size, seed) in done:  # the sweep's run at the chosen rate is this one
                    runs.append(done[(name, size, seed)])
                    continue
                runs.append(
                    child(
                        "small_data", size=size, seed=seed, steps=args.steps, lr=best[name], **how
                    )
                    | {"name": name}
                )
    base = {size: child("base_memorisation", size=size) for size in args.sizes}
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
        runs.append(child("text_encoder_lora", seed=seed, steps=args.steps))
        runs.append(
            child("where_lora_sits", variant="attn2", task="concept", seed=seed, steps=args.steps)
        )
        runs.append(child("classifier_study", seed=seed))
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


def claim_6(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        runs.append(child("two_loras", seed=seed, steps=args.steps))
        for method in ("inversion", "lora", "both"):
            runs.append(child("inversion_and_lora", method=method, seed=seed, steps=args.steps))
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
        style: child("vae_ceiling", style=style)["style_rate"] for style in ("outline", "striped")
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
    ceilings = {style: child("vae_ceiling", style=style) for style in claims.STYLE_ORDER}
    runs = [
        child("many_styles", count=count, r=r, seed=seed, steps_per_style=args.steps_per_style)
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
        child("large_change", variant=v, r=r or 8, seed=seed, steps=args.steps) | {"r": r}
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
        child("sensitivity", lr=lr, r=r, alpha=alpha, seed=seed, steps=args.steps)
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


def command_line(argv: list[str]) -> str:
    """The command that measures a report, without where it was written or read from (--out,
    --reuse, --plot)."""
    kept, skipping = [], False
    for word in argv:
        if word.startswith("--"):
            skipping = word in ("--out", "--reuse", "--plot", "--journal")
        if not skipping:
            kept.append(word)
    return " ".join(["python -m benchmarks.claims", *kept])


def main(argv: list[str] | None = None) -> dict | None:
    parser = _common.parser(__doc__)
    parser.add_argument(
        "--claim",
        type=int,
        choices=CLAIMS,
        help="the claim to measure (2 and 3 are one experiment)",
    )
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--target", type=float, default=0.75, help="the style rate both must reach")
    parser.add_argument("--every", type=int, default=50, help="steps between judgements")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument(
        "--full-lr", type=float, help=f"full fine-tuning's learning rate (default {FULL_LR})"
    )
    parser.add_argument("--out", help="write the runs as JSON")
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="JSON",
        help="reports (--out) whose runs to take instead of training them again",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write them, with the table, to docs/claims/ "
        "(what lessons 09-10 and docs/claims.md show)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=("style", "concept"),
        default=["style", "concept"],
        help="claim 1: a drawing style (the outline set), a new meaning for a word ('a red vex')",
    )
    parser.add_argument(
        "--variants", nargs="+", choices=list(WHERE), default=list(WHERE), help="claim 1: where"
    )
    parser.add_argument(
        "--steps", type=int, help="training steps (claim 4: 200, claim 9: 150, the others 300)"
    )
    parser.add_argument(
        "--one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS
    )  # one run, in a child
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[2, 4, 8, 16], help="claim 4: training pictures"
    )
    parser.add_argument(
        "--lora-lrs", type=float, nargs="+", default=[1e-3, 3e-3], help="claim 4: LoRA's sweep"
    )
    parser.add_argument(
        "--full-lrs",
        type=float,
        nargs="+",
        default=[3e-5, 1e-4],
        help="claim 4: full fine-tuning's",
    )
    parser.add_argument("--plot", help="claim 4: write the learning-forgetting plot (PNG) here")
    parser.add_argument(
        "--ranks", type=int, nargs="+", help="claims 7 and 9: LoRA ranks (default 1 4 16; 2 16)"
    )
    parser.add_argument(
        "--steps-per-style", type=int, default=150, help="claim 7: training steps per style"
    )
    parser.add_argument("--alphas", type=float, nargs="+", default=[1, 16], help="claim 9: alphas")
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=[1e-4, 1e-3, 1e-2, 1e-1],
        help="claim 9: learning rates",
    )
    parser.add_argument(
        "--run", nargs=2, metavar=("FUNCTION", "KWARGS"), help=argparse.SUPPRESS
    )  # in a child
    parser.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        method, seed = args.one
        print(
            json.dumps(
                resources_run(method, int(seed), args.target, args.every, args.max_steps, args.lr)
            )
        )
        return None
    if args.run:
        function, kwargs = args.run
        print(json.dumps(getattr(claims, function)(**json.loads(kwargs))))
        return None
    if args.claim is None:
        parser.error("give --claim N, N from 1 to 9 (2 and 3 are one experiment)")
    args.steps = args.steps or {4: 200, 9: 150}.get(args.claim, 300)
    args.ranks = args.ranks or ([2, 16] if args.claim == 9 else [1, 4, 16])
    runner = {
        1: claim_1,
        2: claim_2_3,
        3: claim_2_3,
        4: claim_4,
        5: claim_5,
        6: claim_6,
        7: claim_7,
        8: claim_8,
        9: claim_9,
    }
    for path in args.reuse:
        REUSE.update(
            {
                call_key(c["function"], c["kwargs"]): c["result"]
                for c in json.loads(Path(path).read_text())["calls"]
            }
        )
    CALLS.clear()
    printed = io.StringIO()
    with contextlib.redirect_stdout(Tee(sys.stdout, printed)):
        report = runner[args.claim](args)
    report |= {
        "train_seeds": args.train_seeds,
        "command": command_line(argv if argv is not None else sys.argv[1:]),
        "table": claims.table_of(printed.getvalue()),
        "calls": list(CALLS),
    }
    if args.publish:
        path = claims.published_path(args.claim)
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomically(path, json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LORAKIT_MODE", "small")
    main()
