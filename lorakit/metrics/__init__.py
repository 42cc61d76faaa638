"""Reading shapes-world pictures back, and scoring a model's prompt grid with what they show.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb (does the tiny SD draw what it is
asked?) and used again to measure what a style LoRA changed.

* ``metrics.regions``: the shape's region in a picture and its numbers (``measure``, ``ink_mask``);
* ``metrics.detectors``: colour, shape and style of one picture (``detect``);
* ``metrics.grid``: a prompt grid scored (``evaluate_grid``, ``score_pictures``, ``GridResult``).

A detector looks at one picture of one shape on a plain background (``shapes.render`` draws
them); it is tested on such pictures, clean, noisy and drawn as by hand, where the label is known.

Left out: several shapes a picture, rotated shapes, textured backgrounds, any learned model.
"""

from lorakit.metrics.detectors import (
    COLOUR_HUES,
    GREY_CHROMA,
    MANY_STROKES,
    MIN_SHAPE_IOU,
    NONE,
    OUTLINE_HOLLOWNESS,
    detect,
    detect_colour,
    detect_shape,
    detect_style,
)
from lorakit.metrics.grid import GenerateFn, GridResult, evaluate_grid, score_pictures
from lorakit.metrics.regions import (
    INK_THRESHOLD,
    MAX_SIDE,
    MIN_AREA_FRACTION,
    as_array,
    ink_mask,
    largest_component,
    measure,
    template_iou,
)

__all__ = [
    "COLOUR_HUES",
    "GREY_CHROMA",
    "INK_THRESHOLD",
    "MANY_STROKES",
    "MAX_SIDE",
    "MIN_AREA_FRACTION",
    "MIN_SHAPE_IOU",
    "NONE",
    "OUTLINE_HOLLOWNESS",
    "GenerateFn",
    "GridResult",
    "as_array",
    "detect",
    "detect_colour",
    "detect_shape",
    "detect_style",
    "evaluate_grid",
    "ink_mask",
    "largest_component",
    "measure",
    "score_pictures",
    "template_iou",
]
