"""``lorakit resize`` and ``lorakit merge``: lesson 11's LoRA algebra from a terminal.

Introduced in notebooks/11_lora_algebra.ipynb.

``resize`` truncates every module of a LoRA by SVD (a fixed rank, or kohya's dynamic criteria)
and prints the rank and energy kept per module (``print_reports``, which ``lorakit extract``
prints too); ``merge`` makes one LoRA of several (concat, svd or naive) and prints its error
against the weighted sum, or bakes them into a model. Each runs ``svd_tools``'s function.

Left out: the SVD itself (``lorakit.svd_tools``, ``lorakit.lowrank``); ``lorakit extract``
(``cli.extract``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lorakit import formats
from lorakit.cli import pipeline
from lorakit.cli.arguments import POSITIVE_INT, number_type

__all__ = [
    "FRACTION_UP_TO_1",
    "add_merge_parser",
    "add_resize_parser",
    "cmd_merge",
    "cmd_resize",
    "print_reports",
    "report_options",
]

FRACTION_UP_TO_1 = number_type(float, "a fraction in (0, 1]", lambda v: 0 < v <= 1)


def report_options(p: argparse.ArgumentParser, what: str, default_format: str) -> None:
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


def add_resize_parser(commands, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``lorakit resize`` and its options on ``commands`` (the subparsers)."""
    p = commands.add_parser(
        "resize",
        parents=parents,
        help="a smaller LoRA: every module truncated by SVD",
        description="Truncate every module of a LoRA to its best rank-k approximation "
        "(Eckart-Young). --rank alone is a fixed rank; --sv-ratio, --sv-fro and --sv-cumulative "
        "choose k per module as kohya's resize_lora.py does, with --rank as the cap. Prints the "
        "rank and energy kept per module.",
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
        type=number_type(float, "a number of at least 1", lambda v: math.isfinite(v) and v >= 1),
        help="keep the singular values above s_max / X",
    )
    crit.add_argument(
        "--sv-fro",
        type=FRACTION_UP_TO_1,
        help="keep the fewest that keep fraction F of the Frobenius norm",
    )
    crit.add_argument(
        "--sv-cumulative",
        type=FRACTION_UP_TO_1,
        help="keep the fewest whose sum is fraction F of the sum",
    )
    report_options(p, "resized", "the input's")
    p.set_defaults(func=cmd_resize)


def add_merge_parser(commands, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``lorakit merge`` and its options on ``commands`` (the subparsers)."""
    p = commands.add_parser(
        "merge",
        parents=parents,
        help="several LoRAs as one, or baked into a model",
        description="concat: exact, the ranks add; svd: the best rank-R approximation of the "
        "weighted sum; naive: A's and B's summed apart (what several tools do; wrong, shown by "
        "the error it prints). --into MODEL adds the weighted sum to the model's weights and "
        "saves the model.",
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


def print_reports(reports, what: str) -> None:
    """Per module: the rank before and after and the energy kept; then the totals."""
    width = max(len(r.path) for r in reports)
    for r in reports:
        print(
            f"  {r.path:{width}s}  rank {r.rank_before:4d} -> {r.rank_after:4d}  "
            f"energy kept {r.energy_kept:7.2%}"
        )
    kept = sum(r.energy_kept for r in reports) / len(reports)
    lowest = min(r.energy_kept for r in reports)
    print(
        f"{what} {len(reports)} modules: mean energy kept {kept:.2%}, lowest {lowest:.2%}, "
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
        print_reports(reports, "resized")
    out_format = args.format or (weights.format if weights.format in formats.FORMATS else "kohya")
    metadata = {"lorakit_resized_from": Path(args.file).name}
    print(formats.save_weights(small, args.out, out_format, metadata))


def _weighted(text: str) -> tuple[str, float]:
    """``FILE:WEIGHT`` (``FILE`` alone: weight 1)."""
    name, _, weight = text.rpartition(":")
    try:
        return (name, float(weight)) if name else (text, 1.0)
    except ValueError:
        return text, 1.0  # a colon in the path itself


def _merge_into(args: argparse.Namespace, items) -> None:
    """``lorakit merge --into MODEL``: the exact weighted sum baked into the model, saved."""
    from lorakit import svd_tools

    if args.method != "concat" or args.rank:
        raise ValueError(
            "--into bakes the exact weighted sum into the model: drop --method and --rank."
        )
    model = pipeline.load_model(args.into)
    changed = svd_tools.merge_into(model, items)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: give a new folder for the merged model.")
    model.save_pretrained(str(out))
    print(f"{len(changed)} modules changed; the model is in {out} (load it with --model {out})")


def cmd_merge(args: argparse.Namespace) -> None:
    from lorakit import svd_tools

    items = []
    for text in args.loras:
        name, weight = _weighted(text)
        if not math.isfinite(weight):
            raise ValueError(f"{text}: the weight after ':' must be a finite number.")
        items.append((formats.load_lora(name), weight))
    if args.into:
        _merge_into(args, items)
        return
    merged = svd_tools.merge(items, args.method, args.rank)
    errors = svd_tools.delta_error(merged, items)
    ranks = [merged.rank(m) for m in merged.modules]
    print(
        f"{args.method} merge of {len(items)} LoRAs: {len(merged.modules)} modules, ranks "
        f"{min(ranks)}-{max(ranks)}; error of delta W against the weighted sum: mean "
        f"{sum(errors.values()) / len(errors):.3g}, largest {max(errors.values()):.3g}"
    )
    metadata = {"lorakit_merged_from": ", ".join(args.loras)}
    print(formats.save_weights(merged, args.out, args.format or "kohya", metadata))
