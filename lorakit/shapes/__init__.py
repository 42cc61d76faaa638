"""The shapes world: procedural, deterministic pictures of one coloured shape, and their captions.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

The same ``(seed, index)`` gives the same picture on any machine, so nothing big is committed: the
tiny SD is pretrained on pictures drawn on the fly, and a teacher can regenerate every figure.

* ``shapes.world``: ``ShapeSpec``, ``sample_spec``, ``sample_pair``, the colours, shapes, sizes and
  styles, and the captions;
* ``shapes.drawing``: ``render``, ``render_scene`` and ``render_sketch`` (drawn as by hand);
* ``shapes.dataset``: ``ShapesDataset``, a stream of (picture, caption) pairs.

Left out: more than two shapes a picture (the detectors in ``lorakit.metrics`` read one). Folders
of pictures on disk, the style sets' and a user's own, are ``lorakit.imagefolder``.
"""

from lorakit.shapes.dataset import ShapesDataset
from lorakit.shapes.drawing import (
    BACKGROUND,
    DOUBLE_GAP,
    OUTLINE_WIDTH,
    STRIPE_PERIOD,
    SUPERSAMPLE,
    THIN_WIDTH,
    render,
    render_scene,
    render_sketch,
)
from lorakit.shapes.world import (
    ALL_SHAPES,
    ALL_STYLES,
    COLOURS,
    NEW_SHAPES,
    NEW_STYLES,
    SHAPES,
    SIZES,
    STYLES,
    ShapeSpec,
    pair_caption,
    sample_pair,
    sample_spec,
)

__all__ = [
    "ALL_SHAPES",
    "ALL_STYLES",
    "BACKGROUND",
    "COLOURS",
    "DOUBLE_GAP",
    "NEW_SHAPES",
    "NEW_STYLES",
    "OUTLINE_WIDTH",
    "SHAPES",
    "SIZES",
    "STRIPE_PERIOD",
    "STYLES",
    "SUPERSAMPLE",
    "THIN_WIDTH",
    "ShapeSpec",
    "ShapesDataset",
    "pair_caption",
    "render",
    "render_scene",
    "render_sketch",
    "sample_pair",
    "sample_spec",
]
