"""Teaching each word where its shape is: the token loss of TokenCompose (Wang et al., 2024).

Not a lesson's concept: a maintainer's tool (``python -m lorakit.maintainer.pretrain``).

An experiment on whether word-by-word attention maps (Lesson 04) can be taught; docs/tiny-sd.md
tells the run that uses it (``--token-loss-weight``), and ``python -m benchmarks.attention_maps``
measures the maps. :func:`render_masks` gives where each shape of a picture is, per latent cell;
:func:`grounding_table` gives where its colour and shape words sit in the caption; and
:func:`token_loss` asks that each such word's attention fall on its shape.

Left out: a loss on the self-attention maps, and words other than colours and shapes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lorakit import metrics, shapes
from lorakit.maintainer import shape_stream

__all__ = ["grounding_table", "render_masks", "token_loss"]


def render_masks(
    num_images: int, seed: int, pair_fraction: float = 0.0, latent: int = 16, resolution: int = 64
) -> torch.Tensor:
    """Where each shape of each picture is: (N, 2, latent, latent), the share of its pixels in
    each latent cell.

    Row 1 is all zeros for a one-shape picture. The token loss uses these as ground truth.
    """
    return shape_stream.in_chunks(_mask_chunk, num_images, seed, pair_fraction, latent, resolution)


def _mask_chunk(args: tuple[int, int, int, float, int, int]) -> np.ndarray:
    start, stop, seed, pair_fraction, latent, resolution = args
    out = np.zeros((stop - start, 2, latent, latent), dtype=np.float32)
    cell = resolution // latent
    for row, i in enumerate(range(start, stop)):
        for k, spec in enumerate(shape_stream.specs_of(i, seed, pair_fraction)):
            ink = metrics.ink_mask(shapes.render(spec, resolution))  # (resolution, resolution)
            out[row, k] = ink.reshape(latent, cell, latent, cell).mean((1, 3))
    return out


def grounding_table(num_images: int, seed: int, pair_fraction: float = 0.0) -> torch.Tensor:
    """Token positions of each shape's colour and shape words: (N, 2 captions, 2 shapes, 2 words),
    -1: none.

    Columns follow ``caption_table``: 0 is "a red circle" (colour at 2, shape at 3; position 0
    is the start token), 1 is "a large red circle" (3, 4); a two-shape caption, "a red circle and
    a blue square", has (2, 3) and (6, 7) in both. The tiny SD's tokenizer gives one token a word.
    """
    out = torch.full((num_images, 2, 2, 2), -1, dtype=torch.long)
    for i in range(num_images):
        if shape_stream.is_pair(i, seed, pair_fraction):
            out[i, :, 0], out[i, :, 1] = torch.tensor([2, 3]), torch.tensor([6, 7])
        else:
            out[i, 0, 0], out[i, 1, 0] = torch.tensor([2, 3]), torch.tensor([3, 4])
    return out


def token_loss(
    records: dict[str, list[torch.Tensor]],
    masks: torch.Tensor,
    positions: torch.Tensor,
    min_side: int = 4,
) -> torch.Tensor:
    """TokenCompose's token loss (Wang et al., 2024) on the last maps of every ``attn2`` of at
    least ``min_side``.

    For each word that names a shape, the share of its attention (over the picture) that falls on
    that shape should be 1: the loss is the mean of (1 - share)^2 over words and layers.
    ``records``: maps (B, N, T) in the graph (``attention.capture_cross_attention(keep_graph=
    True)``); ``masks`` (B, 2, h, w) from :func:`render_masks`; ``positions`` (B, 2, 2), -1 where
    there is none.
    """
    terms = []
    for maps in records.values():
        probs = maps[-1]  # (B, N, T)
        side = math.isqrt(probs.shape[1])
        if side < min_side:
            continue
        cells = F.adaptive_avg_pool2d(masks, side).flatten(2).to(probs.dtype)  # (B, 2, N)
        for shape in range(2):
            for word in range(2):
                pos = positions[:, shape, word]  # (B,)
                rows = (pos >= 0).nonzero()[:, 0]
                if len(rows) == 0:
                    continue
                a = probs[rows, :, pos[rows]]  # (k, N): attention of every cell to that word
                share = (a * cells[rows, shape]).sum(-1) / a.sum(-1).clamp_min(1e-8)
                terms.append((1 - share) ** 2)
    if not terms:
        return masks.new_zeros(())
    return torch.cat(terms).mean()
