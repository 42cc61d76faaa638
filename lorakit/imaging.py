"""Pictures as numbers: PIL images to the tensors Stable Diffusion's VAE reads, and back.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

``to_tensor`` turns an RGB picture into a (3, H, W) float tensor in [-1, 1], ``to_image`` turns
one back; ``to_rgb`` makes any PIL picture RGB first (transparency on white, 16-bit, 32-bit and
float grey pictures scaled to 8 bits rather than clipped). The shapes world, the detectors and
the image folders of lesson 06 all go through these three.

Left out: resizing and cropping (``imagefolder``), batches of pictures, colour management.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["WHITE", "to_image", "to_rgb", "to_tensor"]

WHITE = (255, 255, 255)  # what transparent pixels become


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (3, H, W) float tensor in [-1, 1], the range SD's VAE reads."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """The inverse of :func:`to_tensor` for one (3, H, W) tensor in [-1, 1]."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey picture as 8-bit grey ("L"), scaled, not clipped.

    (PIL's own ``convert`` clips every value above 255: a 16-bit picture comes out nearly white,
    a float picture in [0, 1] black.) 16-bit pictures are scaled from 0-65535; 32-bit integer ones
    must hold 16-bit values (PNG's 16-bit grey opens so); float ones values in [0, 1]. Anything
    else is refused.
    """
    values = np.asarray(image, dtype=np.float64)  # (H, W)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0  # 65535 -> 255
    elif image.mode == "F" and np.isfinite(values).all() and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        raise ValueError(
            f"a {image.mode} picture with values from {low:g} to {high:g}, which lorakit cannot "
            "map to colours: save it as an 8-bit or 16-bit PNG"
        )
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB; transparent pixels (RGBA, LA, P with transparency) become white; 16-bit,
    32-bit and float grey pictures are scaled to 8 bits (:func:`_eight_bit`)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith(("I", "F")):
        return _eight_bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
