"""Does a style LoRA learn the outline style and keep the content?
``python -m benchmarks.style_lora``.

Trains a LoRA with the default small-world settings (``train.TrainConfig.for_mode("small")``) on
``data/styles/outline``, then scores, with lorakit's detectors, the same prompts and seeds drawn by

* the LoRA at scale 1 on ``styles.TEMPLATE`` ("a blue circle in sks style"): style rate and content;
* the base model (before any LoRA) on the same trigger prompts and on ``styles.PLAIN_TEMPLATE``;
* the LoRA at scale 1 on the plain prompts (does the style leak without the trigger?);
* the LoRA at scale 0, which must give the base model's pictures (max pixel difference, 0..255).

First on the held-out combinations (``styles.OUTLINE_HELD_OUT``, never in the set), then on all
15 colour x shape combinations, 8 sampling seeds each (``--seeds``). The course's goals: style rate
>= 80% on held-out trigger prompts, colour and shape accuracy at most 10 points below the base model
on the same prompts.

The training seed alone moves these figures by 10 to 30 points, so one LoRA decides little:
``--train-seeds 0 1 2`` trains one LoRA per seed, prints each, and judges the goals on their mean.
Lesson: notebooks/06_train_style_lora.ipynb.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks import _common
from benchmarks.style_scoring import (
    GRID_NAMES,
    evaluate,
    max_diff,
    parse_settings,
    pooled,
    row,
    standard_error,
)
from lorakit import formats, imagefolder, inject, sample, shapes, styles, train

__all__ = ["main", "parse_settings", "standard_error"]


def options(parser) -> None:
    """The command line's options."""
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: TrainConfig's 300)"
    )
    parser.add_argument("--seeds", type=int, default=8, help="sampling seeds per prompt")
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="train one LoRA per seed and report each and their mean (default: TrainConfig's seed)",
    )
    parser.add_argument(
        "--out", default=None, help="save the LoRA, loss curve and image grids in this folder"
    )
    parser.add_argument(
        "--model", default="tiny", help='"tiny" (the committed model) or a saved pipeline folder'
    )
    parser.add_argument("--device", default=None, help="cuda when present, else cpu")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="other TrainConfig settings, e.g. r=8 lr=5e-4 target_modules=attn min_snr_gamma=5 "
        "flip=false",
    )
    parser.add_argument(
        "--held-out-only",
        action="store_true",
        help="score the held-out combinations only (quicker)",
    )
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def train_one(pipe, dataset, cfg, args, sets: dict, seeds: list, base: dict) -> dict:
    """One LoRA of training seed ``cfg.seed``: trained, scored on every set (scale 1 on the trigger
    and the plain prompts, scale 0 against the base model), saved under ``--out``, removed."""
    start = time.perf_counter()
    result = train.train_lora(pipe, dataset, cfg)
    seconds = time.perf_counter() - start
    print(
        f"seed {cfg.seed}: trained rank-{cfg.r} LoRA on {cfg.target_modules}, {cfg.steps} steps, "
        f"batch {cfg.batch_size}, lr {cfg.lr}: {seconds:.0f} s, loss first 10 "
        f"{np.mean(result.history[:10]):.4f} -> last 10 {np.mean(result.history[-10:]):.4f}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    scored = {"seconds": seconds, "lora": {}, "leak": {}, "off_diff": {}}
    for label, combos in sets.items():
        inject.set_lora_scale(pipe.unet, 1.0)
        scored["lora"][label] = evaluate(pipe, combos, seeds, styles.TEMPLATE)
        scored["leak"][label] = evaluate(pipe, combos, seeds, styles.PLAIN_TEMPLATE)
        inject.set_lora_scale(pipe.unet, 0.0)
        off = evaluate(pipe, combos, seeds, styles.TEMPLATE).images
        scored["off_diff"][label] = max_diff(off, base[label, "trigger"].images)
    inject.set_lora_scale(pipe.unet, 1.0)
    if args.out:
        out = Path(args.out) / f"seed{cfg.seed}"
        out.mkdir(parents=True, exist_ok=True)
        for key in sets:
            sample.image_grid(scored["lora"][key].images, cols=args.seeds, scale=2).save(
                out / f"{GRID_NAMES[key]}_lora.png"
            )
        train.save_loss_plot(result, out / "loss.png")
        formats.save_lora(pipe.unet, out / "lora.safetensors", "kohya")
    inject.remove_lora(pipe.unet)
    return scored


def print_set(label: str, args, runs: dict, base: dict) -> None:
    """The table of one set of prompts: each LoRA, their mean and its standard error, the base
    model, the leak to plain prompts, and the course's goals."""
    lora, leak, seeds = runs["lora"], runs["leak"], list(runs["by_seed"])
    print(f"\n== {label} combinations, {args.seeds} seeds each, LoRAs of training seeds {seeds} ==")
    print(f"{'':<34}{'outline':>8}{'colour':>9}{'shape':>9}{'both':>9}{'n':>6}")
    for seed, one in zip(seeds, lora, strict=True):
        print(row(f"LoRA seed {seed}, trigger prompts", one))
    mean, err = pooled(lora), standard_error(lora)
    if len(seeds) > 1:
        print(row(f"LoRA, mean of {len(seeds)} seeds", mean))
        print(
            f"{'  standard error of that mean':<34}"
            + "".join(f"{err[k]:>{w}.1%}" for k, w in (("style", 8), ("colour", 9), ("shape", 9)))
        )
    print(row("base, same trigger prompts", base[label, "trigger"]))
    print(row("base, plain prompts", base[label, "plain"]))
    for seed, one in zip(seeds, leak, strict=True):
        print(row(f"LoRA seed {seed}, plain prompts (leak)", one))
    drop_c = base[label, "trigger"].colour_accuracy - mean.colour_accuracy
    drop_s = base[label, "trigger"].shape_accuracy - mean.shape_accuracy
    what = "mean " if len(seeds) > 1 else ""
    print(
        f"{what}style rate {mean.style_rate:.1%} (goal >= 80%): "
        f"{'PASS' if mean.style_rate >= 0.8 else 'FAIL'}; "
        f"{what}colour {drop_c * 100:+.1f} / shape {drop_s * 100:+.1f} points below base on "
        f"the same prompts (goal <= 10): {'PASS' if max(drop_c, drop_s) <= 0.10 else 'FAIL'}"
    )
    diff = max(runs["off_diff"])
    print(
        f"scale 0 vs base model, same prompts and seeds: max pixel diff {diff:.0f} (0..255): "
        f"{'PASS' if diff <= 1 else 'FAIL'}"
    )


def figures_of(label: str, runs: dict, base: dict) -> dict:
    """One set's figures for ``--json``: the means, the base model's, and each LoRA's."""
    mean = pooled(runs["lora"])
    return dict(
        style=mean.style_rate,
        colour=mean.colour_accuracy,
        shape=mean.shape_accuracy,
        base_colour=base[label, "trigger"].colour_accuracy,
        base_shape=base[label, "trigger"].shape_accuracy,
        leak=pooled(runs["leak"]).style_rate,
        scale0_diff=max(runs["off_diff"]),
        stderr=standard_error(runs["lora"]),
        per_seed={
            seed: dict(
                style=one.style_rate,
                colour=one.colour_accuracy,
                shape=one.shape_accuracy,
                leak=lk.style_rate,
                seconds=secs,
            )
            for (seed, secs), one, lk in zip(
                runs["by_seed"].items(), runs["lora"], runs["leak"], strict=True
            )
        },
    )


def main(argv: list[str] | None = None) -> None:
    parser = _common.parser(__doc__)
    options(parser)
    args = parser.parse_args(argv)
    pipe = _common.seeded_pipeline(args)
    overrides = {"steps": args.steps} if args.steps else {}
    try:
        overrides.update(parse_settings(args.set))
    except ValueError as err:
        parser.error(str(err))
    cfg = train.TrainConfig.for_mode("small", progress=False, **overrides)
    train_seeds, seeds = args.train_seeds or [cfg.seed], list(range(args.seeds))
    every = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    sets = {"held-out": list(styles.OUTLINE_HELD_OUT), "all 15": every}
    if args.held_out_only:
        del sets["all 15"]
    base = {}  # scored before any LoRA exists: the untouched base model
    for label, combos in sets.items():
        base[label, "trigger"] = evaluate(pipe, combos, seeds, styles.TEMPLATE)
        base[label, "plain"] = evaluate(pipe, combos, seeds, styles.PLAIN_TEMPLATE)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    dataset = imagefolder.ImageFolderDataset(styles.OUTLINE_DIR, resolution=size)
    scored = [
        train_one(pipe, dataset, replace(cfg, seed=s), args, sets, seeds, base) for s in train_seeds
    ]
    runs = {
        label: {
            "by_seed": {s: one["seconds"] for s, one in zip(train_seeds, scored, strict=True)},
            **{k: [one[k][label] for one in scored] for k in ("lora", "leak", "off_diff")},
        }
        for label in sets
    }
    for label in sets:
        print_set(label, args, runs[label], base)
    if args.json:
        figures = {label: figures_of(label, runs[label], base) for label in sets}
        report = dict(
            config=asdict(cfg), train_seeds=train_seeds, seeds=args.seeds, figures=figures
        )
        Path(args.json).write_text(json.dumps(report, indent=1))
    print("\nLoRA on trigger prompts (all training seeds), pictures with colour and shape right:")
    print(pooled(runs[list(sets)[-1]]["lora"]).table())
    if args.out:
        for key in sets:
            sample.image_grid(base[key, "trigger"].images, cols=args.seeds, scale=2).save(
                Path(args.out) / f"{GRID_NAMES[key]}_base.png"
            )
        print(f"grids, loss curves and LoRAs written to {args.out} (one folder per training seed)")


if __name__ == "__main__":
    main()
