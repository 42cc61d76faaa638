"""``lorakit sample``: a grid of pictures, a row a prompt and a column a seed, with a LoRA or not.

Introduced in notebooks/06_train_style_lora.ipynb, to look at a trained LoRA from a terminal.

The LoRA file is read before the slow model load, so a bad file is refused at once; it is
applied to the UNet, and to the text encoder where the file has a part for it, at ``--scale``
(0: the base model's pictures exactly). The grid is written whole or not at all, in the format
its suffix names.

Left out: negative prompts, several LoRAs at once (``lorakit merge`` makes one of several).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorakit import formats
from lorakit.cli import pipeline
from lorakit.cli.arguments import FINITE, POSITIVE_INT, SEED

__all__ = ["IMAGE_FORMATS", "add_sample_parser", "cmd_sample"]

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def add_sample_parser(commands, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``lorakit sample`` and its options on ``commands`` (the subparsers)."""
    p = commands.add_parser(
        "sample",
        parents=parents,
        help="generate a grid of pictures, with a LoRA or without",
        description="One row per prompt, one column per seed.",
    )
    p.add_argument(
        "--lora",
        help="LoRA file (kohya/diffusers .safetensors or a PEFT folder); omit for the base model",
    )
    p.add_argument(
        "--prompt", action="append", required=True, help="a prompt (repeat for several rows)"
    )
    p.add_argument(
        "--seeds",
        type=SEED,
        nargs="+",
        default=[0, 1, 2, 3],
        help="one picture per seed (default 0 1 2 3)",
    )
    p.add_argument("--out", default="grid.png", help="the grid image (default grid.png)")
    p.add_argument(
        "--scale", type=FINITE, default=1.0, help="LoRA scale: 0 off, 1 as trained (default 1)"
    )
    p.add_argument(
        "--model", default="tiny", help="'tiny' (default), a hub id or a local SD 1.5 folder"
    )
    p.add_argument("--steps", type=POSITIVE_INT, help="denoising steps (default: the preset's)")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_FORMATS:
        raise ValueError(f"--out {out} needs an image suffix such as .png.")
    # read the file before the slow model load
    weights = formats.load_lora(args.lora) if args.lora else None
    pipe = pipeline.load_model(args.model)
    if weights is not None:  # the UNet, and the text encoder if the file has its part
        formats.apply_lora(pipe, weights, scale=args.scale)
    prompts = [p for p in args.prompt for _ in args.seeds]  # rows: prompts, columns: seeds
    images = pipeline.generate_pictures(
        pipe, prompts, list(args.seeds) * len(args.prompt), args.steps
    )
    labels = [f"seed {s}: {p}" for p in args.prompt for s in args.seeds]
    pipeline.save_grid(out, images, len(args.seeds), labels, IMAGE_FORMATS[out.suffix.lower()])
    print(out)
