"""Style sets: small image folders that teach the tiny SD a style it never saw, under a trigger word.

Introduced in notebooks/06_train_style_lora.ipynb.

The tiny SD was pretrained on *filled* shapes only. The ``outline`` set (``data/styles/outline``)
shows the same shapes drawn *hollow*, each with a caption that names the colour and the shape
and then the trigger phrase::

    a red circle in sks style

``sks`` is one of ``models.RESERVED_WORDS``: a token in the tiny tokenizer's vocabulary that
no pretraining caption used, so it means nothing until a LoRA gives it the style. The trigger
comes *after* the pretraining words, and CLIP's text encoder is causal, so "a red circle" is
encoded exactly as before; the trigger only adds tokens for cross-attention to read. (No
comma: the tiny tokenizer has no "," and would read it as an unknown token.)

Only some colour x shape combinations are in the set; the others (``OUTLINE_HELD_OUT``) are
kept for evaluation. A LoRA that draws "a blue circle in sks style" hollow, though it never saw
a blue circle in the set, has learnt the style rather than memorised 16 pictures.

The committed folder is exactly what :func:`make_outline_set` writes (a test checks every pixel
and caption), so a teacher can regenerate it, and students can open it as the example of the
``imagefolder`` layout their own photos would use.

:func:`train_or_load` trains the outline LoRA once per setting and keeps it on disk (lesson 07
sweeps ranks): "load if present, otherwise train". The LoRAs of lesson 07's sweep (``LAB_RANKS``
at ``LAB_STEPS`` steps, the small preset) are committed in ``data/loras/outline``, trained by
``python -m lorakit.styles --loras`` with exactly these settings: four runs of about two minutes each
would not fit a class period on a laptop, and loading them does. A test keeps them in step with
the preset: change a setting, and the files must be trained again.

More sets, for the lessons that test LoRA's claims (several styles in one LoRA, a change the
base model never saw): ``data/styles/striped`` and ``data/styles/double`` are the outline set's
shapes and colours in the ``striped`` and ``double`` styles, drawn large (``shapes.NEW_STYLES``), under their own triggers
(``ohwx``, ``zorb``: :data:`TRIGGERS`), made by :func:`make_style_set`; ``data/styles/cross``
(:func:`make_cross_set`) teaches a shape the tiny SD never saw, a plus sign, as "a red cross".
``metrics.detect(image, shapes=shapes.ALL_SHAPES, styles=shapes.ALL_STYLES)`` reads them all.

Left out: a user's own photos (any folder that ``imagefolder.ImageFolderDataset`` reads works),
augmentation beyond mirroring (``TrainConfig.flip``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from lorakit import config, imagefolder, inject, shapes

TRIGGER = "sks"  # in models.RESERVED_WORDS: a word the tiny SD never saw in pretraining
TEMPLATE = (
    "a {colour} {shape} in " + TRIGGER + " style"
)  # evaluate_grid(template=...) takes it as is
PLAIN_TEMPLATE = (
    "a {colour} {shape}"  # the pretraining captions: the same prompt without the trigger
)

OUTLINE_DIR = config.DATA_DIR / "styles" / "outline"
TRAINED_DIR = (
    config.DATA_DIR / "loras" / "outline"
)  # committed outline LoRAs, as train_or_load names them
LAB_RANKS = (1, 2, 4, 8)  # lesson 07's rank sweep
LAB_STEPS = 300  # the small preset's steps
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


TRIGGERS = {
    "outline": TRIGGER,
    "striped": "ohwx",
    "double": "zorb",
}  # each a models.RESERVED_WORDS word
STYLES_DIR = config.DATA_DIR / "styles"
CROSS_DIR = STYLES_DIR / "cross"
CROSS_SIZE, CROSS_SEED = 15, 11  # three pictures of each colour


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
    """The (spec, caption) pairs of ``style``'s set: the outline set's shapes and colours, in ``style``."""
    return [
        (spec, style_caption(style, spec.colour, spec.shape))
        for spec, _ in outline_examples(count, seed, style=style)
    ]


def make_style_set(style: str, folder: str | os.PathLike | None = None) -> Path:
    """Write ``style``'s set (``OUTLINE_SIZE`` PNGs + ``metadata.jsonl``) to ``folder`` (default: the committed one)."""
    return _write_set(style_examples(style), folder or style_dir(style))


CONCEPT_WORD, CONCEPT_SHAPE = (
    "vex",
    "triangle",
)  # a new word for a shape the tiny SD knows: "a red vex"


def concept_examples(
    word: str = CONCEPT_WORD, shape: str = CONCEPT_SHAPE, count: int = 15, seed: int = 13
) -> list[tuple[shapes.ShapeSpec, str]]:
    """Filled ``shape`` s of every colour in turn, captioned "a <colour> <word>": a new meaning for a prompt when
    ``word`` is one of ``models.RESERVED_WORDS`` (it means nothing to the tiny SD until a LoRA teaches it)."""
    colours = list(shapes.COLOURS)
    specs = [
        shapes.sample_spec(i, seed, shape=shape, colour=colours[i % len(colours)])
        for i in range(count)
    ]
    return [(spec, f"a {spec.colour} {word}") for spec in specs]


def cross_examples(
    count: int = CROSS_SIZE, seed: int = CROSS_SEED
) -> list[tuple[shapes.ShapeSpec, str]]:
    """The (spec, caption) pairs of the cross set: filled plus signs of every colour, "a red cross"."""
    return concept_examples("cross", "cross", count, seed)


