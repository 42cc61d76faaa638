"""Safetensors files, read safely and written byte for byte the same.

Introduced in notebooks/05_inject_lora.ipynb.

:func:`read_header` reads a file's tensor entries and metadata from its header alone: pickles
(``.ckpt``, ``.pt``, ``.bin``, or any file that is one: unpickling runs code), broken headers and
oversized files are refused before any tensor is read. :func:`read_tensors` reads the tensors
that are asked for, each checked (floating point, finite). :func:`safetensors_bytes` writes a file
that is the same for the same tensors, and :func:`write_safetensors` writes it atomically.

Left out: what the keys mean (``kohya``, ``diffusers``) and which files lorakit loads (``load``).
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from lorakit import files
from lorakit.formats import lora_weights

__all__ = [
    "PICKLE_SUFFIXES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "FLOAT_DTYPES",
    "read_header",
    "read_tensors",
    "group_keys",
    "safetensors_bytes",
    "write_safetensors",
]

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_HEADER_BYTES = 32 * 2**20  # SD 1.5's largest LoRAs have headers of a few hundred KB
MAX_TENSORS = 20_000  # a full SDXL LoRA (UNet, both text encoders, convolutions) has under 10,000
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names of the dtypes lorakit reads


def _looks_like_pickle(path: Path, head: bytes, size: int) -> bool:
    """A torch.save zip, or a raw pickle: the PROTO opcode (protocol 2-5), an opcode after it, the
    STOP opcode ``.`` last. (A safetensors header of 640 bytes also begins 0x80 0x02, but zeros
    follow it.)"""
    if head.startswith(b"PK\x03\x04"):
        return True
    if (
        head[:1] != b"\x80"
        or head[1:2] not in (b"\x02", b"\x03", b"\x04", b"\x05")
        or head[2:3] in (b"", b"\x00")
    ):
        return False
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"."


def _header_length(path: Path) -> int:
    """The header's length in bytes, once the file is known to be a safetensors file, not too
    big."""
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}.")
    refuse = (
        f"{path} is a pickle-based checkpoint, which can run arbitrary code when loaded; lorakit "
        "reads .safetensors only. Ask for a .safetensors version of this LoRA, or convert it "
        "yourself in a sandbox with code you trust."
    )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise lora_weights.LoRAFileError(refuse)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if not (len(head) == 9 and header_len <= size - 8 and head[8:9] == b"{"):
        if _looks_like_pickle(path, head, size):
            raise lora_weights.LoRAFileError(refuse)  # whatever its name
        why = (
            f"{size} bytes is too short for a header"
            if header_len < 0
            else f"its header claims {header_len} bytes but the file has {size} (truncated?)"
            if header_len > size - 8
            else "its header is not JSON"
        )
        raise lora_weights.LoRAFileError(f"{path} is not a valid safetensors file: {why}.")
    if header_len > MAX_HEADER_BYTES:
        raise lora_weights.LoRAFileError(
            f"{path} is not a LoRA lorakit reads: its header is {header_len / 2**20:.0f} MB, "
            f"more than the {MAX_HEADER_BYTES // 2**20} MB of any LoRA's (a full model, or a "
            "file made to exhaust memory?)."
        )
    return header_len


def _parse_header(path: Path, header_len: int) -> dict:
    """The header's JSON object, with its ``__metadata__``."""
    with open(path, "rb") as f:
        f.seek(8)
        text = f.read(header_len)
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise lora_weights.LoRAFileError(
            f"{path} is not a valid safetensors file: its header is not JSON ({error})."
        ) from None
    if not isinstance(header, dict):
        raise lora_weights.LoRAFileError(
            f"{path} is not a valid safetensors file: its header is a JSON "
            f"{type(header).__name__}, not an object."
        )
    return header


def _check_entries(path: Path, header: dict, metadata) -> None:
    """The metadata an object of strings; a LoRA's number of tensors, each with a dtype and
    shape."""
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise lora_weights.LoRAFileError(
            f"{path} is not a valid safetensors file: its __metadata__ is not an object of strings."
        )
    if len(header) > MAX_TENSORS:
        raise lora_weights.LoRAFileError(
            f"{path} is not a LoRA lorakit reads: it holds {len(header):,} tensors, more than the "
            f"{MAX_TENSORS:,} of any LoRA's."
        )
    for key, entry in header.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
        ):
            raise lora_weights.LoRAFileError(
                f"{path} is not a valid safetensors file: the entry of {key!r} has no dtype and "
                "shape."
            )


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """The tensor entries (name -> dtype, shape, offsets) and the metadata of a safetensors file,
    read from its header alone: pickles, broken headers and oversized files are refused before any
    tensor is read."""
    path = Path(path)
    header = _parse_header(path, _header_length(path))
    metadata = header.pop("__metadata__", None) or {}
    _check_entries(path, header, metadata)
    return header, metadata


def read_tensors(path: Path, header: dict[str, dict], keys: list[str]) -> dict[str, torch.Tensor]:
    """The tensors ``keys`` of the file, each checked: a floating-point dtype, every value
    finite."""
    wrong = [f"{k} ({header[k]['dtype']})" for k in keys if header[k]["dtype"] not in FLOAT_DTYPES]
    if wrong:
        raise lora_weights.LoRAFileError(
            f"{path}: LoRA weights are floating point, but {len(wrong)} tensors are not: "
            f"{', '.join(wrong[:3])}. The file is broken, or not a LoRA."
        )
    try:
        with safetensors.safe_open(str(path), "pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in keys}
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise lora_weights.LoRAFileError(
            f"{path} is not a valid safetensors file: {error}."
        ) from None
    for key, tensor in tensors.items():
        bad = tensor.numel() - int(torch.isfinite(tensor).sum())
        if bad:
            raise lora_weights.LoRAFileError(
                f"{path}: {key} holds {bad} NaN or infinite values of {tensor.numel()}; the "
                "LoRA is broken (a training run that diverged?): use an earlier checkpoint, "
                "or retrain with a lower learning rate."
            )
    return tensors


def group_keys(keys, suffixes: tuple[str, ...]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """A file's keys grouped by module, ``{module: {suffix: key}}``; keys with other endings are
    returned apart."""
    groups, others = {}, []
    for key in keys:
        suffix = next((s for s in suffixes if key.endswith("." + s)), None)
        if suffix is None:
            others.append(key)
        else:
            groups.setdefault(key[: -len(suffix) - 1], {})[suffix] = key
    return groups, others


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file, byte for byte the same for the same tensors and metadata.

    (safetensors itself writes the metadata in the order of a hash map, which changes from one
    process to the next; the header is rewritten here with the metadata sorted, the tensors in
    file order.)
    """
    raw = safetensors.torch.save(
        {k: v.contiguous().clone() for k, v in tensors.items()}, metadata=metadata
    )
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda kv: kv[1]["data_offsets"],
    )
    ordered = (
        {"__metadata__": dict(sorted(header["__metadata__"].items()))}
        if "__metadata__" in header
        else {}
    )
    ordered |= dict(entries)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def write_safetensors(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """:func:`safetensors_bytes` written atomically at ``path`` (a temporary file, then a
    rename)."""
    files.write_atomically(path, safetensors_bytes(tensors, metadata))
