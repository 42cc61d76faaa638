"""The shapes world, and image-caption folders in the Hugging Face ``imagefolder`` layout.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

The shapes world is a procedural, deterministic set of pictures: one shape (circle, square,
triangle) of one colour on a white background, with a size and a position that vary, and a
caption such as "a red circle" or "a small blue square". The same ``(seed, index)`` gives the
same picture on any machine, so nothing big is committed: the tiny SD is pretrained on pictures
drawn on the fly, and a teacher can regenerate every figure.

Left out: rotation, textures, several shapes per picture (the detectors in ``metrics.py`` read
one shape a picture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, tuple[float, float]] = {"small": (0.30, 0.42), "large": (0.55, 0.75)}  # side / image side
STYLES: tuple[str, ...] = ("filled", "outline")
BACKGROUND = (255, 255, 255)
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges without a renderer


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that determines one picture. Lengths are fractions of the image side."""

    shape: str
    colour: str
    size_word: str
    size: float  # side of the bounding box
    cx: float  # centre
    cy: float
    style: str = "filled"
    rgb: tuple[int, int, int] | None = None  # None: the colour's nominal RGB

    def caption(self, with_size: bool = False) -> str:
        size = f"{self.size_word} " if with_size else ""
        return f"a {size}{self.colour} {self.shape}"


def sample_spec(index: int, seed: int = 0, shape: str | None = None, colour: str | None = None,
                style: str = "filled") -> ShapeSpec:
    """The spec of picture ``index`` of the stream ``seed``; ``shape``/``colour`` pin those choices."""
    rng = np.random.default_rng([seed, index])
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: the shapes world has {', '.join(SHAPES)}.")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}: the shapes world has {', '.join(COLOURS)}.")
    size_word = list(SIZES)[rng.integers(len(SIZES))]
    lo, hi = SIZES[size_word]
    size = float(rng.uniform(lo, hi))
    margin = size / 2 + 0.04
    cx, cy = (float(v) for v in rng.uniform(margin, 1 - margin, size=2))
    jitter = rng.integers(-12, 13, size=3)
    rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour], jitter, strict=True))
    return ShapeSpec(shape, colour, size_word, size, cx, cy, style, rgb)


def render(spec: ShapeSpec, resolution: int = 64) -> Image.Image:
    """Draw ``spec`` as an RGB picture of ``resolution`` x ``resolution`` pixels."""
    big = resolution * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    rgb = spec.rgb or COLOURS[spec.colour]
    s, cx, cy = spec.size * big, spec.cx * big, spec.cy * big
    fill = rgb if spec.style == "filled" else None
    width = 0 if spec.style == "filled" else max(1, round(0.06 * big))
    if spec.shape == "circle":
        draw.ellipse([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=fill, outline=rgb, width=width)
    elif spec.shape == "square":
        draw.rectangle([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=fill, outline=rgb, width=width)
    elif spec.shape == "triangle":
        h = s * math.sqrt(3) / 2  # equilateral: fills half of its s x h bounding box
        points = [(cx, cy - h / 2), (cx + s / 2, cy + h / 2), (cx - s / 2, cy + h / 2)]
        if fill is not None:
            draw.polygon(points, fill=fill)
        else:
            draw.line(points + points[:2], fill=rgb, width=width, joint="curve")
    else:
        raise ValueError(f"unknown shape {spec.shape!r}: the shapes world has {', '.join(SHAPES)}.")
    return image.resize((resolution, resolution), Image.Resampling.BOX)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (3, H, W) float tensor in [-1, 1], the range Stable Diffusion's VAE reads."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """The inverse of :func:`to_tensor` for one (3, H, W) tensor in [-1, 1]."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


class ShapesDataset(torch.utils.data.Dataset):
    """``length`` pictures of the stream ``seed``: ``(image in [-1, 1], caption)`` pairs.

    ``empty_caption_prob`` of the captions are "" (so a model trained on it learns the
    unconditional prediction that classifier-free guidance needs); ``size_word_prob`` of the
    others name the size ("a small red circle").
    """

    def __init__(self, length: int, seed: int = 0, resolution: int = 64,
                 empty_caption_prob: float = 0.0, size_word_prob: float = 0.5, style: str = "filled"):
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}.")
        self.length, self.seed, self.resolution = length, seed, resolution
        self.empty_caption_prob, self.size_word_prob, self.style = empty_caption_prob, size_word_prob, style

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
        return to_tensor(render(self.spec(index), self.resolution)), self.caption(index)
