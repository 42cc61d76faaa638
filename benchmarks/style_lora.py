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
import typing
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks import _common
from lorakit import formats, imagefolder, inject, metrics, sample, shapes, styles, train


def evaluate(pipe, combos, seeds, template: str) -> metrics.GridResult:
    """Score every (colour, shape) of ``combos`` x ``seeds`` on ``template`` (default sampler
    settings)."""

    def generate(prompts, seeds_):
        return sample.generate(pipe, prompts, seeds_, batch_size=32)

    cells = [(c, s, seed) for c, s in combos for seed in seeds]
    prompts = [template.format(colour=c, shape=s) for c, s, _ in cells]
    images = generate(prompts, [seed for *_, seed in cells])
    # evaluate_grid scores a full colour x shape grid; score held-out lists cell by cell with it.
    records, pictures = [], []
    for (colour, shape, seed), image in zip(cells, images, strict=True):
        one = metrics.evaluate_grid(
            lambda p, s, im=image: [im],
            colours=[colour],
            shapes=[shape],
            seeds=[seed],
            template=template,
            style="outline",
        )
        records += one.records
        pictures.append(image)
    return metrics.GridResult(records=records, style="outline", images=pictures)


def max_diff(a, b) -> float:
    """Largest pixel difference (0..255) between two lists of pictures."""
    return max(
        float(np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).max())
        for x, y in zip(a, b, strict=True)
    )


def row(name: str, result: metrics.GridResult) -> str:
    return (
        f"{name:<34}{result.style_rate:>8.1%}{result.colour_accuracy:>9.1%}"
        f"{result.shape_accuracy:>9.1%}"
        f"{result.both_accuracy:>9.1%}{len(result.records):>6}"
    )


GRID_NAMES = {"held-out": "held_out", "all 15": "all"}  # file names of the --out grids
# TrainConfig fields that take None, with the type of their other values (alpha: float, resolution:
# int, ...).
OPTIONAL = {
    name: next(a for a in typing.get_args(hint) if a is not type(None))
    for name, hint in typing.get_type_hints(train.TrainConfig).items()
    if type(None) in typing.get_args(hint)
}


def parse_settings(items: list[str]) -> dict:
    """``["r=8", "flip=false", "min_snr_gamma=none", "target_modules=attn2.to_k,attn2.to_v"]`` as
    TrainConfig overrides, typed."""
    defaults, overrides = train.TrainConfig(), {}
    for item in items:
        field, _, value = item.partition("=")
        if not hasattr(defaults, field) or not value:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field")
        current = getattr(defaults, field)
        if value.lower() == "none" and field in OPTIONAL:
            overrides[field] = None  # e.g. min_snr_gamma=none: the plain loss
        elif field == "target_modules" and "," in value:
            overrides[field] = value.split(",")  # explicit suffixes, e.g. attn2.to_k,attn2.to_v
        elif isinstance(current, bool):  # before int: bool("false") would be True
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--set {item!r}: {field} is true or false")
            overrides[field] = value.lower() == "true"
        elif isinstance(current, str):
            overrides[field] = value
        else:
            kind = type(current) if current is not None else OPTIONAL[field]
            overrides[field] = kind(value)
    return overrides


def pooled(results: list[metrics.GridResult]) -> metrics.GridResult:
    """One result of several LoRAs' pictures: its rates are the mean over the LoRAs (each scored the
    same pictures)."""
    return metrics.GridResult(
        records=[r for result in results for r in result.records],
        style=results[0].style,
        images=[im for result in results for im in result.images],
    )


def standard_error(results: list[metrics.GridResult]) -> dict[str, float]:
    """Standard error of the mean over the LoRAs (sample std / sqrt(n)) of style, colour and shape;
    0 for one LoRA.

    It holds both sources of spread: the training seed, and the sampling seeds each LoRA is scored
    on.
    """
    rates = {
        "style": [r.style_rate for r in results],
        "colour": [r.colour_accuracy for r in results],
        "shape": [r.shape_accuracy for r in results],
    }
    return {name: _common.mean_se(values)[1] for name, values in rates.items()}


