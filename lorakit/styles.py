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
sweeps ranks): "load if present, otherwise train".

Left out: other styles (the detectors in ``metrics.py`` know filled and outline only), a
user's own photos (any folder that ``data.ImageFolderDataset`` reads works), augmentation beyond mirroring (``TrainConfig.flip``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from lorakit import config, data, inject

TRIGGER = "sks"  # in models.RESERVED_WORDS: a word the tiny SD never saw in pretraining
TEMPLATE = "a {colour} {shape} in " + TRIGGER + " style"  # evaluate_grid(template=...) takes it as is
PLAIN_TEMPLATE = "a {colour} {shape}"  # the pretraining captions: the same prompt without the trigger

OUTLINE_DIR = config.DATA_DIR / "styles" / "outline"
OUTLINE_SIZE = 16  # pictures in the set
OUTLINE_SEED = 7  # the data.sample_spec stream the set draws sizes and positions from
OUTLINE_RESOLUTION = 64
# Combinations never shown in the set: every colour and every shape still appears in training.
OUTLINE_HELD_OUT: tuple[tuple[str, str], ...] = (
    ("red", "square"), ("green", "triangle"), ("blue", "circle"), ("yellow", "square"),
)
OUTLINE_TRAIN: tuple[tuple[str, str], ...] = tuple(
    (colour, shape) for colour in data.COLOURS for shape in data.SHAPES
    if (colour, shape) not in OUTLINE_HELD_OUT
)


def caption(colour: str, shape: str, trigger: bool = True) -> str:
    """The set's caption for a colour and shape (``trigger=False``: the plain pretraining prompt)."""
    return (TEMPLATE if trigger else PLAIN_TEMPLATE).format(colour=colour, shape=shape)


def outline_examples(count: int = OUTLINE_SIZE, seed: int = OUTLINE_SEED,
                     style: str = "outline") -> list[tuple[data.ShapeSpec, str]]:
    """The (spec, caption) pairs of the set: picture ``i`` is ``OUTLINE_TRAIN[i % 11]``.

    ``style="filled"`` gives the same shapes filled, at the same sizes and places: ground truth
    for checking that the detectors tell the two styles apart on exactly these pictures.
    """
    pairs = []
    for index in range(count):
        colour, shape = OUTLINE_TRAIN[index % len(OUTLINE_TRAIN)]
        spec = data.sample_spec(index, seed, shape=shape, colour=colour, style=style)
        pairs.append((spec, caption(colour, shape)))
    return pairs


def make_outline_set(folder: str | os.PathLike = OUTLINE_DIR) -> Path:
    """Write the outline set (``OUTLINE_SIZE`` PNGs + ``metadata.jsonl``) to ``folder``; returns it.

    Deterministic: the same pixels and captions on every machine, equal to ``data/styles/outline``.
    """
    pairs = outline_examples()
    images: list[Image.Image] = [data.render(spec, OUTLINE_RESOLUTION) for spec, _ in pairs]
    return data.write_imagefolder(folder, images, [text for _, text in pairs])


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


def train_or_load(pipe, r: int, steps: int, cache_dir: str | os.PathLike, alpha: float | None = None,
                  **overrides) -> Path:
    """The outline LoRA file of rank ``r`` trained for ``steps``: from ``cache_dir`` if there, else trained now.

    The file is ``cache_dir/outline_r{r}_alpha{alpha}_steps{steps}_{hash}/lora.safetensors`` (kohya
    format), the hash being that of every training setting, so LoRAs trained with fewer steps (a
    ``make test`` run) or other defaults are never taken for these. ``overrides`` go to
    ``train.TrainConfig.for_mode``. The hash also covers the set's files (:func:`folder_fingerprint`):
    a LoRA trained on an earlier version of the set is never reused either.
    ``pipe.unet`` is left without LoRA layers.
    """
    # Imported here, not at the top: train imports diffusers, which the prompts above do not need.
    from lorakit import train

    cfg = train.TrainConfig.for_mode(**{"r": r, "alpha": alpha, "steps": steps, "progress": False, **overrides})
    # Every setting but where it goes joins the name: a LoRA trained with other defaults is never reused.
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("output_dir", "progress", "resume")}
    settings["data"] = folder_fingerprint(OUTLINE_DIR)
    tag = hashlib.sha1(repr(sorted(settings.items())).encode()).hexdigest()[:8]
    folder = Path(cache_dir) / f"outline_r{r}_alpha{'r' if alpha is None else f'{alpha:g}'}_steps{steps}_{tag}"
    path = folder / "lora.safetensors"
    if path.is_file():
        return path
    if next(inject.lora_layers(pipe.unet), None) is not None:
        raise RuntimeError("pipe.unet already has LoRA layers: call inject.remove_lora(pipe.unet) before "
                           "training another LoRA with train_or_load.")
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    dataset = data.ImageFolderDataset(OUTLINE_DIR, resolution=resolution)
    cfg.output_dir = str(folder)
    try:
        train.train_lora(pipe, dataset, cfg)
    finally:
        inject.remove_lora(pipe.unet)
    return path


if __name__ == "__main__":  # python -m lorakit.styles [FOLDER]: regenerate the committed set
    import sys

    print(make_outline_set(sys.argv[1] if len(sys.argv) > 1 else OUTLINE_DIR))
