"""``lorakit train``: a LoRA trained on an image folder, its loss plot and a before/after grid.

Introduced in notebooks/06_train_style_lora.ipynb (the same training, from a terminal).

Unset options take ``train.TrainConfig.for_mode``'s defaults: the small preset for ``--model
tiny`` (with ``QUICK``: 200 steps at lr 1.5e-3 without LoRA dropout, which passed the rule of
docs/style-lora.md against its 300 steps at lr 1e-3 over eight seeds), SD 1.5's for any other
model. Every setting and the folder are checked before the slow model load; ``--resume``
continues from the checkpoint in ``--out``. Under ``accelerate launch --multi_gpu --num_processes
N -m lorakit.cli train ...`` the N processes train the same LoRA as one (``--batch-size`` is the
batch of all of them) and only the main process writes files and prints.

Left out: learning-rate schedules and validation (the Python API's), config files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from lorakit import formats, inject, targets
from lorakit.cli import pipeline
from lorakit.cli.arguments import (
    FRACTION,
    POSITIVE,
    POSITIVE_INT,
    RESOLUTION,
    SEED,
    number_type,
    parse_targets,
)

__all__ = [
    "CHECKPOINTS",
    "CONFIG_FILE",
    "GRID_FILE",
    "QUICK",
    "add_train_parser",
    "cmd_train",
    "run_config",
]

GRID_FILE, CONFIG_FILE = "before_after.png", "train_config.json"
# the small preset's run, shorter and without LoRA dropout (docs/style-lora.md, "Fewer steps")
QUICK = {"steps": 200, "lr": 1.5e-3, "lora_dropout": 0.0}
CHECKPOINTS = 4  # checkpoints a training run writes by default (--checkpoint-every steps // 4)


def add_train_parser(commands, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``lorakit train`` and its options on ``commands`` (the subparsers)."""
    p = commands.add_parser(
        "train",
        parents=parents,
        help="train a LoRA on an image folder",
        description="Train a cross-attention LoRA on a folder of images + metadata.jsonl. "
        "Unset options take the defaults of lorakit.train.TrainConfig.for_mode: the small "
        "preset for --model tiny (run for 200 steps at lr 1.5e-3 without LoRA dropout, measured "
        "against its 300 at 1e-3 in docs/style-lora.md), the full (SD 1.5) preset for any other "
        "model. "
        "Several GPUs: accelerate launch --multi_gpu --num_processes N -m lorakit.cli train ... "
        "trains the same LoRA as one process.",
    )
    p.add_argument(
        "--data", required=True, help="image folder with metadata.jsonl (file_name, text)"
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder: LoRA file, loss.png, before_after.png, checkpoint",
    )
    p.add_argument(
        "--model", default="tiny", help="'tiny' (default), a hub id or a local SD 1.5 folder"
    )
    _lora_options(p)
    _training_options(p)
    _regularisation_options(p)
    _run_options(p)
    p.set_defaults(func=cmd_train)


def _lora_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rank", type=POSITIVE_INT, help="LoRA rank r")
    p.add_argument("--alpha", type=POSITIVE, help="LoRA alpha (default: alpha = r)")
    p.add_argument(
        "--targets",
        type=parse_targets,
        metavar="PRESET|SUFFIXES",
        help=f"layers to wrap: a preset ({', '.join(targets.PRESETS)}) or comma-separated name "
        "suffixes such as attn2.to_k,attn2.to_v (default: attn2+ff in small mode, attn2 in full)",
    )


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--steps", type=POSITIVE_INT, help="optimizer steps (default: 200 on the tiny SD)"
    )
    p.add_argument("--lr", type=POSITIVE, help="learning rate (default: 1.5e-3 on the tiny SD)")
    p.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        help="images per step (of all processes together under accelerate launch)",
    )
    p.add_argument(
        "--resolution", type=RESOLUTION, help="training image side (default: the model's own)"
    )
    p.add_argument("--format", choices=formats.FORMATS, help="LoRA file format (default: kohya)")
    p.add_argument("--seed", type=SEED, help="random seed")
    p.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), help="fp16 needs a CUDA GPU"
    )
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    p.add_argument(
        "--text-encoder",
        action="store_true",
        help="also train a LoRA on the text encoder (its attention and MLP, same rank), as "
        "kohya's trainer does",
    )