def main(argv: list[str] | None = None) -> None:
    parser = _common.parser(__doc__)
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
    args = parser.parse_args(argv)

    pipe = _common.seeded_pipeline(args)
    overrides = {"steps": args.steps} if args.steps else {}
    try:
        overrides.update(parse_settings(args.set))
    except ValueError as err:
        parser.error(str(err))
    cfg = train.TrainConfig.for_mode("small", progress=False, **overrides)
    train_seeds = args.train_seeds or [cfg.seed]
    seeds = list(range(args.seeds))
    every = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    sets = {"held-out": list(styles.OUTLINE_HELD_OUT), "all 15": every}
    if args.held_out_only:
        del sets["all 15"]

    base = {}  # scored before any LoRA exists: the untouched base model
    for label, combos in sets.items():
        base[label, "trigger"] = evaluate(pipe, combos, seeds, styles.TEMPLATE)
        base[label, "plain"] = evaluate(pipe, combos, seeds, styles.PLAIN_TEMPLATE)

    dataset = imagefolder.ImageFolderDataset(
        styles.OUTLINE_DIR, resolution=pipe.unet.config.sample_size * pipe.vae_scale_factor
    )
    lora = {label: [] for label in sets}
    leak = {label: [] for label in sets}
    off_diff = {label: [] for label in sets}
    train_seconds = []
    for seed in train_seeds:
        run_cfg = replace(cfg, seed=seed)
        start = time.perf_counter()
        result = train.train_lora(pipe, dataset, run_cfg)
        seconds = time.perf_counter() - start
        train_seconds.append(seconds)
        print(
            f"seed {seed}: trained rank-{cfg.r} LoRA on {cfg.target_modules}, {cfg.steps} steps, "
            f"batch {cfg.batch_size}, "
            f"lr {cfg.lr}: {seconds:.0f} s, loss first 10 {np.mean(result.history[:10]):.4f} -> "
            "last 10 "
            f"{np.mean(result.history[-10:]):.4f}, torch threads {torch.get_num_threads()}",
            flush=True,
        )
        for label, combos in sets.items():
            inject.set_lora_scale(pipe.unet, 1.0)
            lora[label].append(evaluate(pipe, combos, seeds, styles.TEMPLATE))
            leak[label].append(evaluate(pipe, combos, seeds, styles.PLAIN_TEMPLATE))
            inject.set_lora_scale(pipe.unet, 0.0)
            off_diff[label].append(
                max_diff(
                    evaluate(pipe, combos, seeds, styles.TEMPLATE).images,
                    base[label, "trigger"].images,
                )
            )
        inject.set_lora_scale(pipe.unet, 1.0)
        if args.out:
            out = Path(args.out) / f"seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            for key in sets:
                sample.image_grid(lora[key][-1].images, cols=args.seeds, scale=2).save(
                    out / f"{GRID_NAMES[key]}_lora.png"
                )
            train.save_loss_plot(result, out / "loss.png")
            formats.save_lora(pipe.unet, out / "lora.safetensors", "kohya")
        inject.remove_lora(pipe.unet)

    header = f"{'':<34}{'outline':>8}{'colour':>9}{'shape':>9}{'both':>9}{'n':>6}"
    figures = {}
    for label in sets:
        print(
            f"\n== {label} combinations, {args.seeds} seeds each, LoRAs of training seeds "
            f"{train_seeds} =="
        )
        print(header)
        for seed, one in zip(train_seeds, lora[label], strict=True):
            print(row(f"LoRA seed {seed}, trigger prompts", one))
        mean, mean_leak = pooled(lora[label]), pooled(leak[label])
        err = standard_error(lora[label])
        if len(train_seeds) > 1:
            print(row(f"LoRA, mean of {len(train_seeds)} seeds", mean))
            print(
                f"{'  standard error of that mean':<34}"
                + "".join(
                    f"{err[k]:>{w}.1%}" for k, w in (("style", 8), ("colour", 9), ("shape", 9))
                )
            )
        print(row("base, same trigger prompts", base[label, "trigger"]))
        print(row("base, plain prompts", base[label, "plain"]))
        for seed, one in zip(train_seeds, leak[label], strict=True):
            print(row(f"LoRA seed {seed}, plain prompts (leak)", one))
        drop_c = base[label, "trigger"].colour_accuracy - mean.colour_accuracy
        drop_s = base[label, "trigger"].shape_accuracy - mean.shape_accuracy
        what = "mean " if len(train_seeds) > 1 else ""
        print(
            f"{what}style rate {mean.style_rate:.1%} (goal >= 80%): "
            f"{'PASS' if mean.style_rate >= 0.8 else 'FAIL'}; "
            f"{what}colour {drop_c * 100:+.1f} / shape {drop_s * 100:+.1f} points below base on "
            "the same prompts "
            f"(goal <= 10): {'PASS' if max(drop_c, drop_s) <= 0.10 else 'FAIL'}"
        )
        diff = max(off_diff[label])
        print(
            f"scale 0 vs base model, same prompts and seeds: max pixel diff {diff:.0f} (0..255): "
            f"{'PASS' if diff <= 1 else 'FAIL'}"
        )
        figures[label] = dict(
            style=mean.style_rate,
            colour=mean.colour_accuracy,
            shape=mean.shape_accuracy,
            base_colour=base[label, "trigger"].colour_accuracy,
            base_shape=base[label, "trigger"].shape_accuracy,
            leak=mean_leak.style_rate,
            scale0_diff=diff,
            stderr=err,
            per_seed={
                seed: dict(
                    style=one.style_rate,
                    colour=one.colour_accuracy,
                    shape=one.shape_accuracy,
                    leak=lk.style_rate,
                    seconds=secs,
                )
                for seed, one, lk, secs in zip(
                    train_seeds, lora[label], leak[label], train_seconds, strict=True
                )
            },
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                dict(
                    config=asdict(cfg), train_seeds=train_seeds, seeds=args.seeds, figures=figures
                ),
                indent=1,
            )
        )
    print("\nLoRA on trigger prompts (all training seeds), pictures with colour and shape right:")
    print(pooled(lora[list(sets)[-1]]).table())
    if args.out:
        for key in sets:
            sample.image_grid(base[key, "trigger"].images, cols=args.seeds, scale=2).save(
                Path(args.out) / f"{GRID_NAMES[key]}_base.png"
            )
        print(f"grids, loss curves and LoRAs written to {args.out} (one folder per training seed)")


if __name__ == "__main__":
    main()
