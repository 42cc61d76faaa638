"""``lorakit convert`` and ``lorakit info``: a LoRA file rewritten in another format, or described.

Introduced in notebooks/06_train_style_lora.ipynb (``lorakit info`` on the LoRA it trained).

``convert`` reads any format lorakit reads (kohya, diffusers, a PEFT folder; detected) and writes
the one asked for with ``formats.convert``. ``info`` prints ``formats.describe``: the kind, the
base model its shapes point to, the modules per kind and block, rank and alpha, the metadata.
Neither loads a model.

Left out: changing a LoRA's numbers (``lorakit resize``, ``extract`` and ``merge`` do).
"""

from __future__ import annotations

import argparse

from lorakit import formats

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
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser(
        "info",
        parents=parents,
        help="kind, base model, modules, rank and alpha, metadata of a LoRA",
    )
    p.add_argument("file", help="a LoRA .safetensors file or PEFT folder")
    p.set_defaults(func=cmd_info)


def cmd_convert(args: argparse.Namespace) -> None:
    print(formats.convert(args.file, args.out, to=args.to))


def cmd_info(args: argparse.Namespace) -> None:
    print(formats.describe(args.file))
