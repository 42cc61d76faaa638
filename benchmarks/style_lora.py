"""Does a style LoRA learn the outline style and keep the content? ``python -m benchmarks.style_lora``.

Trains a LoRA with the default small-world settings (``train.TrainConfig.for_mode("small")``) on
``data/styles/outline``, then scores, with lorakit's detectors, the same prompts and seeds drawn by

* the LoRA at scale 1 on ``styles.TEMPLATE`` ("a blue circle in sks style"): style rate and content;
* the base model (before any LoRA) on the same trigger prompts and on ``styles.PLAIN_TEMPLATE``;
* the LoRA at scale 1 on the plain prompts (does the style leak without the trigger?);
* the LoRA at scale 0, which must give the base model's pictures (max pixel difference, 0..255).

First on the held-out combinations (``styles.OUTLINE_HELD_OUT``, never in the set), then on all
15 colour x shape combinations. Goals (issue 4): style rate >= 80% on held-out trigger prompts,
colour and shape accuracy at most 10 points below the base model on the same prompts.
Lesson: notebooks/06_train_style_lora.ipynb.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lorakit import data, inject, metrics, models, sample, styles, train


def evaluate(pipe, combos, seeds, template: str) -> metrics.GridResult:
    """Score every (colour, shape) of ``combos`` x ``seeds`` on ``template`` (default sampler settings)."""
    def generate(prompts, seeds_):
        return sample.generate(pipe, prompts, seeds_, batch_size=32)
    cells = [(c, s, seed) for c, s in combos for seed in seeds]
    prompts = [template.format(colour=c, shape=s) for c, s, _ in cells]
    images = generate(prompts, [seed for *_, seed in cells])
    # evaluate_grid scores a full colour x shape grid; score held-out lists cell by cell with it.
    records, pictures = [], []
    for (colour, shape, seed), image in zip(cells, images, strict=True):
        one = metrics.evaluate_grid(lambda p, s, im=image: [im], colours=[colour], shapes=[shape],
                                    seeds=[seed], template=template, style="outline")
        records += one.records
        pictures.append(image)
    return metrics.GridResult(records=records, style="outline", images=pictures)


def max_diff(a, b) -> float:
    """Largest pixel difference (0..255) between two lists of pictures."""
    return max(float(np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).max()) for x, y in zip(a, b, strict=True))


def row(name: str, result: metrics.GridResult) -> str:
    return (f"{name:<34}{result.style_rate:>8.1%}{result.colour_accuracy:>9.1%}{result.shape_accuracy:>9.1%}"
            f"{result.both_accuracy:>9.1%}{len(result.records):>6}")


def parse_settings(items: list[str]) -> dict:
    """``["r=8", "flip=false", "target_modules=attn2.to_k,attn2.to_v"]`` as TrainConfig overrides, typed."""
    defaults, overrides = train.TrainConfig(), {}
    for item in items:
        field, _, value = item.partition("=")
        if not hasattr(defaults, field) or not value:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field")
        current = getattr(defaults, field)
        if field == "target_modules" and "," in value:
            overrides[field] = value.split(",")  # explicit suffixes, e.g. attn2.to_k,attn2.to_v
        elif isinstance(current, bool):  # before int: bool("false") would be True
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--set {item!r}: {field} is true or false")
            overrides[field] = value.lower() == "true"
        elif isinstance(current, str):
            overrides[field] = value
        else:
            kind = type(current) if current is not None else (float if field in ("alpha", "min_snr_gamma") else int)
            overrides[field] = kind(value)
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: TrainConfig's 300)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--out", default=None, help="save the LoRA, loss curve and image grids in this folder")
    parser.add_argument("--model", default="tiny", help='"tiny" (the committed model) or a saved pipeline folder')
    parser.add_argument("--device", default=None, help="cuda when present, else cpu")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="other TrainConfig settings, e.g. r=8 lr=5e-4 target_modules=attn min_snr_gamma=5 flip=false")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    pipe = models.load_pipeline(args.model, device=args.device, dtype="float32")
    overrides = {"steps": args.steps} if args.steps else {}
    try:
        overrides.update(parse_settings(args.set))
    except ValueError as err:
        parser.error(str(err))
    cfg = train.TrainConfig.for_mode("small", progress=False, **overrides)
    seeds = list(range(args.seeds))
    every = [(c, s) for c in data.COLOURS for s in data.SHAPES]
    sets = {"held-out": list(styles.OUTLINE_HELD_OUT), "all 15": every}

    base = {}  # scored before any LoRA exists: the untouched base model
    for label, combos in sets.items():
        base[label, "trigger"] = evaluate(pipe, combos, seeds, styles.TEMPLATE)
        base[label, "plain"] = evaluate(pipe, combos, seeds, styles.PLAIN_TEMPLATE)

    dataset = data.ImageFolderDataset(styles.OUTLINE_DIR, resolution=pipe.unet.config.sample_size * pipe.vae_scale_factor)
    start = time.perf_counter()
    result = train.train_lora(pipe, dataset, cfg)
    seconds = time.perf_counter() - start
    print(f"trained rank-{cfg.r} LoRA on {cfg.target_modules}, {cfg.steps} steps, batch {cfg.batch_size}, lr {cfg.lr}: "
          f"{seconds:.0f} s, loss first 10 {np.mean(result.history[:10]):.4f} -> last 10 {np.mean(result.history[-10:]):.4f}, "
          f"torch threads {torch.get_num_threads()}")

    lora, leak, off = {}, {}, {}
    for label, combos in sets.items():
        inject.set_lora_scale(pipe.unet, 1.0)
        lora[label] = evaluate(pipe, combos, seeds, styles.TEMPLATE)
        leak[label] = evaluate(pipe, combos, seeds, styles.PLAIN_TEMPLATE)
        inject.set_lora_scale(pipe.unet, 0.0)
        off[label] = evaluate(pipe, combos, seeds, styles.TEMPLATE)
    inject.set_lora_scale(pipe.unet, 1.0)

    header = f"{'':<34}{'outline':>8}{'colour':>9}{'shape':>9}{'both':>9}{'n':>6}"
    for label in sets:
        print(f"\n== {label} combinations, {args.seeds} seeds each ==")
        print(header)
        print(row("LoRA, trigger prompts", lora[label]))
        print(row("base, same trigger prompts", base[label, "trigger"]))
        print(row("base, plain prompts", base[label, "plain"]))
        print(row("LoRA, plain prompts (leak)", leak[label]))
        print(row("LoRA scale 0, trigger prompts", off[label]))
        drop_c = base[label, "trigger"].colour_accuracy - lora[label].colour_accuracy
        drop_s = base[label, "trigger"].shape_accuracy - lora[label].shape_accuracy
        print(f"style rate {lora[label].style_rate:.1%} (goal >= 80%): {'PASS' if lora[label].style_rate >= 0.8 else 'FAIL'}; "
              f"colour {drop_c * 100:+.1f} / shape {drop_s * 100:+.1f} points below base on the same prompts "
              f"(goal <= 10): {'PASS' if max(drop_c, drop_s) <= 0.10 else 'FAIL'}")
        diff = max_diff(off[label].images, base[label, "trigger"].images)
        print(f"scale 0 vs base model, same prompts and seeds: max pixel diff {diff:.0f} (0..255): "
              f"{'PASS' if diff <= 1 else 'FAIL'}")
    if args.json:
        figures = {label: dict(style=lora[label].style_rate, colour=lora[label].colour_accuracy,
                               shape=lora[label].shape_accuracy, base_colour=base[label, "trigger"].colour_accuracy,
                               base_shape=base[label, "trigger"].shape_accuracy, leak=leak[label].style_rate,
                               scale0_diff=max_diff(off[label].images, base[label, "trigger"].images))
                   for label in sets}
        Path(args.json).write_text(json.dumps(dict(config=asdict(cfg), seconds=seconds, figures=figures), indent=1))
    print("\nLoRA on trigger prompts, pictures with colour and shape right:")
    print(lora["all 15"].table())

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cols = args.seeds
        for label, key in (("held_out", "held-out"), ("all", "all 15")):
            sample.image_grid(base[key, "trigger"].images, cols=cols, scale=2).save(out / f"{label}_base.png")
            sample.image_grid(lora[key].images, cols=cols, scale=2).save(out / f"{label}_lora.png")
        train.save_loss_plot(result, out / "loss.png")
        train.formats.save_lora(pipe.unet, out / "lora.safetensors", "kohya")
        print(f"grids, loss curve and LoRA written to {out}")


if __name__ == "__main__":
    main()
