"""A stream of shapes-world pictures as a PyTorch dataset: ``(image in [-1, 1], caption)`` pairs.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

``ShapesDataset(length, seed)`` draws picture ``index`` of the stream ``seed`` when asked, so
nothing is stored and every machine sees the same pictures: the tiny SD was pretrained on such a
stream. A share of the captions can be empty (what classifier-free guidance learns from) and a
share can name the size.

Left out: image folders on disk (``lorakit.imagefolder``), augmentation.
"""

from __future__ import annotations

import numpy as np
import torch

from lorakit import imaging
from lorakit.shapes.drawing import render
from lorakit.shapes.world import ShapeSpec, sample_spec

__all__ = ["ShapesDataset"]


class ShapesDataset(torch.utils.data.Dataset):
    """``length`` pictures of the stream ``seed``: ``(image in [-1, 1], caption)`` pairs.

    ``empty_caption_prob`` of the captions are "" (so a model trained on it learns the
    unconditional prediction that classifier-free guidance needs); ``size_word_prob`` of the
    others name the size ("a small red circle").
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        resolution: int = 64,
        empty_caption_prob: float = 0.0,
        size_word_prob: float = 0.5,
        style: str = "filled",
    ):
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}.")
        self.length, self.seed, self.resolution = length, seed, resolution
        self.empty_caption_prob, self.size_word_prob, self.style = (
            empty_caption_prob,
            size_word_prob,
            style,
        )

    def __len__(self) -> int:
        return self.length

    def spec(self, index: int) -> ShapeSpec:
        return sample_spec(index, self.seed, style=self.style)

    def caption(self, index: int) -> str:
        rng = np.random.default_rng([self.seed, index, 1])
        if rng.random() < self.empty_caption_prob:
            return ""
        return self.spec(index).caption(with_size=bool(rng.random() < self.size_word_prob))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} is outside 0..{self.length - 1}.")
        return imaging.to_tensor(render(self.spec(index), self.resolution)), self.caption(index)
