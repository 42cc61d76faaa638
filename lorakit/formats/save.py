"""Saving a LoRA as a kohya, diffusers or PEFT file, and converting one format to another.

Introduced in notebooks/05_inject_lora.ipynb.

:func:`save_lora` writes the LoRA layers of a model (a UNet, or a pipeline with LoRA in its text
encoder too); :func:`save_weights` writes a :class:`~lorakit.formats.LoRAWeights`;
:func:`convert` reads one format and writes another. The weights are checked before anything is
written; files are written atomically (a temporary file, then ``os.replace``), byte for byte the
same for the same LoRA, with lorakit's version and the format in the metadata.

Left out: the spellings themselves (``kohya``, ``diffusers``); pickle formats (never written).
"""

from __future__ import annotations

import json
from pathlib import Path

import lorakit
from lorakit import files
from lorakit.formats import architectures, diffusers, kohya, load, lora_weights, safetensors_io

__all__ = ["FORMATS", "save_weights", "save_lora", "convert"]

FORMATS = ("kohya", "diffusers", "peft")


def _check_destination(weights: lora_weights.LoRAWeights, path: Path, format: str) -> None:
    """A known format, not a pickle's name, weights that pass :func:`check_weights`, and module
    paths (not kohya names no model resolved) for the formats that spell paths."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}.")
    if path.suffix.lower() in safetensors_io.PICKLE_SUFFIXES:
        raise ValueError(
            "lorakit writes safetensors only; name the file "
            f"{path.with_suffix('.safetensors').name}."
        )
    lora_weights.check_weights(weights)
    unresolved = [m for m in weights.modules if m.startswith(kohya.KOHYA_PREFIXES)]
    if unresolved and format != "kohya":
        if any(m.endswith(kohya.FUSED) for m in unresolved):
            raise ValueError(
                f"kohya's fused q, k and v (e.g. {unresolved[0]}) are one module where diffusers' "
                "transformer has three (to_q, to_k, to_v): keep this LoRA as kohya (diffusers' "
                "load_lora_weights reads kohya's Flux files and splits them itself)."
            )
        raise ValueError(
            f"{len(unresolved)} kohya names (e.g. {unresolved[0]}) are no module path of a "
            "model lorakit knows: load the file with load_lora(path, model=your_pipeline) before "
            "writing another format."
        )
    other_parts = any(m.startswith(lora_weights.TEXT_PREFIXES[1:]) for m in weights.modules)
    if format == "peft" and (
        other_parts or architectures.of_weights(weights) in architectures.TRANSFORMERS
    ):
        raise ValueError(
            "a PEFT folder holds SD's UNet and one text encoder; write this LoRA (SDXL's second "
            "text encoder, or a transformer's) as kohya or diffusers."
        )


def _save_kohya(weights, path: Path, own: dict[str, str]) -> Path:
    if path.suffix != ".safetensors":
        raise ValueError(f"a kohya LoRA is one .safetensors file, got {path}.")
    tensors, metadata = kohya.kohya_tensors(weights, path.stem)
    safetensors_io.write_safetensors(tensors, path, metadata | own)
    return path


def _save_diffusers(weights, path: Path, own: dict[str, str]) -> Path:
    path = path if path.suffix == ".safetensors" else path / diffusers.DIFFUSERS_FILE
    tensors, metadata = diffusers.diffusers_tensors(weights)
    safetensors_io.write_safetensors(tensors, path, metadata | own)
    return path


def _save_peft(weights, path: Path, own: dict[str, str]) -> Path:
    if path.suffix == ".safetensors":
        raise ValueError(
            f"a PEFT adapter is a folder ({diffusers.PEFT_FILE} + {diffusers.PEFT_CONFIG}); give "
            f"a folder, not {path}."
        )
    text = weights.text_modules
    unet = [m for m in weights.modules if m not in text]
    if not unet:
        raise ValueError(
            "a PEFT folder holds the UNet's adapter (and the text encoder's in "
            f"{diffusers.PEFT_TEXT_FOLDER}/); this LoRA has text-encoder modules only: write it "
            "as kohya or diffusers."
        )
    adapters = (
        (path, unet, ""),
        (path / diffusers.PEFT_TEXT_FOLDER, text, lora_weights.TEXT_PREFIX),
    )
    for folder, paths, strip in adapters:
        if not paths:
            continue
        tensors, config = diffusers.peft_adapter(weights, paths, strip)
        safetensors_io.write_safetensors(
            tensors, folder / diffusers.PEFT_FILE, {"format": "pt"} | own
        )
        files.write_atomically(
            folder / diffusers.PEFT_CONFIG, json.dumps(config, indent=2, sort_keys=True)
        )
    return path


def save_weights(
    weights: lora_weights.LoRAWeights,
    path: str | Path,
    format: str = "kohya",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``weights`` as ``format``; returns the file written (for PEFT, the folder)."""
    path = Path(path)
    _check_destination(weights, path, format)
    own = {"lorakit_version": lorakit.__version__, "lorakit_format": format, **(metadata or {})}
    save = {"kohya": _save_kohya, "diffusers": _save_diffusers, "peft": _save_peft}[format]
    return save(weights, path, own)


def save_lora(
    model, path: str | Path, format: str = "kohya", metadata: dict[str, str] | None = None
) -> Path:
    """Save the LoRA layers of ``model`` (a UNet, or a pipeline with LoRA in its text encoder
    too) as a kohya, diffusers or PEFT file."""
    return save_weights(lora_weights.from_model(model), path, format, metadata)


def convert(src: str | Path, dst: str | Path, to: str = "kohya", model=None) -> Path:
    """Rewrite the LoRA at ``src`` in format ``to`` at ``dst`` (``model``: see
    :func:`~lorakit.formats.load_lora`)."""
    weights = load.load_lora(src, model)
    return save_weights(weights, dst, to, {"lorakit_converted_from": weights.format})
