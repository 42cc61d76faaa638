"""The pictures and captions the tiny SD is pretrained on: a seeded stream of the shapes world.

Not a lesson's concept: a maintainer's tool (``python -m lorakit.maintainer.pretrain``).

Picture ``i`` of the stream ``seed`` is one shape (``shapes.sample_spec``) or, with
``pair_fraction``, sometimes two (``shapes.sample_pair``, "a red circle and a blue square"):
:func:`render_all` draws them all in a process pool (:func:`in_chunks`), and :func:`caption_table`
gives each picture a short and a long caption ("a red circle", "a large red circle"), with the
empty caption as row 0 (for classifier-free guidance).

Left out: outline pictures (the VAE decoder's tuning draws its own, ``vae_stage``) and where each
word of a caption sits (``grounding``).
"""

from __future__ import annotations

import os
from multiprocessing import Pool

import numpy as np
import torch

from lorakit import shapes

__all__ = ["caption_table", "in_chunks", "is_pair", "render_all", "specs_of"]


def is_pair(index: int, seed: int, pair_fraction: float) -> bool:
    """Whether picture ``index`` of the pretraining stream holds two shapes
    (``shapes.sample_pair``)."""
    return pair_fraction > 0 and np.random.default_rng([seed, index, 3]).random() < pair_fraction


def specs_of(index: int, seed: int, pair_fraction: float = 0.0) -> list[shapes.ShapeSpec]:
    """The shapes of picture ``index``: one (``shapes.sample_spec``) or two
    (``shapes.sample_pair``)."""
    if is_pair(index, seed, pair_fraction):
        return list(shapes.sample_pair(index, seed))
    return [shapes.sample_spec(index, seed)]


def render_all(
    num_images: int, seed: int, resolution: int = 64, pair_fraction: float = 0.0
) -> torch.Tensor:
    """Pictures 0..num_images-1 of the stream ``seed`` as uint8 (N, 3, H, W), in parallel."""
    return (
        in_chunks(_render_chunk, num_images, seed, resolution, pair_fraction)
        .permute(0, 3, 1, 2)
        .contiguous()
    )


def in_chunks(fn, num_images: int, *args) -> torch.Tensor:
    """``fn((start, stop, *args))`` over chunks of 1,000 pictures in a process pool,
    concatenated."""
    chunks = [(start, min(start + 1000, num_images), *args) for start in range(0, num_images, 1000)]
    with Pool(max(1, min(os.cpu_count() or 1, 16))) as pool:
        return torch.from_numpy(np.concatenate(pool.map(fn, chunks)))


def _render_chunk(args: tuple[int, int, int, int, float]) -> np.ndarray:
    start, stop, seed, resolution, pair_fraction = args
    return np.stack(
        [
            np.asarray(shapes.render_scene(specs_of(i, seed, pair_fraction), resolution))
            for i in range(start, stop)
        ]
    )


def caption_table(
    num_images: int, seed: int, tokenizer, pair_fraction: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of every distinct caption, and for each picture the rows of its short and long
    caption.

    Row 0 is the empty caption. A two-shape picture has one caption ("a red circle and a blue
    square"), in both columns. Returns ``ids`` (C, 77) and ``rows`` (N, 2).
    """
    captions, rows, where = [""], [], {"": 0}
    for i in range(num_images):
        specs = specs_of(i, seed, pair_fraction)
        if len(specs) == 2:
            texts = (shapes.pair_caption(specs),) * 2
        else:
            texts = (specs[0].caption(with_size=False), specs[0].caption(with_size=True))
        pair = []
        for text in texts:
            if text not in where:
                where[text] = len(captions)
                captions.append(text)
            pair.append(where[text])
        rows.append(pair)
    ids = tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return ids, torch.tensor(rows)
