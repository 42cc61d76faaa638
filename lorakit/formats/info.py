"""What a LoRA file holds, for ``lorakit info``: its kind, its base model, its modules and scales.

Introduced in notebooks/08_stable_diffusion_gpu.ipynb.

:func:`describe` reports a file: its format and kind (LoRA on linear layers, 1x1 convolutions,
LoCon), the base model its shapes and ``ss_*`` metadata point to (:func:`guess_base`), its
modules per kind and per block (:func:`block_of`), rank and alpha per module, the scale a UI
applies at weight 1, parameters, size and metadata; the architecture it was made for (SD 1.x/2.x,
SDXL, SD3, Flux: notebooks/12_beyond_sd15.ipynb) with its modules per part (UNet or transformer,
each text encoder). A file of a kind lorakit does not apply is described from its header, with
the reason.

Left out: checking a LoRA against a model (``apply.resolve_modules``).
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

from lorakit import targets
from lorakit.formats import architectures, load, lora_weights, safetensors_io

__all__ = ["CONTEXT_WIDTHS", "BLOCK_WIDTHS", "block_of", "part_of", "guess_base", "describe"]

CONTEXT_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 64: "the tiny SD (this course's)"}
BLOCK_WIDTHS = {1280: "SD 1.x or 2.x", 128: "the tiny SD (this course's)"}  # mid_block's channels


KOHYA_BLOCKS = {  # kohya names no model resolved (SD3's and Flux's): their block kind
    "lora_unet_double_blocks_": "double_blocks",
    "lora_unet_single_blocks_": "single_blocks",
    "lora_unet_joint_blocks_": "joint_blocks",
    "lora_te1_": "text_encoder",
    "lora_te_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te3_": "text_encoder_3",
}
PARTS = {"text_encoder": "text encoder 1", "text_encoder_2": "text encoder 2"}


def block_of(path: str) -> str:
    """The block a module sits in: ``down_blocks.0``, ``mid_block``, ``up_blocks.2``,
    ``text_encoder`` (``_2``, ``_3``), a transformer's ``transformer_blocks`` or
    ``single_transformer_blocks`` (kohya's ``double_blocks``, ``single_blocks``), or its first
    name."""
    kohya = next((b for k, b in KOHYA_BLOCKS.items() if path.startswith(k)), None)
    if kohya:
        return kohya
    parts = path.split(".")
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0] if parts[0].startswith("text_encoder") else parts[0].rstrip("_")


def part_of(path: str) -> str:
    """The part of the model a module is in: ``text_encoder`` (``_2``, ``_3``), else the UNet's
    or transformer's (``""``)."""
    block = block_of(path)
    return block if block.startswith("text_encoder") else ""


def guess_base(weights: lora_weights.LoRAWeights) -> str:
    """The base model the shapes point to (cross-attention's text width, the middle block's
    channels), and what the kohya metadata says."""
    clues = []
    arch = architectures.of_weights(weights)
    if arch in architectures.TRANSFORMERS:
        q = next((m for m in weights.modules if m.endswith(("to_q", "qkv", "linear1"))), None)
        width = f" ({weights.A[q].shape[1]} wide)" if q is not None else ""
        clues.append(f"{arch}: a transformer with joint attention{width}")
    to_k = next((m for m in weights.modules if m.endswith("attn2.to_k")), None)
    mid = next((m for m in weights.modules if m.startswith("mid_block")), None)
    text = next((m for m in weights.text_modules if m.endswith("self_attn.q_proj")), None)
    if to_k is not None:
        width = weights.A[to_k].shape[1]
        base = CONTEXT_WIDTHS.get(width, "an SD-like model")
        if arch == architectures.SDXL and width != 2048:  # SDXL's layout at another width
            base = "an SDXL-shaped model (SDXL's text is 2048 wide)"
        clues.append(f"{base} (cross-attention reads a {width}-wide text)")
    elif mid is not None:
        width = weights.B[mid].shape[0]
        base = BLOCK_WIDTHS.get(width, "an SD-like model")
        clues.append(f"{base} (the middle block has {width} channels)")
    if text is not None:
        width = weights.A[text].shape[1]
        clues.append(f"text encoder {width} wide ({CONTEXT_WIDTHS.get(width, 'unknown')})")
    said = [
        f"{k}: {weights.metadata[k]}"
        for k in ("ss_base_model_version", "ss_sd_model_name", "ss_v2")
        if weights.metadata.get(k)
    ]
    if said:
        clues.append("the file says " + ", ".join(said))
    return "; ".join(clues) or "unknown (no module shows the text width)"


def _counted(w: lora_weights.LoRAWeights, paths) -> str:
    """How many of ``paths`` are of each kind: ``conv 1x1 32, linear 160``."""
    c = collections.Counter(w.kind(m) for m in paths)
    return ", ".join(f"{k} {n}" for k, n in sorted(c.items()))


def _lora_kind(w: lora_weights.LoRAWeights) -> str:
    if w.variants:
        read = collections.Counter(w.variants.values())
        what = ", ".join(f"{v} on {n} modules" for v, n in read.items())
        return (
            f"LyCORIS {what}; read exactly as a LoRA of the rank delta W has (the factors' ranks "
            "multiplied)"
        )
    kinds = collections.Counter(w.kind(m) for m in w.modules)
    if any(k.startswith("conv") and k != "conv 1x1" for k in kinds):
        return "LoCon (LoRA on 3x3 convolutions too)"
    if "conv 1x1" in kinds:
        return "LoRA on linear layers and 1x1 convolutions"
    return "LoRA on linear layers"


def _scaling_line(w: lora_weights.LoRAWeights) -> str:
    if w.uniform:
        rslora = "  (rsLoRA)" if w.use_rslora else ""
        return f"r: {w.r}  alpha: {w.alpha:g}  scaling: {w.scaling:g}{rslora}"
    return f"r: {w.r}  alpha: {w.alpha:g} on most modules; per-module ranks or alphas below"


def _module_name(path: str) -> str:
    """What a module is, without where: ``attn2.to_k``, a transformer's ``attn.to_q``."""
    if path.startswith(("transformer_blocks.", "single_transformer_blocks.")):
        return path.split(".", 2)[-1]
    return targets.module_kind(path) if "transformer_blocks" in path else path.split(".")[-1]


def _module_lines(w: lora_weights.LoRAWeights) -> list[str]:
    """The modules by name, by part (UNet, text encoder) and by block."""
    arch = architectures.of_weights(w)
    main = "transformer" if arch in architectures.TRANSFORMERS else "UNet"
    by_part: dict[str, list[str]] = {}
    for m in w.modules:
        by_part.setdefault(part_of(m), []).append(m)
    several = len([p for p in by_part if p]) > 1 or arch == architectures.SDXL
    parts = [
        f"{main if not p else PARTS.get(p, p) if several else 'text encoder'} {len(paths)}: "
        f"{_counted(w, paths)}"
        for p, paths in sorted(by_part.items())
    ]
    names = collections.Counter(_module_name(m) for m in w.modules)
    lines = [
        f"modules: {len(w.modules)} ({', '.join(f'{k} x{n}' for k, n in names.items())})",
        f"  {'; '.join(parts)}",
        "per block:",
    ]
    blocks: dict[str, list[str]] = {}
    for m in w.modules:
        blocks.setdefault(block_of(m), []).append(m)
    for block, paths in blocks.items():
        lines.append(f"  {block:14s} {len(paths):3d}: {_counted(w, paths)}")
    return lines


def _rank_alpha_lines(w: lora_weights.LoRAWeights) -> list[str]:
    """The modules grouped by rank and alpha, largest group first, with the scale of each."""
    rule = ", rsLoRA: alpha / sqrt(r))" if w.use_rslora else ")"
    lines = [f"rank and alpha (the scale a UI applies at weight 1 is alpha / r{rule}:"]
    groups: dict[tuple[int, float], list[str]] = {}
    for m in w.modules:
        groups.setdefault((w.rank(m), w.alpha_of(m)), []).append(m)
    for (r, alpha), paths in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        example = "" if len(groups) == 1 else f" (e.g. {paths[0]})"
        lines.append(
            f"  r {r}, alpha {alpha:g}: scale {w.scaling_of(paths[0]):.4g} on {len(paths)} "
            f"modules{example}"
        )
    return lines


def _metadata_lines(metadata: dict[str, str]) -> list[str]:
    if not metadata:
        return []
    return ["metadata:"] + [
        f"  {k}: {v if len(v) < 80 else v[:77] + '...'}" for k, v in sorted(metadata.items())
    ]


def _held(path: Path, w: lora_weights.LoRAWeights) -> str:
    """For a LyCORIS file: how many numbers the file itself holds (its factors)."""
    if not w.variants or not path.is_file():
        return ""
    header, _ = safetensors_io.read_header(path)
    held = sum(math.prod(v["shape"]) for k, v in header.items() if not k.endswith(".alpha"))
    return f" as a LoRA (the file's own factors: {held:,})"


def describe(path: str | Path) -> str:
    """A report on a LoRA file, for ``lorakit info``: its format and kind, the base model its
    shapes and metadata point to, its modules per kind and block, rank and alpha per module
    (grouped), the scale a UI applies at weight 1, parameters, size and metadata. A file lorakit
    does not apply is still described from its header, with the reason."""
    path = Path(path)
    size = (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if path.is_dir()
        else (path.stat().st_size if path.is_file() else 0)
    )
    try:
        w = load.load_lora(path)
    except lora_weights.UnsupportedKind as error:
        if not path.is_file():
            raise
        header, metadata = safetensors_io.read_header(path)
        lines = [
            f"file: {path} ({size / 1e6:.2f} MB, {len(header)} tensors)",
            f"not applied by lorakit: {error}",
        ]
        return "\n".join(lines + _metadata_lines(metadata))
    lines = [
        f"file: {path} ({size / 1e6:.2f} MB)",
        f"format: {w.format}",
        f"architecture: {architectures.of_weights(w)}",
        f"kind: {_lora_kind(w)}",
        f"base model: {guess_base(w)}",
        _scaling_line(w),
        *_module_lines(w),
        *_rank_alpha_lines(w),
        f"parameters: {sum(w.A[m].numel() + w.B[m].numel() for m in w.modules):,}" + _held(path, w),
    ]
    return "\n".join(lines + _metadata_lines(w.metadata))