def _regularisation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train on every image mirrored (default: on in small mode, off in full; not "
        "for text or asymmetric subjects)",
    )
    p.add_argument(
        "--caption-dropout",
        type=FRACTION,
        help="fraction of pictures trained with the empty prompt, guidance's other branch "
        "(default: 0.3 in small mode, 0 in full)",
    )
    p.add_argument(
        "--lora-dropout",
        type=FRACTION,
        help="dropout on the LoRA layers' input while training (default: 0; the Python API's "
        "small preset has 0.1)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument(
        "--checkpoint-every",
        type=number_type(int, "a whole number of steps, 0 or more", lambda v: v >= 0),
        metavar="STEPS",
        help=f"write a checkpoint to resume from every STEPS steps (default: "
        f"{CHECKPOINTS} a run; 0: only at the end)",
    )
    p.add_argument(
        "--prompts",
        nargs="+",
        metavar="PROMPT",
        help="prompts of the before/after grid (default: up to 4 captions of the data)",
    )
    p.add_argument(
        "--sample-steps",
        type=POSITIVE_INT,
        help="denoising steps of the grid (default: the preset's)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _process():
    """accelerate's view of this process: one alone, or one of several that ``accelerate launch``
    started."""
    from accelerate import PartialState

    from lorakit import config

    return PartialState(cpu=config.get_device().type == "cpu")  # joins the other processes, if any


def run_config(args: argparse.Namespace, out: Path, device):
    """The run's ``train.TrainConfig``: the options given over the model's preset, checked."""
    from lorakit import config, train

    settings = {
        "r": args.rank,
        "alpha": args.alpha,
        "target_modules": args.targets,
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "save_format": args.format,
        "mixed_precision": args.mixed_precision,
        "gradient_checkpointing": args.gradient_checkpointing or None,
        "flip": args.flip,
        "caption_dropout": args.caption_dropout,
        "lora_dropout": args.lora_dropout,
        "text_encoder": args.text_encoder or None,
    }
    mode = config.preset_for(args.model).mode  # the tiny SD's defaults for it, SD 1.5's for others
    given = {k: v for k, v in settings.items() if v is not None}
    cfg = train.TrainConfig.for_mode(
        mode,
        **({**QUICK, **given} if mode == "small" else given),
        resolution=args.resolution,
        output_dir=str(out),
        resume=args.resume,
        progress=not args.quiet,
    )
    every = args.checkpoint_every
    cfg = replace(
        cfg, checkpoint_every=max(1, cfg.steps // CHECKPOINTS) if every is None else every
    )
    train.check_config(cfg, device)  # every setting, before the slow model load
    return cfg


def cmd_train(args: argparse.Namespace) -> None:
    from lorakit import files, imagefolder, train

    imagefolder.read_imagefolder(args.data)  # check the folder before the slow model load
    out = Path(args.out)
    if args.resume and not (out / train.CHECKPOINT).is_file():
        raise ValueError(
            f"--resume: there is no {train.CHECKPOINT} in {out} to resume from; "
            "drop --resume to start a new run."
        )
    process = _process()
    several = process.num_processes > 1
    cfg = run_config(args, out, process.device)
    # several GPUs: this process's own
    pipe = pipeline.load_model(args.model, device=process.device if several else None)
    resolution = args.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    cfg = replace(cfg, resolution=resolution)  # the model's own, unless given
    # --targets that match nothing, or a rank too large
    targets.check_targets(pipe.unet, cfg.r, cfg.target_modules)
    dataset = imagefolder.ImageFolderDataset(args.data, resolution=resolution)
    train.resume_state(cfg)  # a checkpoint of other settings
    with contextlib.ExitStack() as held:
        if process.is_main_process:
            held.enter_context(files.lock_folder(out))  # a second run into this folder is refused
            _announce(args, process, cfg, len(dataset), out)
        _train_and_show(args, process, pipe, dataset, cfg, out)


def _announce(args: argparse.Namespace, process, cfg, images: int, out: Path) -> None:
    """Say what is trained, on stderr, and write the run's settings to ``CONFIG_FILE``."""
    from lorakit import files

    processes = f", {process.num_processes} processes" if process.num_processes > 1 else ""
    print(
        f"training a rank-{cfg.r} LoRA on {images} images of {args.data} for {cfg.steps} steps "
        f"({args.model}, {cfg.resolution}x{cfg.resolution}{processes})",
        file=sys.stderr,
    )
    settings = {
        "model": args.model,
        "data": str(args.data),
        **asdict(cfg),
        "num_processes": process.num_processes,
    }
    files.write_atomically(out / CONFIG_FILE, json.dumps(settings, indent=2, default=str))


def _train_and_show(args, process, pipe, dataset, cfg, out: Path) -> None:
    from lorakit import train

    several, main = process.num_processes > 1, process.is_main_process
    start = time.perf_counter()
    result = train.train_lora(pipe, dataset, cfg)
    seconds = time.perf_counter() - start
    if several:
        process.destroy_process_group()  # the rest (grid, messages) is the main process's alone
    if not main:
        return

    prompts = (
        args.prompts or list(dict.fromkeys(dataset.caption(i) for i in range(len(dataset))))[:4]
    )
    seeds = list(range(len(prompts)))
    pictures = {}
    for scale in (0.0, 1.0):  # the same prompts and seeds without, then with, the LoRA
        inject.set_lora_scale(pipe, scale)
        pictures[scale] = pipeline.generate_pictures(pipe, prompts, seeds, args.sample_steps)
    inject.set_lora_scale(pipe, 1.0)
    labels = prompts + [f"with the LoRA (seed {s})" for s in seeds]
    pipeline.save_grid(out / GRID_FILE, pictures[0.0] + pictures[1.0], len(prompts), labels)

    lora_file = out / ("lora" if cfg.save_format == "peft" else "lora.safetensors")
    print(f"done in {seconds:.0f} s, final loss {result.history[-1]:.4f}")
    for path, what in (
        (lora_file, f"LoRA ({cfg.save_format})"),
        (out / "loss.png", "loss plot"),
        (out / GRID_FILE, "before/after grid (top: LoRA scale 0, bottom: scale 1)"),
    ):
        print(f"  {path}  {what}")
