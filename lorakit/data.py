"""The shapes world and the image folders under their former common name: ``lorakit.data``.

They are two concepts and live in two files, ``lorakit.shapes`` (introduced in lesson 03) and
``lorakit.imagefolder`` (lesson 06); new code imports those. This module keeps code written before
the split working, with the same names.
"""

from lorakit.imagefolder import (  # noqa: F401
    MAX_LISTED_PROBLEMS,
    METADATA,
    ImageFolderDataset,
    read_imagefolder,
    to_image,
    to_rgb,
    to_tensor,
    write_imagefolder,
)
from lorakit.shapes import (  # noqa: F401
    BACKGROUND,
    COLOURS,
    OUTLINE_WIDTH,
    SHAPES,
    SIZES,
    STYLES,
    SUPERSAMPLE,
    ShapesDataset,
    ShapeSpec,
    pair_caption,
    render,
    render_scene,
    render_sketch,
    sample_pair,
    sample_spec,
)
