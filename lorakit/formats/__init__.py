"""LoRA files: kohya (A1111/ComfyUI), diffusers and PEFT, read, checked, written and applied.

Introduced in notebooks/05_inject_lora.ipynb; the files people share, in
notebooks/11_lora_algebra.ipynb; SDXL's, SD3's and Flux's in notebooks/12_beyond_sd15.ipynb.

One file a concept, as PEFT's ``tuners/lora`` and diffusers' ``loaders``. Lesson 05's:
``lora_weights`` (the in-memory :class:`LoRAWeights` and its checks), ``safetensors_io``, ``kohya``
and ``diffusers`` (the key spellings), ``architectures`` (SD, SDXL, SD3, Flux told from a file's
names), ``ldm_layout`` and ``default_names`` (where kohya names point), ``lycoris`` (LoHa, LoKr
read exactly), ``load`` with ``refused`` (DoRA, Tucker cores, ...: named, nothing applied),
``save`` and ``apply``; lesson 08's ``info`` (``lorakit info``). Use the package's names.

Left out: the wrapping itself (``lorakit.inject``), the algebra on LoRA files (``svd_tools``),
DoRA, LyCORIS's Tucker cores and other algorithms, kohya's fused Flux names in diffusers' form.
"""

from lorakit.formats.apply import apply_lora, resolve_modules
from lorakit.formats.diffusers import (
    DIFFUSERS_FILE,
    DIFFUSERS_PREFIX,
    MAX_CONFIG_BYTES,
    METADATA_KEY,
    PEFT_CONFIG,
    PEFT_FILE,
    PEFT_PREFIX,
    PEFT_TEXT_FOLDER,
)
from lorakit.formats.info import BLOCK_WIDTHS, CONTEXT_WIDTHS, block_of, describe, guess_base
from lorakit.formats.kohya import (
    KOHYA_PREFIX,
    KOHYA_PREFIXES,
    KOHYA_TEXT_PREFIXES,
    kohya_name,
    kohya_names_of,
)
from lorakit.formats.load import load_lora
from lorakit.formats.lora_weights import (
    TEXT_MODEL,
    TEXT_PREFIX,
    LoRAFileError,
    LoRAWeights,
    UnsupportedKind,
    build_weights,
    canonical,
    check_weights,
    from_model,
)
from lorakit.formats.lycoris import is_lycoris
from lorakit.formats.refused import ARCHITECTURES, VARIANTS
from lorakit.formats.safetensors_io import (
    FLOAT_DTYPES,
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    PICKLE_SUFFIXES,
    read_header,
    safetensors_bytes,
)
from lorakit.formats.save import FORMATS, convert, save_lora, save_weights

__all__ = [
    # the in-memory LoRA (lora_weights)
    "build_weights",
    "canonical",
    "check_weights",
    "from_model",
    "LoRAFileError",
    "LoRAWeights",
    "TEXT_MODEL",
    "TEXT_PREFIX",
    "UnsupportedKind",
    # safetensors files (safetensors_io)
    "FLOAT_DTYPES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "PICKLE_SUFFIXES",
    "read_header",
    "safetensors_bytes",
    # the key spellings (kohya, diffusers)
    "DIFFUSERS_FILE",
    "DIFFUSERS_PREFIX",
    "kohya_name",
    "kohya_names_of",
    "KOHYA_PREFIX",
    "KOHYA_PREFIXES",
    "KOHYA_TEXT_PREFIXES",
    "MAX_CONFIG_BYTES",
    "METADATA_KEY",
    "PEFT_CONFIG",
    "PEFT_FILE",
    "PEFT_PREFIX",
    "PEFT_TEXT_FOLDER",
    "is_lycoris",
    # load, save, apply
    "apply_lora",
    "convert",
    "FORMATS",
    "load_lora",
    "resolve_modules",
    "save_lora",
    "save_weights",
    # the kinds refused (refused), lorakit info (describe)
    "ARCHITECTURES",
    "block_of",
    "BLOCK_WIDTHS",
    "CONTEXT_WIDTHS",
    "describe",
    "guess_base",
    "VARIANTS",
]
