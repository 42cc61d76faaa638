"""Reading a shapes-world picture back: its colour, its shape and its style.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

From ``regions.measure``'s numbers: the shape is the template the solid region overlaps best,
or "none" below ``MIN_SHAPE_IOU`` (a broken stroke, a blob); the style is "filled" up to
``OUTLINE_HOLLOWNESS``, else "outline"; the colour is the named colour nearest in hue to the median
of the most saturated foreground pixels (hue ignores the white an anti-aliased edge blends in).
With ``shapes=shapes.ALL_SHAPES, styles=shapes.ALL_STYLES`` the detectors also read the cross, and
a hollow shape is "double" when a column through its middle crosses more than ``MANY_STROKES``
strokes, "striped" when a row does. The default, the pretraining world only, reads every picture
as before these were added.

Left out: several shapes a picture, rotated shapes, textured backgrounds, any learned model.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from lorakit.metrics import regions
from lorakit.shapes import world

__all__ = [
    "COLOUR_HUES",
    "GREY_CHROMA",
    "MANY_STROKES",
    "MIN_SHAPE_IOU",
    "NONE",
    "OUTLINE_HOLLOWNESS",
    "detect",
    "detect_colour",
    "detect_shape",
    "detect_style",
]

NONE = "none"  # what the detectors say when there is no shape
MIN_SHAPE_IOU = 0.5  # best template overlap below which the shape is "none" (clean drawings: 0.9+)
OUTLINE_HOLLOWNESS = 0.12  # above: "outline"
MANY_STROKES = 2.5  # strokes a line crosses, on average, above which there are several outlines
GREY_CHROMA = 30.0  # max minus min channel below which a colour has no meaningful hue
COLOUR_HUES = {
    name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in world.COLOURS.items()
}


def _nearest_colour(rgb: tuple[float, float, float]) -> str:
    if max(rgb) - min(rgb) < GREY_CHROMA:  # hue means nothing for greys: use the RGB distance
        nominal = np.array(list(world.COLOURS.values()))  # (colours, 3)
        distances = ((nominal - np.array(rgb)) ** 2).sum(axis=1)  # (colours,)
        return list(world.COLOURS)[int(np.argmin(distances))]
    hue = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]
    distance = {  # around the colour circle
        name: min(abs(hue - h), 1 - abs(hue - h)) for name, h in COLOUR_HUES.items()
    }
    return min(distance, key=distance.get)


def _best_template(iou: dict[str, float], names: Sequence[str] = world.SHAPES) -> str:
    best = max(names, key=iou.get)
    return best if iou[best] >= MIN_SHAPE_IOU else NONE


def _style(numbers: dict, names: Sequence[str] = world.STYLES) -> str:
    if numbers["hollowness"] <= OUTLINE_HOLLOWNESS:
        return "filled"
    rows, columns = numbers["runs"]
    if "double" in names and columns > MANY_STROKES:  # a second outline inside: 4 a column
        return "double"
    if "striped" in names and rows > MANY_STROKES:  # vertical stripes: rows cross many
        return "striped"
    return "outline"


def detect(
    image: Image.Image | torch.Tensor | np.ndarray,
    shapes: Sequence[str] = world.SHAPES,
    styles: Sequence[str] = world.STYLES,
) -> dict[str, str]:
    """``{"colour": ..., "shape": ..., "style": ...}`` of the shape in ``image``, or "none" each.

    By default the shapes and styles the tiny SD was pretrained on; ``shapes=shapes.ALL_SHAPES``
    and ``styles=shapes.ALL_STYLES`` also read the cross and the striped and double styles.
    """
    unknown = [n for n in (*shapes, *styles) if n not in (*world.ALL_SHAPES, *world.ALL_STYLES)]
    if unknown:
        raise ValueError(
            f"the detectors know the shapes {', '.join(world.ALL_SHAPES)} and the styles "
            f"{', '.join(world.ALL_STYLES)}, not {', '.join(unknown)}."
        )
    numbers = regions.measure(image, parts="double" in styles)
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
