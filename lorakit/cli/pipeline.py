"""What the ``lorakit`` commands do with a model: load it quietly, draw pictures, save a grid.

Introduced in notebooks/06_train_style_lora.ipynb, with ``lorakit train``.

``load_model`` is ``models.load_pipeline`` without the loading bars that clutter a terminal;
``generate_pictures`` draws with the model's own settings unless given steps; ``save_grid``
writes labelled pictures as one image, atomically, the tiny SD's 64x64 pictures shown 3x so that
their labels fit.

Left out: the commands themselves (``cli.train``, ``cli.sample``, ``cli.algebra``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["generate_pictures", "load_model", "save_grid"]


def load_model(model: str, device=None):
    """The pipeline ``model`` names ('tiny', a hub id or a folder), without progress bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from lorakit import models

    diffusers_logging.disable_progress_bar()  # "Loading ..." bars clutter a terminal
    transformers_logging.disable_progress_bar()
    return models.load_pipeline(model, device=device)


def generate_pictures(pipe, prompts: list[str], seeds: list[int], steps: int | None):
    """One picture per (prompt, seed), in ``steps`` denoising steps or the model's own."""
    from lorakit import sample

    return sample.generate(pipe, prompts, seeds, num_inference_steps=steps)


def save_grid(path: Path, images, cols: int, labels: list[str], image_format: str = "PNG"):
    """``images`` as one labelled grid ``cols`` wide, written to ``path`` whole or not at all."""
    from lorakit import files, sample

    scale = max(1, 192 // images[0].width)  # the tiny SD's 64x64 pictures shown 3x: labels fit
    grid = sample.image_grid(images, cols=cols, labels=labels, scale=scale)
    files.write_atomically(path, lambda f: grid.save(f, format=image_format))
