"""The ``lorakit`` command: train a LoRA on a folder of images, sample with it, convert, describe.

Introduced in notebooks/06_train_style_lora.ipynb (the same training, from a terminal)::

    lorakit train --data data/styles/outline --out runs/outline    # tiny SD, small preset
    lorakit info runs/outline/lora.safetensors

One file a group of commands, each registering its own arguments beside its ``cmd_*``:
``cli.train``, ``cli.sample``, ``cli.files`` (convert, info), and lesson 11's ``cli.algebra``
(resize, merge) and ``cli.extract``. ``python -m lorakit.cli`` is the same command. A mistake the
user can fix prints one ``lorakit: error: ...`` line to stderr and exits with status 2;
``--debug`` shows the traceback instead. docs/cli.md has every command and several GPUs.

Left out: everything the Python API covers in more detail (learning-rate schedules,
validation), config files, several LoRAs at once.
"""

from __future__ import annotations

import argparse
import sys

from lorakit.cli import algebra, extract, files, sample, train
from lorakit.cli.train import CONFIG_FILE, GRID_FILE

__all__ = ["CONFIG_FILE", "GRID_FILE", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake in the arguments reported in one line, as every lorakit error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """``lorakit`` and its commands, each group's arguments registered by its own file."""
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
    train.add_train_parser(commands, [debug])
    sample.add_sample_parser(commands, [debug])
    files.add_file_parsers(commands, [debug])
    algebra.add_resize_parser(commands, [debug])
    extract.add_extract_parser(commands, [debug])
    algebra.add_merge_parser(commands, [debug])
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
