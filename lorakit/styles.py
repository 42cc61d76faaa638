"""Style sets: small image folders that teach the tiny SD a style it never saw, under a trigger.

Introduced in notebooks/06_train_style_lora.ipynb.

The ``outline`` set (``data/styles/outline``) draws the pretraining's filled shapes hollow, each
captioned "a red circle in sks style". Some colour x shape combinations (``OUTLINE_HELD_OUT``) are
kept out of it: a LoRA that draws them hollow has learnt the style, not 16 pictures. Lessons 09-10
add ``striped`` and ``double`` under their own triggers (:data:`TRIGGERS`), ``cross`` (a shape the
tiny SD never saw) and a new word for a known shape (:func:`concept_examples`). Every committed
folder is exactly what its ``make_*`` function writes (a test checks every pixel and caption).
Lesson 07's ``outline_loras`` keeps the outline LoRA trained once per setting (``train_or_load``:
"load if present, otherwise train"); its names are here too, as ``styles.train_or_load``.

Left out: a user's own photos (any folder ``imagefolder.ImageFolderDataset`` reads), augmentation
beyond mirroring (``TrainConfig.flip``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from PIL import Image

from lorakit import config, imagefolder, shapes

# Lesson 07's names (lorakit.outline_loras), given here too: see __getattr__.
FROM_OUTLINE_LORAS = (
    "LAB_RANKS",
    "LAB_STEPS",
    "TRAINED_DIR",
    "lora_folder_name",
    "train_lab_loras",
    "train_or_load",
)
__all__ = [
    "CONCEPT_SHAPE",
    "CONCEPT_WORD",
    "CROSS_DIR",
    "CROSS_SEED",
    "CROSS_SIZE",
    "FROM_OUTLINE_LORAS",
    "OUTLINE_DIR",
    "OUTLINE_HELD_OUT",
    "OUTLINE_RESOLUTION",
    "OUTLINE_SEED",
    "OUTLINE_SIZE",
    "OUTLINE_TRAIN",
    "PLAIN_TEMPLATE",
    "STYLES_DIR",
    "TEMPLATE",
    "TRIGGER",
    "TRIGGERS",
    "caption",
    "concept_examples",
    "cross_examples",
    "make_cross_set",
    "make_outline_set",
    "make_style_set",
    "outline_examples",
    "regenerate",
    "style_caption",
    "style_dir",
    "style_examples",
    "style_prompts",
] + list(FROM_OUTLINE_LORAS)

# A models.RESERVED_WORDS word: one token the tiny SD never saw in pretraining. It comes after the
# pretraining words, and CLIP's text encoder is causal, so "a red circle" is encoded as before. (No
# comma: the tiny tokenizer has no "," and would read it as an unknown token.)
TRIGGER = "sks"
TEMPLATE = "a {colour} {shape} in " + TRIGGER + " style"  # evaluate_grid(template=...) takes it
PLAIN_TEMPLATE = "a {colour} {shape}"  # the pretraining captions: the prompt without the trigger

STYLES_DIR = config.DATA_DIR / "styles"
OUTLINE_DIR = STYLES_DIR / "outline"
OUTLINE_SIZE = 16  # pictures in the set
OUTLINE_SEED = 7  # the shapes.sample_spec stream the set draws sizes and positions from
OUTLINE_RESOLUTION = 64
# Combinations never shown in the set: every colour and every shape still appears in training.
OUTLINE_HELD_OUT: tuple[tuple[str, str], ...] = (
    ("red", "square"),
    ("green", "triangle"),
    ("blue", "circle"),
    ("yellow", "square"),
)
OUTLINE_TRAIN: tuple[tuple[str, str], ...] = tuple(
    (colour, shape)
    for colour in shapes.COLOURS
    for shape in shapes.SHAPES
    if (colour, shape) not in OUTLINE_HELD_OUT
)

# Each a models.RESERVED_WORDS word; the striped and double sets are drawn large
# (shapes.NEW_STYLES), read by metrics.detect(image, shapes.ALL_SHAPES, shapes.ALL_STYLES).
TRIGGERS = {"outline": TRIGGER, "striped": "ohwx", "double": "zorb"}
CROSS_DIR = STYLES_DIR / "cross"
CROSS_SIZE, CROSS_SEED = 15, 11  # three pictures of each colour
CONCEPT_WORD, CONCEPT_SHAPE = "vex", "triangle"  # a new word for a shape it knows: "a red vex"


def style_dir(style: str) -> Path:
    """Where the committed set of ``style`` lives (``data/styles/<style>``)."""
    if style not in TRIGGERS:
        raise ValueError(f"no style set {style!r}: the sets are {', '.join(TRIGGERS)}.")
    return STYLES_DIR / style


def style_caption(style: str, colour: str, shape: str) -> str:
    """ "a red circle in ohwx style": a set's caption, with its style's trigger."""
    style_dir(style)
    return f"a {colour} {shape} in {TRIGGERS[style]} style"


def style_examples(
    style: str, count: int = OUTLINE_SIZE, seed: int = OUTLINE_SEED
) -> list[tuple[shapes.ShapeSpec, str]]:
    """The (spec, caption) pairs of ``style``'s set: the outline set's shapes and colours, in
    ``style``."""
    return [
        (spec, style_caption(style, spec.colour, spec.shape))
        for spec, _ in outline_examples(count, seed, style=style)
    ]


def make_style_set(style: str, folder: str | os.PathLike | None = None) -> Path:
    """Write ``style``'s set (``OUTLINE_SIZE`` PNGs + ``metadata.jsonl``) to ``folder`` (default:
    the committed one)."""
    return _write_set(style_examples(style), folder or style_dir(style))


def concept_examples(
    word: str = CONCEPT_WORD, shape: str = CONCEPT_SHAPE, count: int = 15, seed: int = 13
) -> list[tuple[shapes.ShapeSpec, str]]:
    """Filled ``shape`` s of every colour in turn, captioned "a <colour> <word>": a new meaning for
    a prompt when ``word`` is one of ``models.RESERVED_WORDS`` (it means nothing to the tiny SD
    until a LoRA teaches it)."""
    colours = list(shapes.COLOURS)
    specs = [
        shapes.sample_spec(i, seed, shape=shape, colour=colours[i % len(colours)])
        for i in range(count)
    ]
    return [(spec, f"a {spec.colour} {word}") for spec in specs]


def cross_examples(
    count: int = CROSS_SIZE, seed: int = CROSS_SEED
) -> list[tuple[shapes.ShapeSpec, str]]:
    """The (spec, caption) pairs of the cross set: filled plus signs of every colour ("a red
    cross")."""
    return concept_examples("cross", "cross", count, seed)


def make_cross_set(folder: str | os.PathLike | None = None) -> Path:
    """Write the cross set to ``folder`` (default: the committed ``data/styles/cross``)."""
    return _write_set(cross_examples(), folder or CROSS_DIR)


def caption(colour: str, shape: str, trigger: bool = True) -> str:
    """The set's caption for a colour and shape (``trigger=False``: the plain pretraining
    prompt)."""
    return (TEMPLATE if trigger else PLAIN_TEMPLATE).format(colour=colour, shape=shape)


def outline_examples(
    count: int = OUTLINE_SIZE, seed: int = OUTLINE_SEED, style: str = "outline"
) -> list[tuple[shapes.ShapeSpec, str]]:
    """The (spec, caption) pairs of the set: picture ``i`` is ``OUTLINE_TRAIN[i % 11]``.

    ``style="filled"`` gives the same shapes filled, at the same sizes and places: ground truth
    for checking that the detectors tell the two styles apart on exactly these pictures.
    """
    pairs = []
    for index in range(count):
        colour, shape = OUTLINE_TRAIN[index % len(OUTLINE_TRAIN)]
        spec = shapes.sample_spec(index, seed, shape=shape, colour=colour, style=style)
        pairs.append((spec, caption(colour, shape)))
    return pairs


def make_outline_set(folder: str | os.PathLike = OUTLINE_DIR) -> Path:
    """Write the outline set (``OUTLINE_SIZE`` PNGs + ``metadata.jsonl``) to ``folder``; returns it.

    Deterministic: the same pixels and captions on every machine, equal to ``data/styles/outline``.
    """
    return _write_set(outline_examples(), folder)


def _write_set(pairs: list[tuple[shapes.ShapeSpec, str]], folder: str | os.PathLike) -> Path:
    """The (spec, caption) pairs drawn at ``OUTLINE_RESOLUTION`` and written as an image folder."""
    images: list[Image.Image] = [shapes.render(spec, OUTLINE_RESOLUTION) for spec, _ in pairs]
    return imagefolder.write_imagefolder(folder, images, [text for _, text in pairs])


def style_prompts(held_out: bool = True, trigger: bool = True, style: str = "outline") -> list[str]:
    """Prompts for evaluating a style LoRA: the held-out combinations (default) or the trained ones,
    with ``style``'s trigger ("a blue circle in ohwx style" for ``style="striped"``).

    ``trigger=False`` gives the same prompts without the trigger phrase, to see whether the
    style leaks into plain prompts.
    """
    style_dir(style)  # one of the style sets
    combos = OUTLINE_HELD_OUT if held_out else OUTLINE_TRAIN
    if not trigger:
        return [caption(colour, shape, trigger=False) for colour, shape in combos]
    return [style_caption(style, colour, shape) for colour, shape in combos]


def __getattr__(name: str):
    """``styles.train_or_load`` and the other names of lesson 07's ``outline_loras``, imported on
    first use: lesson 06 does not need them, and they need this module."""
    if name in FROM_OUTLINE_LORAS:
        from lorakit import outline_loras

        return getattr(outline_loras, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m lorakit.styles [FOLDER] [--all]``: write the committed sets again; ``--loras``:
    train lesson 07's LoRAs (``outline_loras.train_lab_loras``)."""
    from lorakit import models, outline_loras

    parser = argparse.ArgumentParser(
        description="Regenerate the committed style sets, or lesson 07's LoRAs."
    )
    parser.add_argument(
        "folder", nargs="?", default=str(OUTLINE_DIR), help="where to write the outline set"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="also write the striped, double and cross sets, each to its committed folder",
    )
    parser.add_argument(
        "--loras",
        action="store_true",
        help=f"train lesson 07's LoRAs (ranks {outline_loras.LAB_RANKS}, "
        f"{outline_loras.LAB_STEPS} steps) into "
        f"{outline_loras.TRAINED_DIR.relative_to(config.REPO_ROOT)}",
    )
    args = parser.parse_args(argv)
    if args.loras:
        for path in outline_loras.train_lab_loras(models.load_pipeline("tiny")):
            print(path.relative_to(config.REPO_ROOT))
        return
    print(make_outline_set(args.folder))
    if args.all:
        for style in TRIGGERS:
            if style != "outline":
                print(make_style_set(style))
        print(make_cross_set())


if __name__ == "__main__":  # python -m lorakit.styles [FOLDER] | --all | --loras
    regenerate()
