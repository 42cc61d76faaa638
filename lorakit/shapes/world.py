"""The shapes world's vocabulary: what one picture holds (a ``ShapeSpec``) and its caption.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

One shape (circle, square, triangle) of one colour on a white background, with a size and a
position that vary, and a caption such as "a red circle" or "a small blue square". The same
``(seed, index)`` gives the same spec on any machine. Pictures of two shapes (``sample_pair``,
"a red circle and a blue square") teach the tiny SD to tie each word to its own shape (lesson 04's
attention maps). ``NEW_SHAPES`` and ``NEW_STYLES`` go beyond what the tiny SD was pretrained on,
for LoRAs to teach.

Left out: drawing the specs (``shapes.drawing``), rotation, textures, more than two shapes a
picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALL_SHAPES",
    "ALL_STYLES",
    "COLOURS",
    "NEW_SHAPES",
    "NEW_STYLES",
    "SHAPES",
    "SIZES",
    "STYLES",
    "ShapeSpec",
    "pair_caption",
    "sample_pair",
    "sample_spec",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.30, 0.42),
    "large": (0.55, 0.75),
}  # side / image side
STYLES: tuple[str, ...] = ("filled", "outline")
# Beyond what the tiny SD was pretrained on (SHAPES and STYLES above make its captions and its
# vocabulary, so they never change): a shape it never saw and two more styles, for LoRAs to teach.
NEW_SHAPES: tuple[str, ...] = ("cross",)  # a plus sign, arms a third of the side wide
# An outline with vertical stripes inside; two outlines. Both are drawn large only: the tiny SD's
# VAE keeps 4 pixels a latent, and a small shape (19-27 px at 64 px) has no room for strokes and
# gaps that wide.
NEW_STYLES: tuple[str, ...] = ("striped", "double")
ALL_SHAPES, ALL_STYLES = SHAPES + NEW_SHAPES, STYLES + NEW_STYLES


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that determines one picture. Lengths are fractions of the image side."""

    shape: str
    colour: str
    size_word: str
    size: float  # side of the bounding box
    cx: float  # centre
    cy: float
    style: str = "filled"
    rgb: tuple[int, int, int] | None = None  # None: the colour's nominal RGB

    def caption(self, with_size: bool = False) -> str:
        size = f"{self.size_word} " if with_size else ""
        return f"a {size}{self.colour} {self.shape}"


def _check_names(shape: str, colour: str, style: str) -> None:
    if shape not in ALL_SHAPES:
        raise ValueError(f"unknown shape {shape!r}: the shapes world has {', '.join(ALL_SHAPES)}.")
    if style not in ALL_STYLES:
        raise ValueError(f"unknown style {style!r}: the shapes world has {', '.join(ALL_STYLES)}.")
    if shape in NEW_SHAPES and style in NEW_STYLES:
        raise ValueError(
            f"a {shape} is drawn filled or outline: its arms are too thin for the {style} style."
        )
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}: the shapes world has {', '.join(COLOURS)}.")


def _jittered(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """The colour's nominal RGB, each channel moved by up to 12 levels."""
    jitter = rng.integers(-12, 13, size=3)
    return tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour], jitter, strict=True))


def sample_spec(
    index: int,
    seed: int = 0,
    shape: str | None = None,
    colour: str | None = None,
    style: str = "filled",
) -> ShapeSpec:
    """The spec of picture ``index`` of the stream ``seed``; ``shape``/``colour`` pin those."""
    rng = np.random.default_rng([seed, index])
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    _check_names(shape, colour, style)
    size_word = list(SIZES)[rng.integers(len(SIZES))]
    if style in NEW_STYLES:  # drawn large only: see NEW_STYLES
        size_word = "large"
    lo, hi = SIZES[size_word]
    size = float(rng.uniform(lo, hi))
    margin = size / 2 + 0.04
    cx, cy = (float(v) for v in rng.uniform(margin, 1 - margin, size=2))
    return ShapeSpec(shape, colour, size_word, size, cx, cy, style, _jittered(rng, colour))


def sample_pair(index: int, seed: int = 0) -> tuple[ShapeSpec, ShapeSpec]:
    """Picture ``index`` of the two-shape stream ``seed``: two small shapes of different colours.

    The two sit in opposite halves (left/right or top/bottom, drawn at random), so they never
    overlap. Their caption, :func:`pair_caption`, names them in a random order: the words, not
    the layout, say which colour goes with which shape.
    """
    rng = np.random.default_rng([seed, index, 2])
    colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), size=2, replace=False)]
    shapes = [SHAPES[i] for i in rng.integers(len(SHAPES), size=2)]
    horizontal = bool(rng.integers(2))
    specs = []
    for k, (colour, shape) in enumerate(zip(colours, shapes, strict=True)):
        size = float(rng.uniform(*SIZES["small"]))
        # inside its own half, 0.03 from the picture's edge and 0.01 from the middle line
        along = float(rng.uniform(size / 2 + 0.03, 0.49 - size / 2)) + 0.5 * k
        across = float(rng.uniform(size / 2 + 0.03, 0.97 - size / 2))
        cx, cy = (along, across) if horizontal else (across, along)
        rgb = _jittered(rng, colour)
        specs.append(ShapeSpec(shape, colour, "small", size, cx, cy, "filled", rgb))
    if rng.integers(2):
        specs.reverse()
    return specs[0], specs[1]


def pair_caption(specs: Sequence[ShapeSpec]) -> str:
    """ "a red circle and a blue square": the shapes in the order given."""
    return " and ".join(spec.caption() for spec in specs)
