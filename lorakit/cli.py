"""The ``lorakit`` command: train a LoRA on a folder of images, sample with it, convert it, describe it.

Introduced in notebooks/06_train_style_lora.ipynb (the same training, from a terminal)::

    lorakit train --data data/styles/outline --out runs/outline    # tiny SD, small preset
    lorakit sample --lora runs/outline/lora.safetensors --prompt "a blue circle in sks style" --out grid.png
    lorakit convert runs/outline/lora.safetensors --to diffusers --out runs/outline/diffusers
    lorakit info runs/outline/lora.safetensors
    lorakit resize runs/outline/lora.safetensors --sv-fro 0.9 --out small.safetensors
    lorakit extract --base tiny --tuned runs/full/unet.safetensors --rank 8 --out extracted.safetensors
    lorakit merge a.safetensors:0.7 b.safetensors:0.5 --method concat --out merged.safetensors
    lorakit merge a.safetensors:0.7 --into tiny --out merged-model/    # a model with the LoRA baked in

(``resize``, ``extract`` and ``merge`` are lorakit.svd_tools, lesson 11.)

``python -m lorakit.cli`` is the same command. Every default is the small world (the tiny SD in
``data/models/tiny-sd``, 64x64); ``--model`` with a hub id or a local SD 1.5 folder switches to
the full world's training defaults (``train.TrainConfig.for_mode("full")``). A mistake the user
can fix (a missing folder, a bad file) prints one ``lorakit: error: ...`` message to stderr and
exits with status 2; ``--debug`` shows the traceback instead.

Several GPUs: ``accelerate launch --multi_gpu --num_processes N -m lorakit.cli train ...`` starts N
processes that train the same LoRA as one (``--batch-size`` is the batch of all of them together);
only the main process writes files and prints. Where no GPU is visible (``CUDA_VISIBLE_DEVICES=""``)
they are CPU processes talking over gloo; accelerate's ``--cpu`` alone would start only one.

Left out: everything the Python API already covers in more detail (learning-rate schedules,
validation), config files, several LoRAs at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from lorakit import formats, inject

GRID_FILE, CONFIG_FILE = "before_after.png", "train_config.json"
CHECKPOINTS = 4  # checkpoints a training run writes by default (--checkpoint-every steps // 4)
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def _targets(text: str) -> str | list[str]:
    """``--targets``: a preset name as it is, anything else as comma-separated module name suffixes."""
    if text in inject.PRESETS:
        return text
    suffixes = [part.strip() for part in text.split(",") if part.strip()]
    if not suffixes:
        raise argparse.ArgumentTypeError(
            f"give a preset ({', '.join(inject.PRESETS)}) or module name suffixes "
            "such as attn2.to_k,attn2.to_v"
        )
    return suffixes


def _number(kind, what: str, ok):
    """An argparse type: ``kind(text)`` that ``ok`` accepts, else a message that says ``what`` it must be."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


POSITIVE_INT = _number(int, "a positive integer", lambda v: v > 0)
POSITIVE = _number(float, "a positive finite number", lambda v: math.isfinite(v) and v > 0)
FINITE = _number(float, "a finite number", math.isfinite)
FRACTION = _number(float, "a fraction in [0, 1)", lambda v: 0 <= v < 1)
SEED = _number(int, f"a seed from 0 to {2**63 - 1}", lambda v: 0 <= v < 2**63)
RESOLUTION = _number(
    int,
    "a positive multiple of 64 (the UNet halves the latents three times)",
    lambda v: v > 0 and v % 64 == 0,
)


def _mode(model: str) -> str:
    from lorakit import config

    return config.preset_for(
        model
    ).mode  # the tiny SD's defaults for the tiny SD, SD 1.5's for any other


def _load(model: str, device=None):
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from lorakit import models

    diffusers_logging.disable_progress_bar()  # "Loading ..." bars clutter a terminal
    transformers_logging.disable_progress_bar()
    return models.load_pipeline(model, device=device)


def _process():
    """accelerate's view of this process: one alone, or one of several started by ``accelerate launch``."""
    from accelerate import PartialState

    from lorakit import config

    return PartialState(cpu=config.get_device().type == "cpu")  # joins the other processes, if any


def _generate(pipe, prompts: list[str], seeds: list[int], steps: int | None):
    from lorakit import sample

    return sample.generate(
        pipe, prompts, seeds, num_inference_steps=steps
    )  # the model's own settings by default


