"""``lorakit extract``: a LoRA from a full fine-tune, the SVD of the weight difference.

Introduced in notebooks/11_lora_algebra.ipynb.

Per linear layer and convolution, ``svd_tools.extract`` truncates the SVD of (tuned - base) to
``--rank``, or to the rank that keeps ``--energy`` of it. The tuned model is a model (a name, a
folder or a hub id) or a full fine-tune's ``unet.safetensors``, checked against the base's
architecture before it is applied to a copy of the base. The rank and energy kept per module are
printed as ``lorakit resize`` prints them.

Left out: LoHa and LoKr extraction, pickle-based checkpoints (refused).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lorakit import formats
from lorakit.cli import pipeline
from lorakit.cli.algebra import FRACTION_UP_TO_1, print_reports, report_options
from lorakit.cli.arguments import POSITIVE_INT, number_type, parse_targets

__all__ = ["add_extract_parser", "cmd_extract"]


def add_extract_parser(commands, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``lorakit extract`` and its options on ``commands`` (the subparsers)."""
    p = commands.add_parser(
        "extract",
        parents=parents,
        help="a LoRA from a full fine-tune (SVD of the weight difference)",
        description="Per linear layer and convolution, the SVD of (tuned - base) truncated to "
        "--rank, or to the rank that keeps --energy of it (both: --rank is the cap).",
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
        type=FRACTION_UP_TO_1,
        help="keep the fewest singular values with this fraction of sum s^2",
    )
    p.add_argument(
        "--clamp-quantile",
        type=number_type(float, "a fraction in (0, 1)", lambda v: 0 < v < 1),
        help="clip the factors to this quantile of their absolute values (kohya's "
        "clamp_quantile, 0.99 by default there, takes the quantile of the signed values)",
    )
    p.add_argument(
        "--targets",
        type=parse_targets,
        metavar="PRESET|SUFFIXES",
        help="the layers to extract (default: every one that changed)",
    )
    p.add_argument(
        "--min-diff",
        type=number_type(float, "a number of at least 0", lambda v: math.isfinite(v) and v >= 0),
        default=0.0,
        help="skip layers whose largest change is at most this (default 0: unchanged ones)",
    )
    report_options(p, "extracted", "kohya")
    p.set_defaults(func=cmd_extract)


def _tuned_model(base, tuned: str):
    """The fine-tuned model of ``lorakit extract``: a full fine-tune's UNet weights file
    (``unet.safetensors``, applied to a copy of the base), or a model (name, folder or hub id)."""
    import copy

    import safetensors.torch

    path = Path(tuned)
    if path.suffix.lower() in formats.PICKLE_SUFFIXES:
        raise ValueError(f"{path} is a pickle-based checkpoint; lorakit reads .safetensors only.")
    if path.suffix != ".safetensors":
        return pipeline.load_model(tuned)
    formats.read_header(path)  # a broken or oversized file is refused before it is read
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
            f"{path} is not a UNet of the base model's architecture: {what}. Give the base model "
            "it was fine-tuned from (--base)."
        )
    unet = copy.deepcopy(base.unet)
    unet.load_state_dict(state)
    return unet


def cmd_extract(args: argparse.Namespace) -> None:
    from lorakit import svd_tools

    if args.rank is None and args.energy is None:
        raise ValueError("give --rank R, --energy F, or both (the rank is then the cap).")
    base = pipeline.load_model(args.base)
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
        print_reports(reports, "extracted")
    metadata = {"lorakit_extracted_from": str(args.tuned)}
    print(formats.save_weights(weights, args.out, args.format or "kohya", metadata))
