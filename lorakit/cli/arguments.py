"""The argument types the ``lorakit`` commands share: numbers checked as they are parsed.

Introduced in notebooks/06_train_style_lora.ipynb, with ``lorakit train``.

Each type is an argparse ``type=``: ``POSITIVE_INT`` for a rank or a step count, ``POSITIVE`` for
an alpha or a learning rate, ``SEED``, ``RESOLUTION`` (a multiple of 64), ``FRACTION``, and
``number_type`` for the rest. A value it refuses becomes argparse's one-line error, naming the
option and what it must be, before anything is loaded. ``parse_targets`` reads ``--targets``: a
preset name of ``targets.PRESETS``, or comma-separated module name suffixes.

Left out: the options themselves (each command's file registers its own).
"""

from __future__ import annotations

import argparse
import math

from lorakit import targets

__all__ = [
    "FINITE",
    "FRACTION",
    "POSITIVE",
    "POSITIVE_INT",
    "RESOLUTION",
    "SEED",
    "number_type",
    "parse_targets",
]


def parse_targets(text: str) -> str | list[str]:
    """``--targets``: a preset name as it is, anything else as comma-separated name suffixes."""
    if text in targets.PRESETS:
        return text
    suffixes = [part.strip() for part in text.split(",") if part.strip()]
    if not suffixes:
        raise argparse.ArgumentTypeError(
            f"give a preset ({', '.join(targets.PRESETS)}) or module name suffixes "
            "such as attn2.to_k,attn2.to_v"
        )
    return suffixes


def number_type(kind, what: str, ok):
    """An argparse type: ``kind(text)`` that ``ok`` accepts, else a message that says ``what`` it
    must be."""

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


POSITIVE_INT = number_type(int, "a positive integer", lambda v: v > 0)
POSITIVE = number_type(float, "a positive finite number", lambda v: math.isfinite(v) and v > 0)
FINITE = number_type(float, "a finite number", math.isfinite)
FRACTION = number_type(float, "a fraction in [0, 1)", lambda v: 0 <= v < 1)
SEED = number_type(int, f"a seed from 0 to {2**63 - 1}", lambda v: 0 <= v < 2**63)
RESOLUTION = number_type(
    int,
    "a positive multiple of 64 (the UNet halves the latents three times)",
    lambda v: v > 0 and v % 64 == 0,
)
