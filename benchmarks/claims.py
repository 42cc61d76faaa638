"""The article's claims about LoRA, measured on the tiny SD: ``python -m benchmarks.claims --claim 2``.

One entry per claim (``--claim N``); each trains with ``lorakit.train`` (LoRA and, as the baseline, a
full fine-tune of the UNet with the same loop, data, seeds and objective), judges with
``lorakit.metrics``, prints a table of the mean and standard error over training seeds
(``--train-seeds``), and writes every run as JSON (``--out``).

* **1, where LoRA sits**: the same rank and steps on ``attn2`` (cross-attention, the article's place),
  ``attn1``, both, the feed-forward layers, ``attn2+ff``, every linear layer, and a full fine-tune,
  for two kinds of change: a drawing style (the outline set; style rate and content on the held-out
  prompts) and a new meaning for a word ("a red vex" for red triangles; how often "a <colour> vex"
  draws a triangle, and of its colour); for both, whether the model still draws its own plain
  prompts right, and filled.
* **2 and 3, size and resources** (one experiment): LoRA (the small preset, rank 8 on ``attn2+ff``)
  against a full fine-tune on the outline set: trainable parameters, the file it saves, the
  optimizer's state, the median time of a training step, the process's peak memory (RSS, model
  included), and the steps and seconds each needs to reach a style rate of ``--target`` on the
  held-out prompts (4 prompts x 4 seeds, judged every ``--every`` steps up to ``--max-steps``).
  Each run is its own process, so that peak memories do not mix.

Run it with nothing else busy on the machine: two torch jobs at once slow each other down.
The figures and verdicts are in docs/claims.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLAIMS = (1, 2, 3)
# Claim 1's variants: where the LoRA sits (inject.PRESETS names, suffix lists, "linear": every linear layer
# of the UNet), and the full fine-tune.
WHERE = {"attn2": "attn2", "attn1": [f"attn1.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0")], "attn1+attn2": "attn",
         "ff": ["ff.net.0.proj", "ff.net.2"], "attn2+ff": "attn2+ff", "every linear": "linear", "full fine-tune": "full"}
FULL_LR = 1e-4  # full fine-tuning's learning rate: LoRA's 1e-3 on every weight of the UNet wrecks it


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


def resources_run(method: str, seed: int, target: float, every: int, max_steps: int, lr: float | None) -> dict:
    """One training run of ``method`` ("lora" or "full"), in this process: its sizes, times and progress."""
    import torch

    from lorakit import imagefolder, metrics, models, sample, styles, train

    pipe = models.load_pipeline("tiny", dtype="float32")
    dataset = imagefolder.ImageFolderDataset(styles.OUTLINE_DIR, resolution=64)
    prompts = [p for p in styles.style_prompts() for _ in range(4)]
    seeds = list(range(4)) * len(styles.style_prompts())
    overrides = {"lr": lr} if lr else ({"lr": FULL_LR} if method == "full" else {})
    curve, seconds, step_seconds, reached = [], 0.0, [], None
    with tempfile.TemporaryDirectory() as out:
        for steps in range(every, max_steps + 1, every):  # train on, from the checkpoint, and judge
            cfg = train.TrainConfig.for_mode("small", method=method, seed=seed, steps=steps, progress=False,
                                             output_dir=out, checkpoint_every=every, **overrides)
            start = time.perf_counter()
            result = train.train_lora(pipe, dataset, cfg)
            seconds += time.perf_counter() - start
            step_seconds += result.step_seconds
            found = metrics.score_pictures(sample.generate(pipe, prompts, seeds), prompts)
            curve.append({"steps": steps, "style_rate": found.style_rate, "content": found.both_accuracy,
                          "train_seconds": seconds})
            if reached is None and found.style_rate >= target:
                reached = {"steps": steps, "train_seconds": seconds}
                break
        params = [p for p in pipe.unet.parameters() if p.requires_grad] if method == "full" else [
            p for n, p in pipe.unet.named_parameters() if ".lora_" in n]
        saved = Path(out) / (train.FULL_FILE if method == "full" else "lora.safetensors")
        file_bytes = saved.stat().st_size
        state = torch.load(Path(out) / train.CHECKPOINT, weights_only=True)["optimizer"]["state"]
    optimizer_bytes = sum(t.numel() * t.element_size() for s in state.values() for t in s.values()
                          if isinstance(t, torch.Tensor) and t.dim() > 0)
    return {"method": method, "seed": seed, "lr": cfg.lr,
            "trainable_params": sum(p.numel() for p in params), "file_bytes": file_bytes,
            "optimizer_bytes": optimizer_bytes, "step_seconds_median": statistics.median(step_seconds),
            "peak_rss_mb": _peak_rss_mb(), "reached": reached, "target": target, "curve": curve}


def where_run(variant: str, task: str, seed: int, steps: int) -> dict:
    """Claim 1, one run: train ``variant`` (a key of ``WHERE``) on ``task`` ("style": the outline set; "concept":
    "a red vex" for red triangles) for ``steps``, then judge it; in this process."""
    import torch

    from lorakit import imagefolder, inject, metrics, models, sample, shapes, styles, train

    pipe = models.load_pipeline("tiny", dtype="float32")
    if task == "style":
        dataset = imagefolder.ImageFolderDataset(styles.OUTLINE_DIR, resolution=64)
    else:
        dataset = [(imagefolder.to_tensor(shapes.render(spec)), text) for spec, text in styles.concept_examples()]
    target = WHERE[variant]
    if target == "linear":
        target = [n for n, m in pipe.unet.named_modules() if isinstance(m, torch.nn.Linear)]
    overrides = {"method": "full", "lr": FULL_LR} if target == "full" else {"target_modules": target}
    cfg = train.TrainConfig.for_mode("small", seed=seed, steps=steps, progress=False, **overrides)
    trainable = sum(p.numel() for p in pipe.unet.parameters()) if target == "full" else None
    start = time.perf_counter()
    train.train_lora(pipe, dataset, cfg)
    seconds = time.perf_counter() - start
    if trainable is None:
        trainable = sum(layer.lora_A.weight.numel() + layer.lora_B.weight.numel() for _, layer in inject.lora_layers(pipe.unet))
    seeds = [0, 1, 2, 3]

    def judge(prompts_):
        prompts = [p for p in prompts_ for _ in seeds]
        return metrics.score_pictures(sample.generate(pipe, prompts, seeds * len(prompts_)), prompts)

    plain = [styles.caption(c, sh, trigger=False) for c, sh in styles.OUTLINE_HELD_OUT + styles.OUTLINE_TRAIN[:4]]
    kept = judge(plain)  # the base model's own prompts: does it still draw what they ask, filled?
    result = {"variant": variant, "task": task, "seed": seed, "steps": steps, "trainable_params": trainable,
              "train_seconds": seconds, "plain_content": kept.both_accuracy, "plain_outline": kept.style_rate}
    if task == "style":
        found = judge(styles.style_prompts())
        result |= {"style_rate": found.style_rate, "content": found.both_accuracy}
    else:
        concept = [f"a {c} {styles.CONCEPT_WORD}" for c in shapes.COLOURS]
        images = sample.generate(pipe, [p for p in concept for _ in seeds], seeds * len(concept))
        found = [metrics.detect(image) for image in images]
        colours = [p.split()[1] for p in concept for _ in seeds]
        result |= {"concept_shape": sum(f["shape"] == styles.CONCEPT_SHAPE for f in found) / len(found),
                   "concept_colour": sum(f["colour"] == c for f, c in zip(found, colours, strict=True)) / len(found)}
    return result


def claim_1(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        for task in args.tasks:
            for variant in args.variants:
                command = [sys.executable, "-m", "benchmarks.claims", "--where", variant, task, str(seed),
                           "--steps", str(args.steps)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  {json.dumps(runs[-1])}", flush=True)
    n = len(args.train_seeds)
    print(f"\nclaim 1, where the LoRA sits: rank 8, {args.steps} steps, the small preset otherwise; full fine-tune at "
          f"lr {FULL_LR} ({n} training seed{'s' if n > 1 else ''}; mean ± standard error; 16-20 pictures a figure)")
    columns = {"style": [("style", "style_rate"), ("content", "content")],
               "concept": [("'vex' = triangle", "concept_shape"), ("its colour", "concept_colour")]}
    for task in args.tasks:
        heads = columns[task] + [("plain prompts right", "plain_content"), ("plain drawn hollow", "plain_outline")]
        print(f"\n{task}: {'variant':<16}{'trainable':>11}" + "".join(f"{h:>22}" for h, _ in heads))
        for variant in args.variants:
            mine = [r for r in runs if r["task"] == task and r["variant"] == variant]
            cells = []
            for _, key in heads:
                mean, se = mean_se([r[key] for r in mine])
                cells.append(f"{mean:.0%}" + (f" ± {se:.0%}" if se else ""))
            print(f"{'':<7}{variant:<16}{mine[0]['trainable_params']:>11,}" + "".join(f"{c:>22}" for c in cells))
    return {"claim": "1", "runs": runs}


def mean_se(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (0 for one value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def claim_2_3(args) -> dict:
    runs = []
    for seed in args.train_seeds:
        for method in ("lora", "full"):
            command = [sys.executable, "-m", "benchmarks.claims", "--one", method, str(seed), "--target", str(args.target),
                       "--every", str(args.every), "--max-steps", str(args.max_steps)]
            if method == "full" and args.full_lr:
                command += ["--lr", str(args.full_lr)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  seed {seed} {method}: {json.dumps({k: v for k, v in runs[-1].items() if k != 'curve'})}",
                  flush=True)
    print(f"\nclaims 2 and 3, LoRA against a full fine-tune of the tiny SD's UNet on the outline set "
          f"({len(args.train_seeds)} training seed{'s' if len(args.train_seeds) > 1 else ''}; mean ± standard error)")
    rows = [("trainable parameters", "trainable_params", "{:,.0f}"), ("file saved, KB", "file_bytes", "{:,.1f}"),
            ("optimizer state, KB", "optimizer_bytes", "{:,.1f}"), ("step, ms (median)", "step_seconds_median", "{:,.1f}"),
            ("peak process memory, MB", "peak_rss_mb", "{:,.0f}")]
    scale = {"file_bytes": 1 / 1024, "optimizer_bytes": 1 / 1024, "step_seconds_median": 1000}
    print(f"{'':<28}{'LoRA':>22}{'full fine-tune':>22}{'full / LoRA':>13}")
    for name, key, fmt in rows:
        cells, means = [], []
        for method in ("lora", "full"):
            mean, se = mean_se([r[key] * scale.get(key, 1) for r in runs if r["method"] == method])
            means.append(mean)
            cells.append((fmt.format(mean) + (f" ± {fmt.format(se)}" if se else "")).rjust(22))
        print(f"{name:<28}{''.join(cells)}{means[1] / means[0]:>12.2f}x")
    for method in ("lora", "full"):
        hits = [r["reached"] for r in runs if r["method"] == method]
        got = [h for h in hits if h]
        if got:
            (steps, steps_se), (secs, secs_se) = (mean_se([h[k] for h in got]) for k in ("steps", "train_seconds"))
            text = f"{steps:.1f} ± {steps_se:.1f} steps, {secs:.1f} ± {secs_se:.1f} s"
        else:
            text = "not reached"
        print(f"to a style rate of {args.target:.0%} ({method}): {text} ({len(got)} of {len(hits)} runs within "
              f"{args.max_steps} steps)")
    return {"claim": "2-3", "runs": runs}


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claim", type=int, choices=CLAIMS, help="the claim to measure (2 and 3 are one experiment)")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--target", type=float, default=0.75, help="the style rate both must reach")
    parser.add_argument("--every", type=int, default=50, help="steps between judgements")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--full-lr", type=float, help=f"full fine-tuning's learning rate (default {FULL_LR})")
    parser.add_argument("--out", help="write the runs as JSON")
    parser.add_argument("--tasks", nargs="+", choices=("style", "concept"), default=["style", "concept"],
                        help="claim 1: a drawing style (the outline set), a new meaning for a word ('a red vex')")
    parser.add_argument("--variants", nargs="+", choices=list(WHERE), default=list(WHERE), help="claim 1: where")
    parser.add_argument("--steps", type=int, default=300, help="claim 1: training steps")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--where", nargs=3, metavar=("VARIANT", "TASK", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        method, seed = args.one
        print(json.dumps(resources_run(method, int(seed), args.target, args.every, args.max_steps, args.lr)))
        return None
    if args.where:
        variant, task, seed = args.where
        print(json.dumps(where_run(variant, task, int(seed), args.steps)))
        return None
    if args.claim is None:
        parser.error("give --claim 1, 2 or 3")
    report = claim_1(args) if args.claim == 1 else claim_2_3(args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LORAKIT_MODE", "small")
    main()
