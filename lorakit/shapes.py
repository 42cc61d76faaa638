"""The shapes world: procedural, deterministic pictures of one coloured shape, and their captions.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

One shape (circle, square, triangle) of one colour on a white background, with a size and a
position that vary, and a caption such as "a red circle" or "a small blue square". The same
``(seed, index)`` gives the same picture on any machine, so nothing big is committed: the tiny SD
is pretrained on pictures drawn on the fly, and a teacher can regenerate every figure.

``render_sketch`` draws a shape as by hand (a wobbly boundary, rounded corners): what a generator's
imperfect pictures look like, with a known label, to test the detectors on.

Pictures of two shapes (``sample_pair``, captions such as "a red circle and a blue square") teach
the tiny SD to tie each word to its own shape during pretraining (Lesson 04's attention maps).

Left out: rotation, textures, more than two shapes a picture (the detectors in ``metrics.py``
read one shape a picture). Folders of pictures on disk, the style sets' and a user's own, are
``lorakit.imagefolder``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from lorakit.imagefolder import to_tensor

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
# An outline with vertical stripes inside; two outlines. Both are drawn large only: the tiny SD's VAE keeps
# 4 pixels a latent, and a small shape (19-27 px at 64 px) has no room for strokes and gaps that wide.
NEW_STYLES: tuple[str, ...] = ("striped", "double")
ALL_SHAPES, ALL_STYLES = SHAPES + NEW_SHAPES, STYLES + NEW_STYLES
BACKGROUND = (255, 255, 255)
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges without a renderer
OUTLINE_WIDTH = 0.06  # stroke of an outline shape, as a fraction of the image side
THIN_WIDTH = 0.05  # the strokes of the striped and double styles
STRIPE_PERIOD = 0.15  # striped: one stripe every 0.15 of the image side, THIN_WIDTH wide
DOUBLE_GAP = 0.07  # double: the white between the two outlines


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


def sample_spec(
    index: int,
    seed: int = 0,
    shape: str | None = None,
    colour: str | None = None,
    style: str = "filled",
) -> ShapeSpec:
    """The spec of picture ``index`` of the stream ``seed``; ``shape``/``colour`` pin those choices."""
    rng = np.random.default_rng([seed, index])
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
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
    size_word = list(SIZES)[rng.integers(len(SIZES))]
    if style in NEW_STYLES:  # drawn large only: see NEW_STYLES
        size_word = "large"
    lo, hi = SIZES[size_word]
    size = float(rng.uniform(lo, hi))
    margin = size / 2 + 0.04
    cx, cy = (float(v) for v in rng.uniform(margin, 1 - margin, size=2))
    jitter = rng.integers(-12, 13, size=3)
    rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour], jitter, strict=True))
    return ShapeSpec(shape, colour, size_word, size, cx, cy, style, rgb)


def render(spec: ShapeSpec, resolution: int = 64) -> Image.Image:
    """Draw ``spec`` as an RGB picture of ``resolution`` x ``resolution`` pixels."""
    return render_scene([spec], resolution)


def render_scene(specs: Sequence[ShapeSpec], resolution: int = 64) -> Image.Image:
    """Draw every spec of ``specs``, in order, on one white picture of ``resolution`` pixels a side."""
    big = resolution * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for spec in specs:
        if spec.shape in NEW_SHAPES or spec.style in NEW_STYLES:
            _paint(
                image,
                spec,
                _outline_points(
                    spec.shape, spec.size * big, spec.cx * big, spec.cy * big, corner=0
                ),
                big,
            )
        else:
            _draw(draw, spec, big)
    return image.resize((resolution, resolution), Image.Resampling.BOX)


def _paint(image: Image.Image, spec: ShapeSpec, points: np.ndarray, big: int) -> None:
    """Draw ``spec`` from the (n, 2) points around its boundary: filled, one outline, one outline with
    vertical stripes inside ("striped"), or two ("double": the second inset by the same distance all round)."""
    rgb = spec.rgb or COLOURS[spec.colour]
    draw = ImageDraw.Draw(image)
    path = [tuple(p) for p in points]
    if spec.style == "filled":
        draw.polygon(path, fill=rgb)
        return
    thick = (
        spec.style == "outline" and spec.shape not in NEW_SHAPES
    )  # a cross's arms take a thin outline
    width = max(1, round((OUTLINE_WIDTH if thick else THIN_WIDTH) * big))
    if spec.style == "striped":  # stripes inside the shape, then its outline over their ends
        mask = Image.new("L", image.size, 0)
        ImageDraw.Draw(mask).polygon(path, fill=255)
        stripes = Image.new("L", image.size, 0)
        period, left, right = STRIPE_PERIOD * big, points[:, 0].min(), points[:, 0].max()
        for x in np.arange(left + period / 2, right, period):
            ImageDraw.Draw(stripes).rectangle(
                [x - width / 2, 0, x + width / 2, image.size[1]], fill=255
            )
        image.paste(
            Image.new("RGB", image.size, rgb),
            (0, 0),
            Image.fromarray(np.minimum(np.asarray(mask), np.asarray(stripes))),
        )
    draw.line(path + path[:2], fill=rgb, width=width, joint="curve")
    if spec.style == "double":
        s, cx, cy = spec.size * big, spec.cx * big, spec.cy * big
        # the incentre and its distance to the sides: shrinking about it by k moves every side in by (1 - k) r
        centre, r = (
            ((cx, cy + s * math.sqrt(3) / 12), s * math.sqrt(3) / 6)
            if spec.shape == "triangle"
            else ((cx, cy), s / 2)
        )
        k = 1 - (THIN_WIDTH + DOUBLE_GAP) * big / r
        if k > 0:
            inside = [tuple(p) for p in np.asarray(centre) + (points - np.asarray(centre)) * k]
            draw.line(inside + inside[:2], fill=rgb, width=width, joint="curve")


def _draw(draw: ImageDraw.ImageDraw, spec: ShapeSpec, big: int) -> None:
    rgb = spec.rgb or COLOURS[spec.colour]
    s, cx, cy = spec.size * big, spec.cx * big, spec.cy * big
    fill = rgb if spec.style == "filled" else None
    width = 0 if spec.style == "filled" else max(1, round(OUTLINE_WIDTH * big))
    if spec.shape == "circle":
        draw.ellipse(
            [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=fill, outline=rgb, width=width
        )
    elif spec.shape == "square":
        draw.rectangle(
            [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=fill, outline=rgb, width=width
        )
    elif spec.shape == "triangle":
        points = _triangle(s, cx, cy)
        if fill is not None:
            draw.polygon(points, fill=fill)
        else:
            draw.line(points + points[:2], fill=rgb, width=width, joint="curve")
    else:
        raise ValueError(f"unknown shape {spec.shape!r}: the shapes world has {', '.join(SHAPES)}.")


def _triangle(s: float, cx: float, cy: float) -> list[tuple[float, float]]:
    """The corners of the upright equilateral triangle of side ``s`` centred on its box at ``(cx, cy)``."""
    h = s * math.sqrt(3) / 2  # fills half of its s x h bounding box
    return [(cx, cy - h / 2), (cx + s / 2, cy + h / 2), (cx - s / 2, cy + h / 2)]


def _outline_points(
    shape: str, s: float, cx: float, cy: float, corner: float, n: int = 240
) -> np.ndarray:
    """(n, 2) points walking once around ``shape``'s boundary (side ``s``, centre ``(cx, cy)``)."""
    if shape == "circle":
        angle = 2 * np.pi * np.arange(n) / n  # (n,)
        return np.stack([cx + s / 2 * np.cos(angle), cy + s / 2 * np.sin(angle)], axis=1)
    if shape == "square":
        corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]) * s / 2  # (5, 2)
    elif shape == "cross":  # a plus sign: twelve corners, arms s / 3 wide
        a, b = 1 / 6, 1 / 2
        corners = (
            np.array(
                [
                    (-a, -b),
                    (a, -b),
                    (a, -a),
                    (b, -a),
                    (b, a),
                    (a, a),
                    (a, b),
                    (-a, b),
                    (-a, a),
                    (-b, a),
                    (-b, -a),
                    (-a, -a),
                    (-a, -b),
                ]
            )
            * s
        )  # (13, 2)
    else:
        corners = np.array(_triangle(s, 0, 0) + _triangle(s, 0, 0)[:1])  # (4, 2), back to the apex
    sides = len(corners) - 1
    u = np.arange(n // sides) / (n // sides)  # (n / sides,)
    points = np.concatenate(
        [a + (b - a) * u[:, None] for a, b in zip(corners[:-1], corners[1:], strict=True)]
    )
    if (
        shape == "square" and corner > 0
    ):  # round the corners: pull points onto quarter circles of radius r
        r = corner * s
        inner = np.clip(points, -(s / 2 - r), s / 2 - r)
        out = points - inner
        length = np.linalg.norm(out, axis=1, keepdims=True)
        points = np.where(length > r, inner + out / np.maximum(length, 1e-9) * r, points)
    return points + (cx, cy)


def render_sketch(
    spec: ShapeSpec, resolution: int = 64, wobble: float = 0.05, corner: float = 0.15, seed: int = 0
) -> Image.Image:
    """``spec`` drawn as by hand: its boundary wobbles and a square's corners are rounded.

    The boundary moves in and out from the centre along a smooth random curve (waves of 2 to 6 per
    turn) scaled by ``wobble`` x the side (its typical excursion is about half of that); squares
    get corners of radius ``corner`` x the side. A generator's imperfect drawings look like this:
    ``metrics`` is tested on them, where the label is still known (tests/test_metrics.py).
    """
    rng = np.random.default_rng([seed, 7])
    big = resolution * SUPERSAMPLE
    s, cx, cy = spec.size * big, spec.cx * big, spec.cy * big
    points = _outline_points(spec.shape, s, cx, cy, corner)  # (n, 2)
    turn = np.arange(len(points)) / len(points)  # (n,)
    curve = sum(
        rng.normal() * np.sin(2 * np.pi * (k * turn + rng.uniform())) / k for k in range(2, 7)
    )  # (n,)
    away = points - points.mean(axis=0)
    points = (
        points + away / np.linalg.norm(away, axis=1, keepdims=True) * (wobble * s * curve)[:, None]
    )
    image = Image.new("RGB", (big, big), BACKGROUND)
    _paint(image, spec, points, big)
    return image.resize((resolution, resolution), Image.Resampling.BOX)


def sample_pair(index: int, seed: int = 0) -> tuple[ShapeSpec, ShapeSpec]:
    """Picture ``index`` of the two-shape stream ``seed``: two small shapes of different colours, side by side.

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
        jitter = rng.integers(-12, 13, size=3)
        rgb = tuple(
            int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour], jitter, strict=True)
        )
        specs.append(ShapeSpec(shape, colour, "small", size, cx, cy, "filled", rgb))
    if rng.integers(2):
        specs.reverse()
    return specs[0], specs[1]


def pair_caption(specs: Sequence[ShapeSpec]) -> str:
    """ "a red circle and a blue square": the shapes in the order given."""
    return " and ".join(spec.caption() for spec in specs)


class ShapesDataset(torch.utils.data.Dataset):
    """``length`` pictures of the stream ``seed``: ``(image in [-1, 1], caption)`` pairs.

    ``empty_caption_prob`` of the captions are "" (so a model trained on it learns the
    unconditional prediction that classifier-free guidance needs); ``size_word_prob`` of the
    others name the size ("a small red circle").
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        resolution: int = 64,
        empty_caption_prob: float = 0.0,
        size_word_prob: float = 0.5,
        style: str = "filled",
    ):
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}.")
        self.length, self.seed, self.resolution = length, seed, resolution
        self.empty_caption_prob, self.size_word_prob, self.style = (
            empty_caption_prob,
            size_word_prob,
            style,
        )

    def __len__(self) -> int:
        return self.length

    def spec(self, index: int) -> ShapeSpec:
        return sample_spec(index, self.seed, style=self.style)

    def caption(self, index: int) -> str:
        rng = np.random.default_rng([self.seed, index, 1])
        if rng.random() < self.empty_caption_prob:
            return ""
        return self.spec(index).caption(with_size=bool(rng.random() < self.size_word_prob))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} is outside 0..{self.length - 1}.")
        return to_tensor(render(self.spec(index), self.resolution)), self.caption(index)