def _scale(images) -> int:
    return max(1, 192 // images[0].width)  # the tiny SD's 64x64 pictures shown 3x, so labels fit


def cmd_train(args: argparse.Namespace) -> None:
    from lorakit import files, imagefolder, inject, train

    imagefolder.read_imagefolder(args.data)  # check the folder before the slow model load
    out = Path(args.out)
    if args.resume and not (out / train.CHECKPOINT).is_file():
        raise ValueError(
            f"--resume: there is no {train.CHECKPOINT} in {out} to resume from; "
            "drop --resume to start a new run."
        )
    process = _process()
    several = process.num_processes > 1
    main = process.is_main_process
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
    cfg = train.TrainConfig.for_mode(
        _mode(args.model),
        **{k: v for k, v in settings.items() if v is not None},
        resolution=args.resolution,
        output_dir=str(out),
        resume=args.resume,
        progress=not args.quiet,
    )
    every = (
        max(1, cfg.steps // CHECKPOINTS) if args.checkpoint_every is None else args.checkpoint_every
    )
    cfg = replace(cfg, checkpoint_every=every)
    train.check_config(cfg, process.device)  # every setting, before the slow model load
    pipe = _load(
        args.model, device=process.device if several else None
    )  # several GPUs: this process's own
    resolution = (
        args.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    )  # the model's own
    cfg = replace(cfg, resolution=resolution)
    inject.check_targets(
        pipe.unet, cfg.r, cfg.target_modules
    )  # --targets that match nothing, or a rank too large
    dataset = imagefolder.ImageFolderDataset(args.data, resolution=resolution)
    train.resume_state(cfg)  # a checkpoint of other settings
    with contextlib.ExitStack() as held:
        if main:
            held.enter_context(files.lock_folder(out))  # a second run into this folder is refused
            processes = f", {process.num_processes} processes" if several else ""
            print(
                f"training a rank-{cfg.r} LoRA on {len(dataset)} images of {args.data} for {cfg.steps} steps "
                f"({args.model}, {resolution}x{resolution}{processes})",
                file=sys.stderr,
            )
            files.write_atomically(
                out / CONFIG_FILE,
                json.dumps(
                    {
                        "model": args.model,
                        "data": str(args.data),
                        **asdict(cfg),
                        "num_processes": process.num_processes,
                    },
                    indent=2,
                    default=str,
                ),
            )
        _train_and_show(args, process, pipe, dataset, cfg, out)


def _train_and_show(args, process, pipe, dataset, cfg, out: Path) -> None:
    from lorakit import files, inject, sample, train

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
        pictures[scale] = _generate(pipe, prompts, seeds, args.sample_steps)
    inject.set_lora_scale(pipe, 1.0)
    labels = prompts + [f"with the LoRA (seed {s})" for s in seeds]
    images = pictures[0.0] + pictures[1.0]
    grid = sample.image_grid(images, cols=len(prompts), labels=labels, scale=_scale(images))
    files.write_atomically(out / GRID_FILE, lambda f: grid.save(f, format="PNG"))

    lora_file = out / ("lora" if cfg.save_format == "peft" else "lora.safetensors")
    print(f"done in {seconds:.0f} s, final loss {result.history[-1]:.4f}")
    for path, what in (
        (lora_file, f"LoRA ({cfg.save_format})"),
        (out / "loss.png", "loss plot"),
        (out / GRID_FILE, "before/after grid (top: LoRA scale 0, bottom: scale 1)"),
    ):
        print(f"  {path}  {what}")


def cmd_sample(args: argparse.Namespace) -> None:
    from lorakit import files, sample

    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_FORMATS:
        raise ValueError(f"--out {out} needs an image suffix such as .png.")
    weights = (
        formats.load_lora(args.lora) if args.lora else None
    )  # read the file before the slow model load
    pipe = _load(args.model)
    if weights is not None:
        formats.apply_lora(
            pipe, weights, scale=args.scale
        )  # the UNet, and the text encoder if the file has its part
    prompts = [p for p in args.prompt for _ in args.seeds]  # rows: prompts, columns: seeds
    images = _generate(pipe, prompts, list(args.seeds) * len(args.prompt), args.steps)
    labels = [f"seed {s}: {p}" for p in args.prompt for s in args.seeds]
    grid = sample.image_grid(images, cols=len(args.seeds), labels=labels, scale=_scale(images))
    files.write_atomically(out, lambda f: grid.save(f, format=IMAGE_FORMATS[out.suffix.lower()]))
    print(out)


def cmd_convert(args: argparse.Namespace) -> None:
    print(formats.convert(args.file, args.out, to=args.to))


def cmd_info(args: argparse.Namespace) -> None:
    print(formats.describe(args.file))


def _out_format(args, weights) -> str:
    return args.format or (weights.format if weights.format in formats.FORMATS else "kohya")


def _print_reports(reports, what: str) -> None:
    """Per module: the rank before and after and the energy kept; then the totals."""
    width = max(len(r.path) for r in reports)
    for r in reports:
        print(
            f"  {r.path:{width}s}  rank {r.rank_before:4d} -> {r.rank_after:4d}  energy kept {r.energy_kept:7.2%}"
        )
    kept = sum(r.energy_kept for r in reports) / len(reports)
    print(
        f"{what} {len(reports)} modules: mean energy kept {kept:.2%}, lowest {min(r.energy_kept for r in reports):.2%}, "
        f"ranks {min(r.rank_after for r in reports)}-{max(r.rank_after for r in reports)}"
    )


def cmd_resize(args: argparse.Namespace) -> None:
    from lorakit import svd_tools

    weights = formats.load_lora(args.file)
    small, reports = svd_tools.resize(
        weights,
        args.rank,
        sv_ratio=args.sv_ratio,
        sv_fro=args.sv_fro,
        sv_cumulative=args.sv_cumulative,
    )
    if not args.quiet:
        _print_reports(reports, "resized")
    print(
        formats.save_weights(
            small,
            args.out,
            _out_format(args, weights),
            {"lorakit_resized_from": Path(args.file).name},
        )
    )


def _tuned_model(base, tuned: str):
    """The fine-tuned model of ``lorakit extract``: a full fine-tune's UNet weights file (``unet.safetensors``,
    applied to a copy of the base), or a model (name, folder or hub id)."""
    import copy

    import safetensors.torch

    path = Path(tuned)
    if path.suffix.lower() in formats.PICKLE_SUFFIXES:
        raise ValueError(f"{path} is a pickle-based checkpoint; lorakit reads .safetensors only.")
    if path.suffix != ".safetensors":
        return _load(tuned)
    formats._read_header(path)  # a broken or oversized file is refused before it is read
    state = safetensors.torch.load_file(str(path))
    expected = base.unet.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or wrong:
        what = (
            f"{len(missing)} weights missing (e.g. {missing[0]})"
            if missing
            else f"{len(extra)} unknown weights (e.g. {extra[0]})"
            if extra
            else f"{len(wrong)} of other shapes (e.g. {wrong[0]})"
        )
        raise ValueError(
            f"{path} is not a UNet of the base model's architecture: {what}. Give the base model it "
            "was fine-tuned from (--base)."
        )
    unet = copy.deepcopy(base.unet)
    unet.load_state_dict(state)
    return unet


def cmd_extract(args: argparse.Namespace) -> None:
    from lorakit import svd_tools

    if args.rank is None and args.energy is None:
        raise ValueError("give --rank R, --energy F, or both (the rank is then the cap).")
    base = _load(args.base)
    tuned = _tuned_model(base, args.tuned)
    weights, reports = svd_tools.extract(
        base.unet if not hasattr(tuned, "unet") else base,
        tuned,
        args.rank,
        energy=args.energy,
        clamp_quantile=args.clamp_quantile,
        targets=args.targets,
        min_diff=args.min_diff,
    )
    if not args.quiet:
        _print_reports(reports, "extracted")
    print(
        formats.save_weights(
            weights, args.out, args.format or "kohya", {"lorakit_extracted_from": str(args.tuned)}
        )
    )


def _weighted(text: str) -> tuple[str, float]:
    """``FILE:WEIGHT`` (``FILE`` alone: weight 1)."""
    name, _, weight = text.rpartition(":")
    try:
        return (name, float(weight)) if name else (text, 1.0)
    except ValueError:
        return text, 1.0  # a colon in the path itself


def cmd_merge(args: argparse.Namespace) -> None:
    from lorakit import svd_tools

    items = []
    for text in args.loras:
        name, weight = _weighted(text)
        if not math.isfinite(weight):
            raise ValueError(f"{text}: the weight after ':' must be a finite number.")
        items.append((formats.load_lora(name), weight))
    if args.into:
        if args.method != "concat" or args.rank:
            raise ValueError(
                "--into bakes the exact weighted sum into the model: drop --method and --rank."
            )
        model = _load(args.into)
        changed = svd_tools.merge_into(model, items)
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"{out} is not empty: give a new folder for the merged model.")
        model.save_pretrained(str(out))
        print(f"{len(changed)} modules changed; the model is in {out} (load it with --model {out})")
        return
    merged = svd_tools.merge(items, args.method, args.rank)
    errors = svd_tools.delta_error(merged, items)
    print(
        f"{args.method} merge of {len(items)} LoRAs: {len(merged.modules)} modules, ranks "
        f"{min(merged.rank(m) for m in merged.modules)}-{max(merged.rank(m) for m in merged.modules)}; error of delta W "
        f"against the weighted sum: mean {sum(errors.values()) / len(errors):.3g}, largest {max(errors.values()):.3g}"
    )
    print(
        formats.save_weights(
            merged, args.out, args.format or "kohya", {"lorakit_merged_from": ", ".join(args.loras)}
        )
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake in the arguments reported in one line, as every other lorakit error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _report_options(p: argparse.ArgumentParser, what: str, default_format: str) -> None:
    """--out, --format and --quiet of the verbs that write a LoRA and report on its modules."""
    p.add_argument(
        "--out", required=True, help=f"the {what} LoRA (.safetensors, or a folder for peft)"
    )
    p.add_argument(
        "--format",
        choices=formats.FORMATS,
        help=f"format of the output (default: {default_format})",
    )
    p.add_argument("--quiet", action="store_true", help="no per-module report")


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )
    parser = _Parser(
        prog="lorakit",
        parents=[debug],
        description="Train, sample, convert and inspect LoRAs for Stable Diffusion.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "train",
        parents=[debug],
        help="train a LoRA on an image folder",
        description="Train a cross-attention LoRA on a folder of images + metadata.jsonl. "
        "Unset options take the defaults of lorakit.train.TrainConfig.for_mode: the small "
        "preset for --model tiny, the full (SD 1.5) preset for any other model. "
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
    p.add_argument("--rank", type=POSITIVE_INT, help="LoRA rank r")
    p.add_argument("--alpha", type=POSITIVE, help="LoRA alpha (default: alpha = r)")
    p.add_argument(
        "--targets",
        type=_targets,
        metavar="PRESET|SUFFIXES",
        help=f"layers to wrap: a preset ({', '.join(inject.PRESETS)}) or comma-separated name suffixes such "
        "as attn2.to_k,attn2.to_v (default: attn2+ff in small mode, attn2 in full)",
    )
    p.add_argument("--steps", type=POSITIVE_INT, help="optimizer steps")
    p.add_argument("--lr", type=POSITIVE, help="learning rate")
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
        help="also train a LoRA on the text encoder (its attention and MLP, same rank), as kohya's trainer does",
    )
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train on every image mirrored (default: on in small mode, off in full; not for text or asymmetric subjects)",
    )
    p.add_argument(
        "--caption-dropout",
        type=FRACTION,
        help="fraction of pictures trained with the empty prompt, guidance's other branch (default: 0.3 in small mode, 0 in full)",
    )
    p.add_argument(
        "--lora-dropout",
        type=FRACTION,
        help="dropout on the LoRA layers' input while training (default: 0.1 in small mode, 0 in full)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument(
        "--checkpoint-every",
        type=_number(int, "a whole number of steps, 0 or more", lambda v: v >= 0),
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
    p.set_defaults(func=cmd_train)

    p = commands.add_parser(
        "sample",
        parents=[debug],
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

    p = commands.add_parser(
        "convert", parents=[debug], help="rewrite a LoRA file in another format"
    )
    p.add_argument("file", help="the LoRA to read (format detected)")
    p.add_argument("--to", required=True, choices=formats.FORMATS, help="the format to write")
    p.add_argument(
        "--out", required=True, help="a .safetensors file (kohya, diffusers) or a folder (peft)"
    )
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser(
        "info",
        parents=[debug],
        help="kind, base model, modules, rank and alpha, metadata of a LoRA",
    )
    p.add_argument("file", help="a LoRA .safetensors file or PEFT folder")
    p.set_defaults(func=cmd_info)

    fraction = _number(float, "a fraction in (0, 1]", lambda v: 0 < v <= 1)
    p = commands.add_parser(
        "resize",
        parents=[debug],
        help="a smaller LoRA: every module truncated by SVD",
        description="Truncate every module of a LoRA to its best rank-k approximation (Eckart-Young). "
        "--rank alone is a fixed rank; --sv-ratio, --sv-fro and --sv-cumulative choose k per module "
        "as kohya's resize_lora.py does, with --rank as the cap. Prints the rank and energy kept per module.",
    )
    p.add_argument("file", help="the LoRA to resize")
    p.add_argument(
        "--rank",
        type=POSITIVE_INT,
        help="the new rank (with a dynamic criterion: the largest allowed)",
    )
    crit = p.add_mutually_exclusive_group()
    crit.add_argument(
        "--sv-ratio",
        type=_number(float, "a number of at least 1", lambda v: math.isfinite(v) and v >= 1),
        help="keep the singular values above s_max / X",
    )
    crit.add_argument(
        "--sv-fro", type=fraction, help="keep the fewest that keep fraction F of the Frobenius norm"
    )
    crit.add_argument(
        "--sv-cumulative", type=fraction, help="keep the fewest whose sum is fraction F of the sum"
    )
    _report_options(p, "resized", "the input's")
    p.set_defaults(func=cmd_resize)

    p = commands.add_parser(
        "extract",
        parents=[debug],
        help="a LoRA from a full fine-tune (SVD of the weight difference)",
        description="Per linear layer and convolution, the SVD of (tuned - base) truncated to --rank, "
        "or to the rank that keeps --energy of it (both: --rank is the cap).",
    )
    p.add_argument(
        "--base", required=True, help="the base model: 'tiny', a hub id or a local folder"
    )
    p.add_argument(
        "--tuned",
        required=True,
        help="the fine-tuned model: a folder, or a full fine-tune's unet.safetensors",
    )
    p.add_argument(
        "--rank",
        type=POSITIVE_INT,
        help="rank of every module (with --energy: the largest allowed)",
    )
    p.add_argument(
        "--energy",
        type=fraction,
        help="keep the fewest singular values with this fraction of sum s^2",
    )
    p.add_argument(
        "--clamp-quantile",
        type=_number(float, "a fraction in (0, 1)", lambda v: 0 < v < 1),
        help="clip the factors to this quantile of their absolute values (kohya's clamp_quantile, e.g. 0.99)",
    )
    p.add_argument(
        "--targets",
        type=_targets,
        metavar="PRESET|SUFFIXES",
        help="the layers to extract (default: every one that changed)",
    )
    p.add_argument(
        "--min-diff",
        type=_number(float, "a number of at least 0", lambda v: math.isfinite(v) and v >= 0),
        default=0.0,
        help="skip layers whose largest change is at most this (default 0: unchanged ones)",
    )
    _report_options(p, "extracted", "kohya")
    p.set_defaults(func=cmd_extract)

    p = commands.add_parser(
        "merge",
        parents=[debug],
        help="several LoRAs as one, or baked into a model",
        description="concat: exact, the ranks add; svd: the best rank-R approximation of the weighted "
        "sum; naive: A's and B's summed apart (what several tools do; wrong, shown by the error it "
        "prints). --into MODEL adds the weighted sum to the model's weights and saves the model.",
    )
    p.add_argument(
        "loras",
        nargs="+",
        metavar="FILE[:WEIGHT]",
        help="LoRA files, each with an optional weight (default 1)",
    )
    p.add_argument(
        "--method", choices=("concat", "svd", "naive"), default="concat", help="default concat"
    )
    p.add_argument(
        "--rank",
        type=POSITIVE_INT,
        help="rank of an svd merge (default: the largest of the inputs)",
    )
    p.add_argument(
        "--into",
        metavar="MODEL",
        help="bake the LoRAs into this model ('tiny', a hub id or a folder)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="the merged LoRA, or with --into the folder of the merged model",
    )
    p.add_argument(
        "--format", choices=formats.FORMATS, help="format of a merged LoRA (default kohya)"
    )
    p.set_defaults(func=cmd_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or exits with status 2 and a one-line message on a user error."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, RuntimeError) as error:
        if getattr(args, "debug", False):
            raise
        message = str(error) or type(error).__name__
        hint = " (rerun with --debug for the traceback)" if isinstance(error, RuntimeError) else ""
        print(f"lorakit: error: {message}{hint}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "lorakit: interrupted"
            + (" (continue with --resume)" if args.command == "train" else ""),
            file=sys.stderr,
        )
        sys.exit(130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
