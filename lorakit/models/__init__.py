"""Stable Diffusion pipelines: loading them, and building SD-shaped models from configs.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

* ``models.loading``: ``load_pipeline`` (``"tiny"``, a local directory or a hub id), ``quiet``;
* ``models.build``: SD 1.5's real configs, ``build_sd15`` on the meta device, ``build_tiny_sd``
  (SD 1.5's layout with small widths), ``count_parameters``;
* ``models.tokenizer``: the tiny SD's one-token-a-word tokenizer and its words.

Left out: SDXL and SD 2.x layouts, safety checkers (the shapes world needs none).
"""

from lorakit.models.build import (
    SD15_SCHEDULER_CONFIG,
    SD15_TEXT_CONFIG,
    SD15_UNET_CONFIG,
    SD15_VAE_CONFIG,
    TINY_TEXT_WIDTH,
    TINY_UNET_CONFIG,
    TINY_VAE_CONFIG,
    UNET_COMMON,
    UNet2DConditionModel,
    build_sd15,
    build_tiny_sd,
    count_parameters,
    tiny_scheduler,
)
from lorakit.models.loading import (
    DTYPE_KWARG,
    StableDiffusionPipeline,
    load_pipeline,
    make_pipeline,
    quiet,
    resolve,
)
from lorakit.models.tokenizer import (
    CAPTION_WORDS,
    EXTRA_WORDS,
    RESERVED_WORDS,
    SPECIAL_TOKENS,
    build_tokenizer,
    learn_merges,
)

__all__ = [
    "CAPTION_WORDS",
    "DTYPE_KWARG",
    "EXTRA_WORDS",
    "RESERVED_WORDS",
    "SD15_SCHEDULER_CONFIG",
    "SD15_TEXT_CONFIG",
    "SD15_UNET_CONFIG",
    "UNET_COMMON",
    "SD15_VAE_CONFIG",
    "SPECIAL_TOKENS",
    "TINY_TEXT_WIDTH",
    "TINY_UNET_CONFIG",
    "TINY_VAE_CONFIG",
    "StableDiffusionPipeline",
    "UNet2DConditionModel",
    "build_sd15",
    "build_tiny_sd",
    "build_tokenizer",
    "count_parameters",
    "learn_merges",
    "load_pipeline",
    "make_pipeline",
    "quiet",
    "resolve",
    "tiny_scheduler",
]
