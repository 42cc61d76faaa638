"""Reading a shapes-world picture back: colour, shape and style detectors, and a prompt-grid score.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb (does the tiny SD draw what it is
asked?) and used again to measure what a style LoRA changed.

A detector looks at one picture of one shape on a plain background (``shapes.render`` draws them):

1. the background is the median colour of the border; the *foreground* is every pixel whose
   largest channel difference from it exceeds ``INK_THRESHOLD`` (far above mild noise), and of
   that only the largest 8-connected component (stray specks are dropped);
2. the *solid* region fills the foreground's rows and columns between their first and last
   pixels, which closes the hole of an outline shape; ``hollowness = 1 - foreground / solid``
   tells ``"filled"`` (about 0) from ``"outline"`` (0.2 and more);
3. the shape is the template the solid region overlaps best (intersection over union): a disc,
   an axis-aligned square and an upright equilateral triangle, each of the region's area and
   centred on its centroid. Area and centroid barely move when a drawn boundary wobbles or a
   square's corners round off, unlike the extreme pixels a bounding box rests on. A region that
   overlaps no template by ``MIN_SHAPE_IOU`` (a broken stroke, a blob) is no shape: "none";
4. the colour is the named colour (``shapes.COLOURS``) nearest in hue to the median of the most
   saturated foreground pixels (hue ignores how much white an anti-aliased edge blends in).

Beyond the pretraining world (``detect(image, shapes=shapes.ALL_SHAPES, styles=shapes.ALL_STYLES)``):
a plus-sign template reads the ``cross``, and a hollow shape is ``"double"`` when a column through
the middle of its box crosses more than ``MANY_STROKES`` strokes on average (two outlines: 4),
``"striped"`` when a row does (vertical stripes cross rows, not columns); the double style's two
outlines are two components, both kept. The default, the pretraining world's shapes and styles
only, reads every picture exactly as before these were added.

Left out: several shapes a picture, rotated shapes, textured backgrounds, any learned model.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from lorakit import imagefolder
from lorakit import shapes as world  # the shapes world (evaluate_grid has a parameter named shapes)

NONE = "none"  # what the detectors say when there is no shape
INK_THRESHOLD = 80.0  # channel difference (0..255) from the background that counts as foreground
MIN_AREA_FRACTION = 0.01  # a foreground smaller than this fraction of the picture is no shape
MIN_SHAPE_IOU = (
    0.5  # best template overlap below which the shape is "none" (clean drawings: 0.9 and more)
)
OUTLINE_HOLLOWNESS = 0.12  # above: "outline"
MANY_STROKES = (
    2.5  # strokes a line crosses, on average, above which a hollow shape has more than one outline
)
GREY_CHROMA = 30.0  # max minus min channel below which a colour has no meaningful hue
MAX_SIDE = 128  # larger pictures are shrunk first: the detectors need no more pixels
COLOUR_HUES = {
    name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in world.COLOURS.items()
}


def as_array(image: Image.Image | torch.Tensor | np.ndarray) -> np.ndarray:
    """A PIL image, a (3, H, W) tensor in [-1, 1] (``imagefolder.to_tensor``'s range) or an (H, W, 3)
    uint8 array as an (H, W, 3) float32 array in 0..255, at most ``MAX_SIDE`` pixels a side."""
    if isinstance(image, torch.Tensor):
        image = imagefolder.to_image(image.squeeze(0) if image.dim() == 4 else image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(
                f"expected an (H, W, 3) uint8 array in 0..255, got dtype {image.dtype}: "
                "convert it, e.g. (array * 255).round().astype(np.uint8)."
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a tensor or an array, got {type(image).__name__}.")
    image = imagefolder.to_rgb(image)
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BOX,
        )
    return np.asarray(image, dtype=np.float32)  # (H, W, 3)


def largest_component(mask: np.ndarray, share: float | None = None) -> np.ndarray:
    """The largest 8-connected component of a boolean (H, W) mask, by union-find on row runs; with
    ``share``, every component at least ``share`` times as large as the largest (a double outline's two)."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)  # (H, W + 1): +1 where a run starts, -1 one past its end
    rows, starts = np.nonzero(steps == 1)
    stops = np.nonzero(steps == -1)[1]  # row-major order, so run i is (rows[i], starts[i]:stops[i])
    n = len(rows)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    # Runs i of row y - 1 that touch run j of row y (8-connected: start_i <= stop_j, start_j <= stop_i)
    # form one contiguous range lo[j]:hi[j] of the row-major order; find them with sorted keys.
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
    """(H, W) bool: pixels whose largest channel difference from the white background exceeds ``INK_THRESHOLD``."""
    return (
        _channel_spread(as_array(image), np.array(world.BACKGROUND, dtype=np.float32))
        > INK_THRESHOLD
    )


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
    pixels = rgb[foreground]  # (area, 3)
    saturation = _channel_spread(pixels)  # (area,)
    core = pixels[saturation >= np.partition(saturation, area // 2)[area // 2]]  # no blended edges
    # All the strong ink within the shape (a double outline's inner one too): pixels at least 60% as far from
    # the background as the shape's own colour, so that the blended edges of two thin strokes never join.
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
    """The mean number of separate strokes a row, and a column, crosses in the middle of a shape's box
    (25%-75% of its height, or width): 1 filled, 2 an outline, 4 a double outline, 3 or more a row of a
    striped shape (vertical stripes: its columns cross 1 or 2)."""

    def per_line(lines: np.ndarray) -> float:
        n = len(lines)
        middle = lines[int(0.25 * n) : max(int(0.75 * n), int(0.25 * n) + 1)]
        starts = np.diff(np.pad(middle.astype(np.int8), ((0, 0), (1, 0))), axis=1) == 1
        return float(np.mean(starts.sum(axis=1))) if len(middle) else 0.0

    return per_line(ink), per_line(ink.T)


def template_iou(solid: np.ndarray) -> dict[str, float]:
    """Intersection over union of a boolean (H, W) region with a disc, a square and an upright
    equilateral triangle of the region's area, centred on its centroid."""
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


def _nearest_colour(rgb: tuple[float, float, float]) -> str:
    if max(rgb) - min(rgb) < GREY_CHROMA:  # hue means nothing for greys: fall back on RGB distance
        distances = ((np.array(list(world.COLOURS.values())) - np.array(rgb)) ** 2).sum(
            axis=1
        )  # (colours,)
        return list(world.COLOURS)[int(np.argmin(distances))]
    hue = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]
    distance = {
        name: min(abs(hue - h), 1 - abs(hue - h)) for name, h in COLOUR_HUES.items()
    }  # circular
    return min(distance, key=distance.get)


def _best_template(iou: dict[str, float], names: Sequence[str] = world.SHAPES) -> str:
    best = max(names, key=iou.get)
    return best if iou[best] >= MIN_SHAPE_IOU else NONE


def _style(numbers: dict, names: Sequence[str] = world.STYLES) -> str:
    if numbers["hollowness"] <= OUTLINE_HOLLOWNESS:
        return "filled"
    rows, columns = numbers["runs"]
    if (
        "double" in names and columns > MANY_STROKES
    ):  # a second outline inside the first: 4 a column
        return "double"
    if (
        "striped" in names and rows > MANY_STROKES
    ):  # vertical stripes: rows cross many, columns one or two
        return "striped"
    return "outline"


def detect(
    image: Image.Image | torch.Tensor | np.ndarray,
    shapes: Sequence[str] = world.SHAPES,
    styles: Sequence[str] = world.STYLES,
) -> dict[str, str]:
    """``{"colour": ..., "shape": ..., "style": ...}`` of the shape in ``image``, or "none" for each.

    By default the shapes and styles the tiny SD was pretrained on; ``shapes=shapes.ALL_SHAPES`` and
    ``styles=shapes.ALL_STYLES`` also read the cross and the striped and double styles.
    """
    unknown = [n for n in (*shapes, *styles) if n not in (*world.ALL_SHAPES, *world.ALL_STYLES)]
    if unknown:
        raise ValueError(
            f"the detectors know the shapes {', '.join(world.ALL_SHAPES)} and the styles "
            f"{', '.join(world.ALL_STYLES)}, not {', '.join(unknown)}."
        )
    numbers = measure(image, parts="double" in styles)
    if numbers is None:
        return {"colour": NONE, "shape": NONE, "style": NONE}
    return {
        "colour": _nearest_colour(numbers["rgb"]),
        "shape": _best_template(numbers["shape_iou"], shapes),
        "style": _style(numbers, styles),
    }


def detect_colour(image) -> str:
    return detect(image)["colour"]


def detect_shape(image) -> str:
    return detect(image)["shape"]


def detect_style(image) -> str:
    """``"filled"`` or ``"outline"`` (``"none"`` without a shape)."""
    return detect(image)["style"]


# ---------------------------------------------------------------------------------------------
# Prompt-grid evaluation: does a model draw what it is asked?

GenerateFn = Callable[[list[str], list[int]], Sequence[Image.Image]]


@dataclass
class GridResult:
    """Scores of a prompt grid; ``records`` has one dict per (prompt, seed) picture."""

    records: list[dict]
    style: str  # the style whose rate ``style_rate`` reports
    images: list[Image.Image] = field(repr=False, default_factory=list)

    def _rate(self, key: str) -> float:
        return float(np.mean([record[key] for record in self.records]))

    @property
    def colour_accuracy(self) -> float:
        return self._rate("colour_ok")

    @property
    def shape_accuracy(self) -> float:
        return self._rate("shape_ok")

    @property
    def both_accuracy(self) -> float:
        return self._rate("both_ok")

    @property
    def style_rate(self) -> float:
        """The fraction of pictures detected in ``style`` (e.g. how often a style LoRA shows)."""
        return self._rate("style_ok")

    def to_dict(self) -> dict:
        return {
            "colour_accuracy": self.colour_accuracy,
            "shape_accuracy": self.shape_accuracy,
            "both_accuracy": self.both_accuracy,
            "style_rate": self.style_rate,
            "style": self.style,
            "records": self.records,
        }

    def table(self) -> str:
        """Colour x shape table of pictures with both right, then the four scores."""
        colours = list(dict.fromkeys(record["colour"] for record in self.records))
        shape_names = list(dict.fromkeys(record["shape"] for record in self.records))
        width = max(8, *(len(s) + 2 for s in shape_names))
        lines = [f"{'':<8}" + "".join(f"{s:>{width}}" for s in shape_names)]
        for colour in colours:
            cells = []
            for shape in shape_names:
                cell = [
                    r["both_ok"]
                    for r in self.records
                    if r["colour"] == colour and r["shape"] == shape
                ]
                cells.append(f"{sum(cell)}/{len(cell)}".rjust(width))
            lines.append(f"{colour:<8}" + "".join(cells))
        lines.append(
            f"colour {self.colour_accuracy:.1%}  shape {self.shape_accuracy:.1%}  "
            f"both {self.both_accuracy:.1%}  {self.style} {self.style_rate:.1%}  "
            f"({len(self.records)} pictures)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def evaluate_grid(
    generate_fn: GenerateFn,
    colours: Sequence[str] = tuple(world.COLOURS),
    shapes: Sequence[str] = world.SHAPES,
    seeds: Sequence[int] = (0, 1, 2, 3),
    template: str = "a {colour} {shape}",
    style: str = "outline",
    batch_size: int | None = None,
) -> GridResult:
    """Ask ``generate_fn`` for every colour x shape x seed and score the pictures with :func:`detect`.

    ``generate_fn(prompts, seeds)`` gets two lists of the same length and returns one picture per
    (prompt, seed) pair, in order; ``batch_size`` splits the grid into calls of at most that many.
    ``style_rate`` is the fraction of pictures detected in ``style``.
    """
    for name in colours:
        if name not in world.COLOURS:
            raise ValueError(
                f"unknown colour {name!r}: the detectors know {', '.join(world.COLOURS)}."
            )
    for name in shapes:
        if name not in world.SHAPES:
            raise ValueError(
                f"unknown shape {name!r}: the detectors know {', '.join(world.SHAPES)}."
            )
    if style not in world.STYLES:
        raise ValueError(f"unknown style {style!r}: use one of {', '.join(world.STYLES)}.")
    cells = [(c, s, seed) for c in colours for s in shapes for seed in seeds]
    if not cells:
        raise ValueError("the grid is empty: give at least one colour, one shape and one seed.")
    step = batch_size or len(cells)
    images: list[Image.Image] = []
    for begin in range(0, len(cells), step):
        batch = cells[begin : begin + step]
        prompts = [template.format(colour=c, shape=s) for c, s, _ in batch]
        pictures = list(generate_fn(prompts, [seed for _, _, seed in batch]))
        if len(pictures) != len(batch):
            raise ValueError(
                f"generate_fn returned {len(pictures)} pictures for {len(batch)} prompts: "
                "it must return one picture per (prompt, seed) pair."
            )
        images.extend(pictures)
    records = [
        _record(image, template.format(colour=colour, shape=shape), colour, shape, seed, style)
        for (colour, shape, seed), image in zip(cells, images, strict=True)
    ]
    return GridResult(records=records, style=style, images=images)


def _record(image, prompt: str, colour: str, shape: str, seed: int | None, style: str) -> dict:
    """One picture's row of a :class:`GridResult`: what was asked, what :func:`detect` found, and whether they agree."""
    found = detect(image)
    return {
        "prompt": prompt,
        "colour": colour,
        "shape": shape,
        "seed": seed,
        "detected_colour": found["colour"],
        "detected_shape": found["shape"],
        "detected_style": found["style"],
        "colour_ok": found["colour"] == colour,
        "shape_ok": found["shape"] == shape,
        "both_ok": found["colour"] == colour and found["shape"] == shape,
        "style_ok": found["style"] == style,
    }


def score_pictures(
    images: Sequence,
    prompts: Sequence[str],
    style: str = "outline",
    seeds: Sequence[int] | None = None,
) -> GridResult:
    """Score pictures already drawn: ``images[i]`` from ``prompts[i]``, a prompt that starts "a <colour> <shape>".

    The same rows as :func:`evaluate_grid`, for pictures that are not a full colour x shape grid (held-out
    combinations, say), or that were drawn once and are scored several ways.
    """
    if len(images) != len(prompts):
        raise ValueError(
            f"{len(images)} pictures for {len(prompts)} prompts: give one prompt per picture."
        )
    if not prompts:
        raise ValueError("no pictures to score.")
    if style not in world.STYLES:
        raise ValueError(f"unknown style {style!r}: use one of {', '.join(world.STYLES)}.")
    records = []
    for index, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        words = prompt.split()
        if (
            len(words) < 3
            or words[0] != "a"
            or words[1] not in world.COLOURS
            or words[2] not in world.SHAPES
        ):
            raise ValueError(
                f"prompt {index} ({prompt!r}) does not start 'a <colour> <shape>' with a colour of "
                f"{', '.join(world.COLOURS)} and a shape of {', '.join(world.SHAPES)}."
            )
        records.append(
            _record(
                image, prompt, words[1], words[2], None if seeds is None else seeds[index], style
            )
        )
    return GridResult(records=records, style=style, images=list(images))
