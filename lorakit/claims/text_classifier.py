"""A toy text classifier, not a diffusion model at all: what claim 5 adapts with the same LoRA.

Introduced in notebooks/09_claims_advantages.ipynb.

:class:`TextClassifier` is a mean of word embeddings, two hidden layers and a head. It learns to
name the shape a sentence speaks of ("look here a red circle": :func:`sentences`, task "names"),
then is adapted to a shifted task, the same shapes told by their corners ("the picture shows a red
thing with three corners": task "corners"). :func:`fit_classifier` trains whatever of it requires
a gradient; :func:`accuracy` reads it on held-out sentences.

Left out: the adapting itself (``claims.many_kinds.classifier_study``), real text and tokenizers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lorakit import shapes

__all__ = ["CORNERS", "FILLERS", "TextClassifier", "accuracy", "fit_classifier", "sentences"]

# the shifted task's words for the shapes
CORNERS = {"circle": "no", "square": "four", "triangle": "three"}
FILLERS = ("look", "here", "is", "the", "picture", "shows", "see", "this")


class TextClassifier(nn.Module):
    """A small text classifier (not a diffusion model): mean of word embeddings, two hidden layers,
    a head."""

    def __init__(self, vocabulary: Sequence[str], classes: int, dim: int = 32, hidden: int = 64):
        super().__init__()
        self.index = {w: i for i, w in enumerate(vocabulary)}
        self.embed = nn.EmbeddingBag(len(vocabulary), dim, mode="mean")
        self.body = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, classes)

    def encode(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The word ids of every sentence, flat, and where each sentence starts (EmbeddingBag's
        ``input`` and ``offsets``)."""
        ids = [[self.index[w] for w in s.split()] for s in sentences]
        flat = torch.tensor([i for row in ids for i in row])
        offsets = torch.tensor([0, *np.cumsum([len(row) for row in ids])[:-1].tolist()])
        return flat, offsets

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        return self.head(self.body(self.embed(*self.encode(sentences))))


def sentences(task: str, count: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """``count`` sentences naming a shape and their labels (indices into ``shapes.SHAPES``).

    ``task="names"`` says the shape's name ("look here a red circle"); ``task="corners"``, the
    shifted task, says how many corners it has ("the picture shows a red thing with three
    corners").
    """
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for _ in range(count):
        label = int(rng.integers(len(shapes.SHAPES)))
        colour = str(rng.choice(list(shapes.COLOURS)))
        shape = shapes.SHAPES[label]
        filler = " ".join(rng.choice(FILLERS, size=int(rng.integers(0, 4))))
        what = (
            f"a {colour} {shape}"
            if task == "names"
            else f"a {colour} thing with {CORNERS[shape]} corners"
        )
        out.append(f"{filler} {what}".strip())
        labels.append(label)
    return out, torch.tensor(labels)


def fit_classifier(model: nn.Module, task: str, steps: int, lr: float, seed: int) -> None:
    """Train what of ``model`` requires a gradient on ``task``: Adam, 32 new sentences a step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        text, labels = sentences(task, 32, seed * 100_003 + step)
        loss = nn.functional.cross_entropy(model(text), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, task: str, count: int = 600, seed: int = 999) -> float:
    """The share of ``count`` held-out sentences of ``task`` that ``model`` labels right."""
    text, labels = sentences(task, count, seed)
    return float((model(text).argmax(-1) == labels).float().mean())
