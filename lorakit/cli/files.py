"""``lorakit convert`` and ``lorakit info``: a LoRA file rewritten in another format, or described.

Introduced in notebooks/06_train_style_lora.ipynb (``lorakit info`` on the LoRA it trained).

``convert`` reads any format lorakit reads (kohya, diffusers, a PEFT folder; detected) and writes
the one asked for with ``formats.convert``; a LyCORIS LoHa or LoKr, or ``--rank``, goes through
the SVD (lesson 11) and the error of delta W is printed. ``info`` prints ``formats.describe``:
the kind, the architecture and base model its names and shapes point to, the modules per part,
kind and block, rank and alpha, the metadata. Neither loads a model.

Left out: changing a LoRA's numbers (``lorakit resize``, ``extract`` and ``merge`` do).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorakit import formats
from lorakit.cli.arguments import POSITIVE_INT

__all__ = ["add_file_parsers", "cmd_convert", "cmd_info"]


def add_file_parsers(commands, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``lorakit convert`` and ``lorakit info`` on ``commands`` (the subparsers)."""
    p = commands.add_parser(
        "convert", parents=parents, help="rewrite a LoRA file in another format"
    )
    p.add_argument("file", help="the LoRA to read (format detected)")
    p.add_argument("--to", required=True, choices=formats.FORMATS, help="the format to write")
    p.add_argument(
        "--out", required=True, help="a .safetensors file (kohya, diffusers) or a folder (peft)"
    )
    p.add_argument(
        "--rank",
        type=POSITIVE_INT,
        help="at most this rank a module, by SVD (Eckart-Young), the error printed (default: the "
        "rank each module has; a LoHa's or LoKr's exact rank)",
    )
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser(
        "info",
        parents=parents,
        help="kind, base model, modules, rank and alpha, metadata of a LoRA",
    )
    p.add_argument("file", help="a LoRA .safetensors file or PEFT folder")
    p.set_defaults(func=cmd_info)


def cmd_convert(args: argparse.Namespace) -> None:
    """Rewrite a file; a LyCORIS file or ``--rank`` through the SVD, with the error of delta W."""
    if args.rank is None and not _is_lycoris(args.file):
        print(formats.convert(args.file, args.out, to=args.to))
        return
    from lorakit import svd_tools

    weights = formats.load_lora(args.file)
    plain = weights
    if args.rank is not None:  # each module's best rank-k, k at most --rank (sv_fro 1: no more)
        plain, _ = svd_tools.resize(weights, args.rank, sv_fro=1.0)
    errors = svd_tools.delta_error(plain, weights)
    ranks = [plain.rank(m) for m in plain.modules]
    kinds = ", ".join(sorted(set(weights.variants.values()))) or "LoRA"
    print(
        f"{kinds} on {len(weights.modules)} modules as a plain LoRA of ranks {min(ranks)}-"
        f"{max(ranks)}; error of delta W against the file's (relative, Frobenius): mean "
        f"{sum(errors.values()) / len(errors):.3g}, largest {max(errors.values()):.3g}"
    )
    print(formats.save_weights(plain, args.out, args.to, {"lorakit_converted_from": kinds}))


def _is_lycoris(path: str) -> bool:
    """A LyCORIS file (LoHa, LoKr), told from its keys alone."""
    if not Path(path).is_file():
        return False
    header, _ = formats.read_header(Path(path))
    return formats.is_lycoris(header)


def cmd_info(args: argparse.Namespace) -> None:
    print(formats.describe(args.file))
