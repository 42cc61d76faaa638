"""Which model a LoRA file was made for (SD 1.x/2.x, SDXL, SD3, Flux), and which model it meets.

Introduced in notebooks/05_inject_lora.ipynb, where every load tells which model a file is for;
the architectures themselves are notebooks/12_beyond_sd15.ipynb's.

A file says its architecture in its key names and shapes, before any tensor is read
(:func:`of_header`): SDXL has a second text encoder (``lora_te2_``, ``text_encoder_2.``), a
cross-attention that reads a 2048-wide text and several transformer layers a block; SD3 and Flux
have no UNet but a transformer (``transformer.``; kohya's ``lora_unet_joint_blocks_`` for SD3,
``lora_unet_double_blocks_``/``single_blocks_`` for Flux, whose width is 3072). A model says its
own in its classes and config (:func:`of_model`); :func:`check_model` refuses a LoRA for another
architecture than the model's, by name, before anything changes.

Left out: the names inside each layout (``kohya``, ``ldm_layout``), reading the tensors (``load``).
"""

from __future__ import annotations

import re

from torch import nn

from lorakit import inject
from lorakit.formats import lora_weights
from lorakit.language import say

__all__ = [
    "SD",
    "SDXL",
    "SD3",
    "FLUX",
    "DIT",
    "TRANSFORMERS",
    "FLUX_WIDTH",
    "TEXT_PREFIXES",
    "of_keys",
    "of_header",
    "of_weights",
    "of_model",
    "main_part",
    "check_model",
]

SD, SDXL, SD3, FLUX = "SD 1.x/2.x", "SDXL", "SD3", "Flux"
DIT = "SD3 or Flux"  # a transformer whose width does not tell which
TRANSFORMERS = (SD3, FLUX, DIT)
FLUX_WIDTH = 3072  # Flux's 24 heads x 128; SD3's is 64 a head (1536 medium, 2432 large)
TEXT_PREFIXES = ("text_encoder.", "text_encoder_2.", "text_encoder_3.")
FLUX_NAMES = (
    "lora_unet_double_blocks_",
    "lora_unet_single_blocks_",
    "single_transformer_blocks.",
    "transformer.single_transformer_blocks.",
    "lora_transformer_single_transformer_blocks_",
)
DIT_NAMES = ("transformer.", "lora_transformer_", "transformer_blocks.", "lora_unet_joint_blocks_")
SDXL_NAMES = ("lora_te2_", "text_encoder_2.", "lora_unet_label_emb", "unet.add_embedding.")
# SDXL's second and third down blocks hold 2 and 10 transformer layers; SD 1.x/2.x's one
SEVERAL_LAYERS = re.compile(
    r"(attentions[._]\d+[._]transformer_blocks[._]|_1_transformer_blocks_)[1-9]"
)


def _width(keys_shapes: dict[str, tuple], words: tuple[str, ...]) -> int | None:
    """The input width of the first LoRA down half (A) on a module whose name has one of
    ``words``."""
    for key, shape in keys_shapes.items():
        down = key.endswith(("lora_down.weight", "lora_A.weight")) and len(shape) >= 2
        if down and any(w in key for w in words):
            return int(shape[1])
    return None


def of_keys(keys_shapes: dict[str, tuple]) -> str:
    """The architecture that a file's keys (and the shapes of its halves) show: ``SD``, ``SDXL``,
    ``SD3``, ``FLUX``, or ``DIT`` for a transformer too small to tell."""
    keys = list(keys_shapes)
    if any(k.startswith(FLUX_NAMES) for k in keys):
        return FLUX
    if any(k.startswith("lora_unet_joint_blocks_") for k in keys):
        return SD3
    if any(k.startswith(DIT_NAMES) for k in keys):
        width = _width(keys_shapes, ("to_q", "to_k", "qkv", "add_q_proj"))
        return FLUX if width == FLUX_WIDTH else DIT if width is None or width < 1536 else SD3
    cross = _width(keys_shapes, ("attn2.to_k", "attn2_to_k", "attn2.to_v", "attn2_to_v"))
    if (
        any(k.startswith(SDXL_NAMES) for k in keys)
        or cross == 2048
        or any(SEVERAL_LAYERS.search(k) for k in keys)
    ):
        return SDXL
    return SD


def of_header(header: dict[str, dict]) -> str:
    """:func:`of_keys` of a safetensors header (``{key: {"shape": ...}}``)."""
    return of_keys({k: tuple(v.get("shape", ())) for k, v in header.items()})


def of_weights(weights: lora_weights.LoRAWeights) -> str:
    """:func:`of_keys` of a LoRA in memory: its module paths (or kohya names) and A's shapes."""
    shapes = {f"{m}.lora_A.weight": tuple(weights.A[m].shape) for m in weights.modules}
    return of_keys(shapes)


def main_part(model) -> nn.Module:
    """The model a LoRA's non-text modules go into: a pipeline's UNet or transformer, or the
    model itself (``inject.components``' first part)."""
    return inject.components(model)[0][1]


def of_model(model) -> str | None:
    """The architecture of a model or pipeline (None: a model that is none of them)."""
    main = main_part(model)
    name = type(main).__name__
    if name == "FluxTransformer2DModel":
        return FLUX
    if name == "SD3Transformer2DModel":
        return SD3
    if name == "UNet2DConditionModel":
        return SDXL if main.config.get("addition_embed_type") == "text_time" else SD
    return None


def check_model(arch: str, model, source: str) -> None:
    """Refuse a LoRA for architecture ``arch`` on a model of another, by name (``source``: the
    file, for the message)."""
    mine = of_model(model)
    fits = mine is None or mine == arch or (arch == DIT and mine in (SD3, FLUX))
    if not fits:
        raise lora_weights.UnsupportedKind(
            say(
                "{source} is a LoRA for {arch}, and this {model} is {mine}: nothing was loaded; "
                "apply it to a model of that architecture (lorakit info names a file's).",
                source=source,
                arch=arch,
                model=type(main_part(model)).__name__,
                mine=mine,
            )
        )
