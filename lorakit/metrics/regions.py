"""Finding the shape in a picture and measuring it: the numbers the detectors decide on.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

The background is the median colour of the border; the *foreground* is every pixel whose largest
channel difference from it exceeds ``INK_THRESHOLD``, and of that only the largest 8-connected
component (stray specks are dropped). The *solid* region fills the foreground's rows and columns
between their first and last pixels, which closes an outline's hole: ``hollowness = 1 -
foreground / solid``. ``template_iou`` compares the solid region with a disc, a square, a triangle
and a plus sign of its area, centred on its centroid, which barely move when a drawn boundary
wobbles; ``runs`` counts the strokes a line through the middle crosses.

Left out: the decisions (``metrics.detectors``), several shapes a picture, any learned model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from lorakit import imaging, shapes

__all__ = [
    "INK_THRESHOLD",
    "MAX_SIDE",
    "MIN_AREA_FRACTION",
    "as_array",
    "ink_mask",
    "largest_component",
    "measure",
    "template_iou",
]

INK_THRESHOLD = 80.0  # channel difference (0..255) from the background that counts as foreground
MIN_AREA_FRACTION = 0.01  # a foreground smaller than this fraction of the picture is no shape
MAX_SIDE = 128  # larger pictures are shrunk first: the detectors need no more pixels


def as_array(image: Image.Image | torch.Tensor | np.ndarray) -> np.ndarray:
    """A PIL image, a (3, H, W) tensor in [-1, 1] (``imaging.to_tensor``'s range) or an (H, W, 3)
    uint8 array as an (H, W, 3) float32 array in 0..255, at most ``MAX_SIDE`` pixels a side."""
    if isinstance(image, torch.Tensor):
        image = imaging.to_image(image.squeeze(0) if image.dim() == 4 else image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(
                f"expected an (H, W, 3) uint8 array in 0..255, got dtype {image.dtype}: "
                "convert it, e.g. (array * 255).round().astype(np.uint8)."
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a tensor or an array, got {type(image).__name__}.")
    image = imaging.to_rgb(image)
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BOX,
        )
    return np.asarray(image, dtype=np.float32)  # (H, W, 3)


def largest_component(mask: np.ndarray, share: float | None = None) -> np.ndarray:
    """The largest 8-connected component of a boolean (H, W) mask, by union-find on row runs; with
    ``share``, every component at least ``share`` times as large as the largest (a double
    outline's two)."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)  # (H, W + 1): +1 where a run starts, -1 one past its end
    rows, starts = np.nonzero(steps == 1)
    stops = np.nonzero(steps == -1)[1]  # row-major order: run i is (rows[i], starts[i]:stops[i])
    n = len(rows)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    # Runs i of row y - 1 that touch run j of row y (8-connected: start_i <= stop_j, start_j <=
    # stop_i) form one contiguous range lo[j]:hi[j] of the row-major order; find them by sorting.
    stride = w + 2
    lo = np.searchsorted(rows * stride + stops, (rows - 1) * stride + starts, "left")  # (n,)
    hi = np.searchsorted(rows * stride + starts, (rows - 1) * stride + stops, "right")  # (n,)
    counts = np.maximum(hi - lo, 0)  # (n,)
    later = np.repeat(np.arange(n), counts)  # (pairs,)
    earlier = lo[later] + np.arange(len(later)) - np.repeat(np.cumsum(counts) - counts, counts)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(earlier.tolist(), later.tolist(), strict=True):
        parent[root(i)] = root(j)
    roots = np.array([root(i) for i in range(n)])  # (n,)
    sizes = np.bincount(roots, weights=stops - starts)
    keep = roots == np.argmax(sizes) if share is None else sizes[roots] >= share * sizes.max()
    marks = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(marks, (rows[keep], starts[keep]), 1)
    np.add.at(marks, (rows[keep], stops[keep]), -1)
    return np.cumsum(marks, axis=1)[:, :w] > 0


def _solid(mask: np.ndarray) -> np.ndarray:
    """Every pixel between the first and last True of both its row and its column."""
    rows = (
        np.maximum.accumulate(mask, axis=1) & np.maximum.accumulate(mask[:, ::-1], axis=1)[:, ::-1]
    )
    cols = np.maximum.accumulate(mask, axis=0) & np.maximum.accumulate(mask[::-1], axis=0)[::-1]
    return rows & cols


def _channel_spread(rgb: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Largest channel difference from ``reference`` (or, without one, max minus min channel).

    Written channel by channel: numpy's max over a last axis of length 3 is slow."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if reference is not None:
        r, g, b = np.abs(r - reference[0]), np.abs(g - reference[1]), np.abs(b - reference[2])
        return np.maximum(np.maximum(r, g), b)
    return np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)


def _median(values: np.ndarray) -> np.ndarray:
    """Per-column median of an (N, C) array (the middle element; enough here, and quick)."""
    return np.sort(values, axis=0)[len(values) // 2]


def ink_mask(image: Image.Image | torch.Tensor | np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose largest channel difference from the white background exceeds
    ``INK_THRESHOLD``."""
    background = np.array(shapes.BACKGROUND, dtype=np.float32)
    return _channel_spread(as_array(image), background) > INK_THRESHOLD


def measure(image: Image.Image | torch.Tensor | np.ndarray, parts: bool = False) -> dict | None:
    """The numbers the detectors decide on, or None when the picture holds no shape.

    ``parts``: the shape may be in several pieces (the two outlines of the double style): every
    component at least a quarter the size of the largest is the shape, not only the largest."""
    rgb = as_array(image)  # (H, W, 3)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # (2H + 2W, 3)
    ink = _channel_spread(rgb, _median(border))  # (H, W)
    foreground = largest_component(ink > INK_THRESHOLD, share=0.25 if parts else None)
    area = int(foreground.sum())
    if area < MIN_AREA_FRACTION * foreground.size:
        return None
    solid = _solid(foreground)  # outline shapes: hole closed
    ys, xs = np.nonzero(solid)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    solid_area = int(solid.sum())
    drawn = rgb[foreground]  # (area, 3)
    saturation = _channel_spread(drawn)  # (area,)
    core = drawn[saturation >= np.partition(saturation, area // 2)[area // 2]]  # no edges
    # All the strong ink within the shape (a double outline's inner one too): pixels at least 60%
    # as far from the background as the shape's own colour, so that the blended edges of two thin
    # strokes never join.
    strong = max(INK_THRESHOLD, 0.6 * float(np.percentile(ink[foreground], 90)))
    inside = (ink > strong) & solid
    return {
        "area": area,
        "shape_iou": template_iou(solid),
        "hollowness": 1 - area / solid_area,
        "runs": _runs(inside[top:bottom, left:right]),
        "rgb": tuple(float(c) for c in _median(core)),
        "box": (int(left), int(top), int(right), int(bottom)),
    }


def _runs(ink: np.ndarray) -> tuple[float, float]:
    """The mean number of separate strokes a row, and a column, crosses in the middle of a shape's
    box (25%-75% of its height, or width): 1 filled, 2 an outline, 4 a double outline, 3 or more a
    row of a striped shape (vertical stripes: its columns cross 1 or 2)."""

    def per_line(lines: np.ndarray) -> float:
        n = len(lines)
        middle = lines[int(0.25 * n) : max(int(0.75 * n), int(0.25 * n) + 1)]
        starts = np.diff(np.pad(middle.astype(np.int8), ((0, 0), (1, 0))), axis=1) == 1
        return float(np.mean(starts.sum(axis=1))) if len(middle) else 0.0

    return per_line(ink), per_line(ink.T)


def template_iou(solid: np.ndarray) -> dict[str, float]:
    """Intersection over union of a boolean (H, W) region with a disc, a square, an upright
    equilateral triangle and a plus sign of the region's area, centred on its centroid."""
    ys, xs = np.nonzero(solid)
    area, cy, cx = len(ys), ys.mean() + 0.5, xs.mean() + 0.5  # pixel centres
    y, x = np.ogrid[: solid.shape[0], : solid.shape[1]]
    y, x = y + 0.5 - cy, x + 0.5 - cx  # (H, 1), (1, W) from the centroid
    half = math.sqrt(area) / 2
    side = math.sqrt(4 * area / math.sqrt(3))
    height = side * math.sqrt(3) / 2  # the centroid is a third of the height above the base
    templates = {
        "circle": x**2 + y**2 <= area / math.pi,
        "square": (np.abs(x) <= half) & (np.abs(y) <= half),
        "triangle": (y >= -2 * height / 3)
        & (y <= height / 3)
        & (np.abs(x) <= (y + 2 * height / 3) / math.sqrt(3)),
        # a plus sign of arms a third of its side wide: area 5 (side / 3)^2
        "cross": _plus(x, y, 3 * math.sqrt(area / 5)),
    }
    return {name: float((solid & t).sum() / (solid | t).sum()) for name, t in templates.items()}


def _plus(x: np.ndarray, y: np.ndarray, side: float) -> np.ndarray:
    arm, half = side / 6, side / 2
    return ((np.abs(x) <= arm) & (np.abs(y) <= half)) | ((np.abs(y) <= arm) & (np.abs(x) <= half))
