"""torchvision.transforms as diffusers' LoRA training script uses them, for PIL images.

Not a lesson's concept: see the package's docstring. ``InterpolationMode``, ``Compose``,
``Resize``, ``CenterCrop``, ``RandomCrop``, ``RandomHorizontalFlip``, ``Lambda``, ``ToTensor`` and
``Normalize`` behave as torchvision's do on a PIL image (the random ones draw from torch's
generator, as torchvision's do), so a run with them trains on the same tensors.

Left out: tensor inputs, padding, antialias settings and every other transform.
"""

from __future__ import annotations

import enum

import numpy as np
import torch
from PIL import Image

__all__ = [
    "CenterCrop",
    "Compose",
    "InterpolationMode",
    "Lambda",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "ToTensor",
]


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_PIL = {
    InterpolationMode.NEAREST: Image.NEAREST,
    InterpolationMode.NEAREST_EXACT: Image.NEAREST,
    InterpolationMode.BILINEAR: Image.BILINEAR,
    InterpolationMode.BICUBIC: Image.BICUBIC,
    InterpolationMode.BOX: Image.BOX,
    InterpolationMode.HAMMING: Image.HAMMING,
    InterpolationMode.LANCZOS: Image.LANCZOS,
}


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image):
        for transform in self.transforms:
            image = transform(image)
        return image


class Lambda:
    def __init__(self, function):
        self.function = function

    def __call__(self, image):
        return self.function(image)


class Resize:
    """The shorter side to ``size`` (an int), the aspect ratio kept, as torchvision's."""

    def __init__(self, size: int, interpolation=InterpolationMode.BILINEAR):
        self.size, self.interpolation = size, interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = sorted((width, height))
        new_long = int(self.size * long / short)
        size = (self.size, new_long) if width <= height else (new_long, self.size)
        return image.resize(size, _PIL[self.interpolation])


def _crop(image: Image.Image, top: int, left: int, size: int) -> Image.Image:
    return image.crop((left, top, left + size, top + size))


class CenterCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        top = int(round((height - self.size) / 2.0))
        left = int(round((width - self.size) / 2.0))
        return _crop(image, top, left, self.size)


class RandomCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if (width, height) == (self.size, self.size):
            return image
        top = int(torch.randint(0, height - self.size + 1, size=(1,)).item())
        left = int(torch.randint(0, width - self.size + 1, size=(1,)).item())
        return _crop(image, top, left, self.size)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        if torch.rand(1) < self.p:
            return image.transpose(Image.FLIP_LEFT_RIGHT)
        return image


class ToTensor:
    """A PIL image as a float tensor (C, H, W) in [0, 1]."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W) or (H, W, C)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.transpose(2, 0, 1).copy())


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return (tensor - mean) / std
