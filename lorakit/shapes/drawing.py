"""Drawing a ``ShapeSpec``: the pretraining world's shapes, the new ones, and sketches by hand.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

``render`` draws one spec, ``render_scene`` several on one picture, supersampled 4x and shrunk
so edges are smooth without a renderer. Filled and outline circles, squares and triangles use
PIL's primitives; the cross and the striped and double styles are painted from points around the
boundary. ``render_sketch`` wobbles that boundary and rounds a square's corners: a generator's
imperfect pictures, with a known label, to test the detectors on.

Left out: anti-aliasing other than supersampling, rotation, textures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lorakit.shapes.world import COLOURS, NEW_SHAPES, NEW_STYLES, SHAPES, ShapeSpec

__all__ = [
    "BACKGROUND",
    "DOUBLE_GAP",
    "OUTLINE_WIDTH",
    "STRIPE_PERIOD",
    "SUPERSAMPLE",
    "THIN_WIDTH",
    "render",
    "render_scene",
    "render_sketch",
]

BACKGROUND = (255, 255, 255)
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges without a renderer
OUTLINE_WIDTH = 0.06  # stroke of an outline shape, as a fraction of the image side
THIN_WIDTH = 0.05  # the strokes of the striped and double styles
STRIPE_PERIOD = 0.15  # striped: one stripe every 0.15 of the image side, THIN_WIDTH wide
DOUBLE_GAP = 0.07  # double: the white between the two outlines


def render(spec: ShapeSpec, resolution: int = 64) -> Image.Image:
    """Draw ``spec`` as an RGB picture of ``resolution`` x ``resolution`` pixels."""
    return render_scene([spec], resolution)


def render_scene(specs: Sequence[ShapeSpec], resolution: int = 64) -> Image.Image:
    """Draw every spec of ``specs``, in order, on one white picture ``resolution`` pixels a side."""
    big = resolution * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for spec in specs:
        if spec.shape in NEW_SHAPES or spec.style in NEW_STYLES:
            s, cx, cy = spec.size * big, spec.cx * big, spec.cy * big
            _paint(image, spec, _outline_points(spec.shape, s, cx, cy, corner=0), big)
        else:
            _draw(draw, spec, big)
    return image.resize((resolution, resolution), Image.Resampling.BOX)


def _stripes(image: Image.Image, rgb, path: list, points: np.ndarray, width: int, big: int):
    """Vertical stripes ``width`` wide inside the polygon ``path``, one every ``STRIPE_PERIOD``."""
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


def _paint(image: Image.Image, spec: ShapeSpec, points: np.ndarray, big: int) -> None:
    """Draw ``spec`` from the (n, 2) points around its boundary: filled, one outline, one outline
    with vertical stripes inside ("striped"), or two ("double": the second inset by the same
    distance all round)."""
    rgb = spec.rgb or COLOURS[spec.colour]
    draw = ImageDraw.Draw(image)
    path = [tuple(p) for p in points]
    if spec.style == "filled":
        draw.polygon(path, fill=rgb)
        return
    thick = spec.style == "outline" and spec.shape not in NEW_SHAPES  # a cross: a thin outline
    width = max(1, round((OUTLINE_WIDTH if thick else THIN_WIDTH) * big))
    if spec.style == "striped":  # stripes inside the shape, then its outline over their ends
        _stripes(image, rgb, path, points, width, big)
    draw.line(path + path[:2], fill=rgb, width=width, joint="curve")
    if spec.style == "double":
        s, cx, cy = spec.size * big, spec.cx * big, spec.cy * big
        # the incentre and its distance to the sides: shrinking about it by k moves every side in
        # by (1 - k) r
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
    box = [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]
    if spec.shape == "circle":
        draw.ellipse(box, fill=fill, outline=rgb, width=width)
    elif spec.shape == "square":
        draw.rectangle(box, fill=fill, outline=rgb, width=width)
    elif spec.shape == "triangle":
        points = _triangle(s, cx, cy)
        if fill is not None:
            draw.polygon(points, fill=fill)
        else:
            draw.line(points + points[:2], fill=rgb, width=width, joint="curve")
    else:
        raise ValueError(f"unknown shape {spec.shape!r}: the shapes world has {', '.join(SHAPES)}.")


def _triangle(s: float, cx: float, cy: float) -> list[tuple[float, float]]:
    """The corners of the upright equilateral triangle of side ``s`` centred on its box."""
    h = s * math.sqrt(3) / 2  # fills half of its s x h bounding box
    return [(cx, cy - h / 2), (cx + s / 2, cy + h / 2), (cx - s / 2, cy + h / 2)]


# A plus sign of side 1 centred on 0: twelve corners (and the first again), arms a third wide.
_CROSS_CORNERS = (
    np.array(
        [(-1, -3), (1, -3), (1, -1), (3, -1), (3, 1), (1, 1), (1, 3)]
        + [(-1, 3), (-1, 1), (-3, 1), (-3, -1), (-1, -1), (-1, -3)]
    )
    / 6
)  # (13, 2)


def _outline_points(
    shape: str, s: float, cx: float, cy: float, corner: float, n: int = 240
) -> np.ndarray:
    """(n, 2) points walking once around ``shape``'s boundary (side ``s``, centre ``(cx, cy)``)."""
    if shape == "circle":
        angle = 2 * np.pi * np.arange(n) / n  # (n,)
        return np.stack([cx + s / 2 * np.cos(angle), cy + s / 2 * np.sin(angle)], axis=1)
    if shape == "square":
        corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]) * s / 2  # (5, 2)
    elif shape == "cross":
        corners = _CROSS_CORNERS * s  # (13, 2)
    else:
        corners = np.array(_triangle(s, 0, 0) + _triangle(s, 0, 0)[:1])  # (4, 2), back to the apex
    sides = len(corners) - 1
    u = np.arange(n // sides) / (n // sides)  # (n / sides,)
    points = np.concatenate(
        [a + (b - a) * u[:, None] for a, b in zip(corners[:-1], corners[1:], strict=True)]
    )
    if shape == "square" and corner > 0:  # round the corners: onto quarter circles of radius r
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
    ``metrics`` is tested on them, where the label is still known (tests/metrics/).
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