def make_cross_set(folder: str | os.PathLike | None = None) -> Path:
    """Write the cross set to ``folder`` (default: the committed ``data/styles/cross``)."""
    return _write_set(cross_examples(), folder or CROSS_DIR)


def caption(colour: str, shape: str, trigger: bool = True) -> str:
    """The set's caption for a colour and shape (``trigger=False``: the plain pretraining prompt)."""
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


def style_prompts(held_out: bool = True, trigger: bool = True) -> list[str]:
    """Prompts for evaluating a style LoRA: the held-out combinations (default) or the trained ones.

    ``trigger=False`` gives the same prompts without the trigger phrase, to see whether the
    style leaks into plain prompts.
    """
    combos = OUTLINE_HELD_OUT if held_out else OUTLINE_TRAIN
    return [caption(colour, shape, trigger) for colour, shape in combos]


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-1 of every file's name and bytes in ``folder`` (not its subfolders): changes with any picture or caption."""
    digest = hashlib.sha1()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# Settings added to TrainConfig after the committed LoRAs were trained, at the values that train exactly
# as before: left out of the hash, so that a new option does not make every committed LoRA stale.
ADDED_LATER = {"method": "lora", "text_encoder": False}


def lora_folder_name(r: int, steps: int, alpha: float | None = None, **overrides) -> str:
    """The folder :func:`train_or_load` keeps a LoRA in: rank, alpha, steps and a hash of every setting.

    The hash is that of every training setting (``train.TrainConfig.for_mode("small")`` with
    ``overrides``) and of the set's files (:func:`folder_fingerprint`), so a LoRA trained with fewer
    steps (a ``make test`` run), other defaults or an earlier version of the set is never taken for this one.
    """
    # Imported here, not at the top: train imports diffusers, which the prompts above do not need.
    from lorakit import train

    # The small preset: the outline set is the tiny SD's, and its settings were measured on it, on any device.
    cfg = train.TrainConfig.for_mode(
        "small", **{"r": r, "alpha": alpha, "steps": steps, "progress": False, **overrides}
    )
    settings = {
        k: v
        for k, v in asdict(cfg).items()
        if k not in ("output_dir", "progress", "resume")
        and not (k in ADDED_LATER and ADDED_LATER[k] == v)
    }
    settings["data"] = folder_fingerprint(OUTLINE_DIR)
    tag = hashlib.sha1(repr(sorted(settings.items())).encode()).hexdigest()[:8]
    return f"outline_r{r}_alpha{'r' if alpha is None else f'{alpha:g}'}_steps{steps}_{tag}"


def train_or_load(
    pipe,
    r: int,
    steps: int,
    cache_dir: str | os.PathLike,
    alpha: float | None = None,
    committed: bool = True,
    **overrides,
) -> Path:
    """The outline LoRA file of rank ``r`` trained for ``steps``: from disk if there, else trained now.

    Looks for ``<folder>/lora.safetensors`` (kohya format; :func:`lora_folder_name`) in ``cache_dir``,
    then (with ``committed``) among the committed LoRAs (``TRAINED_DIR``); trains it into ``cache_dir``
    otherwise.
    ``overrides`` go to ``train.TrainConfig.for_mode("small")``. ``pipe.unet`` is left without LoRA layers.
    """
    from lorakit import train

    name = lora_folder_name(r, steps, alpha, **overrides)
    for base in (Path(cache_dir), TRAINED_DIR) if committed else (Path(cache_dir),):
        if (base / name / "lora.safetensors").is_file():
            return base / name / "lora.safetensors"
    if next(inject.lora_layers(pipe.unet), None) is not None:
        raise RuntimeError(
            "pipe.unet already has LoRA layers: call inject.remove_lora(pipe.unet) before "
            "training another LoRA with train_or_load."
        )
    cfg = train.TrainConfig.for_mode(
        "small",
        **{
            "r": r,
            "alpha": alpha,
            "steps": steps,
            "progress": False,
            **overrides,
            "output_dir": str(Path(cache_dir) / name),
        },
    )
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    dataset = imagefolder.ImageFolderDataset(OUTLINE_DIR, resolution=resolution)
    try:
        train.train_lora(pipe, dataset, cfg)
    finally:
        inject.remove_lora(pipe.unet)
    return Path(cfg.output_dir) / "lora.safetensors"


def train_lab_loras(pipe, ranks=LAB_RANKS, steps: int = LAB_STEPS) -> list[Path]:
    """Train lesson 07's LoRAs and keep only their ``lora.safetensors`` in ``TRAINED_DIR`` (no checkpoint)."""
    import shutil
    import tempfile

    made = []
    with tempfile.TemporaryDirectory() as scratch:
        for r in ranks:
            trained = train_or_load(pipe, r, steps, scratch)
            if trained.is_relative_to(TRAINED_DIR):
                made.append(trained)  # already committed with these settings
                continue
            target = TRAINED_DIR / trained.parent.name / "lora.safetensors"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trained, target)
            made.append(target)
    return made


if __name__ == "__main__":  # python -m lorakit.styles [FOLDER] | --loras
    import argparse

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
        help=f"train lesson 07's LoRAs (ranks {LAB_RANKS}, {LAB_STEPS} steps) into {TRAINED_DIR.relative_to(config.REPO_ROOT)}",
    )
    args = parser.parse_args()
    if args.loras:
        from lorakit import models

        for path in train_lab_loras(models.load_pipeline("tiny")):
            print(path.relative_to(config.REPO_ROOT))
    else:
        print(make_outline_set(args.folder))
        if args.all:
            for style in TRIGGERS:
                if style != "outline":
                    print(make_style_set(style))
            print(make_cross_set())
