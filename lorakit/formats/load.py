"""Loading a LoRA: the format told from the header's keys, then every tensor and setting checked.

Introduced in notebooks/05_inject_lora.ipynb.

:func:`load_lora` reads a kohya or diffusers file, or a PEFT folder (the UNet's adapter, and the
text encoder's in its ``text_encoder/`` subfolder), into a :class:`~lorakit.formats.LoRAWeights`.
The format is told from the header's key names before any tensor is read; then each module's
pair is checked (2-D, or a convolution's 4-D with a 1x1 up; one rank above 0) and its alpha
(finite, not 0, where tools disagree on what 0 means).

Left out: the spellings themselves (``kohya``, ``diffusers``), the kinds that are refused
(``refused``), putting the weights into a model (``apply``).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

from lorakit.formats import (
    architectures,
    diffusers,
    kohya,
    lora_weights,
    lycoris,
    refused,
    safetensors_io,
)

__all__ = ["load_lora"]

TEXT_PREFIX = lora_weights.TEXT_PREFIX


def load_lora(path: str | Path, model=None) -> lora_weights.LoRAWeights:
    """Read a kohya/diffusers file or a PEFT folder; the format is detected from keys and layout.

    kohya names (``lora_unet_down_blocks_0_...``, ``lora_te_text_model_...``) are mapped back to
    module paths through the module names of ``model`` (a UNet or a pipeline), or of SD 1.5's UNet
    and text encoder (the tiny SD's are the same) by default. The format is told from the header's
    key names before any tensor is read; every tensor and setting is checked
    (:class:`LoRAFileError` names the file and the key).
    """
    path = Path(path)
    if path.is_dir() and not (path / diffusers.PEFT_FILE).is_file():
        if not (path / diffusers.DIFFUSERS_FILE).is_file():
            raise FileNotFoundError(
                f"{path} holds neither {diffusers.PEFT_FILE} (PEFT) nor {diffusers.DIFFUSERS_FILE} "
                "(diffusers)."
            )
        path = path / diffusers.DIFFUSERS_FILE
    if not path.is_dir():
        return _load_file(path, model)
    # a PEFT folder: the UNet's adapter, and the text encoder's in its subfolder
    weights = _load_file(path / diffusers.PEFT_FILE, model)
    text = path / diffusers.PEFT_TEXT_FOLDER / diffusers.PEFT_FILE
    if not text.is_file():
        return weights
    te = _load_file(text, model, TEXT_PREFIX)
    if te.use_rslora != weights.use_rslora:
        raise lora_weights.LoRAFileError(
            f"{path}: the UNet's and the text encoder's adapters disagree on use_rslora."
        )
    return lora_weights.build_weights(
        "peft",
        weights.A | te.A,
        weights.B | te.B,
        {m: w.alpha_of(m) for w in (weights, te) for m in w.modules},
        weights.use_rslora,
        weights.metadata,
    )


def _load_file(path: Path, model=None, peft_prefix: str = "") -> lora_weights.LoRAWeights:
    """:func:`load_lora` of one safetensors file (``peft_prefix``: the prefix of a PEFT
    text-encoder adapter's paths)."""
    header, metadata = safetensors_io.read_header(path)
    keys = list(header)
    refused.refuse_architecture(path, keys)
    arch = architectures.of_header(header)
    if lycoris.is_lycoris(keys):
        return lycoris.load_lycoris(path, header, metadata, model, arch)
    fmt, halves, alpha_keys, configs, names = _read_keys(
        path, keys, metadata, model, peft_prefix, arch
    )
    _check_complete(path, halves, names)
    tensors = safetensors_io.read_tensors(
        path, header, [k for pair in halves.values() for k in pair] + list(alpha_keys.values())
    )
    alphas = {m: kohya.alpha_value(path, k, tensors[k]) for m, k in alpha_keys.items()}
    return _assemble(path, fmt, tensors, halves, alphas, configs, metadata)


def _read_keys(
    path: Path, keys: list[str], metadata: dict, model, peft_prefix: str, arch: str
) -> tuple:
    """The format, ``{module path: (A key, B key)}``, kohya's alpha keys, the LoraConfig settings
    per component and the names of the halves, from the header's keys and metadata."""
    if any(k.startswith(kohya.KOHYA_PREFIXES) for k in keys):
        groups, others = kohya.group_kohya_keys(keys)
        if others:
            raise refused.unsupported(path, others, "kohya LoRA", groups)
        halves, alpha_keys = kohya.kohya_halves(groups, model, arch)
        return "kohya", halves, alpha_keys, {}, kohya.HALF_NAMES
    prefixes = (diffusers.PEFT_PREFIX, *diffusers.MAIN_PREFIXES, *lora_weights.TEXT_PREFIXES)
    if any(k.startswith(prefixes) for k in keys):
        fmt = "peft" if any(k.startswith(diffusers.PEFT_PREFIX) for k in keys) else "diffusers"
        groups, others = diffusers.group_diffusers_keys(keys, fmt)
        if others:
            raise refused.unsupported(path, others, f"{fmt} LoRA", groups)
        halves = diffusers.diffusers_halves(groups, fmt, peft_prefix)
        configs = diffusers.read_configs(path, fmt, metadata, peft_prefix)
        return fmt, halves, {}, configs, diffusers.HALF_NAMES
    raise lora_weights.LoRAFileError(
        f"cannot tell the LoRA format of {path}: expected kohya keys ({kohya.KOHYA_PREFIX}..."
        f".lora_down.weight), diffusers keys ({diffusers.DIFFUSERS_PREFIX}....lora_A.weight) or "
        f"PEFT keys ({diffusers.PEFT_PREFIX}....lora_A.weight), found "
        f"{', '.join(keys[:3]) or 'no tensors'}."
    )


def _check_complete(path: Path, halves: dict, names: tuple[str, str]) -> None:
    """Every module has both halves, and there is at least one module."""
    down, up = names
    missing = [
        f"{m}: {down if a is None else up} is missing ({up if a is None else down} is there)"
        for m, (a, b) in halves.items()
        if a is None or b is None
    ]
    if missing or not halves:
        advice = " (the file is incomplete: save it again from the tool that made it)"
        raise lora_weights.LoRAFileError(
            f"{path} is not a LoRA lorakit can load: {'; '.join(missing[:5]) or 'no LoRA tensors'}"
            f"{advice if missing else ''}."
        )


def _check_pairs(path: Path, tensors: dict, halves: dict) -> None:
    """Each module's pair: 2-D, or a convolution's 4-D with a 1x1 up; one rank for both halves."""
    problems = []
    for m, (a, b) in halves.items():
        ta, tb = tensors[a], tensors[b]
        name_a, name_b = a.rsplit(".", 2)[-2], b.rsplit(".", 2)[-2]
        if (
            ta.ndim not in (2, 4)
            or tb.ndim != ta.ndim
            or (tb.ndim == 4 and tuple(tb.shape[2:]) != (1, 1))
        ):
            problems.append(
                f"{m}: {name_a} {tuple(ta.shape)} and {name_b} {tuple(tb.shape)} are neither a "
                "linear pair (2-D) nor a convolution's (4-D, a 1x1 up)"
            )
        elif ta.shape[0] != tb.shape[1]:
            problems.append(
                f"{m}: the ranks disagree, {name_a} {tuple(ta.shape)} has {ta.shape[0]} rows "
                f"but {name_b} {tuple(tb.shape)} has {tb.shape[1]} columns"
            )
    if problems:
        raise lora_weights.LoRAFileError(
            f"{path} is not a LoRA lorakit can load: {'; '.join(problems[:3])}"
            f"{' ...' if len(problems) > 3 else ''}. The file is broken: save it again from the "
            "tool that made it."
        )


def _check_rank(path: Path, tensors: dict, halves: dict) -> None:
    """No module of rank 0 (a LoRA that changes nothing)."""
    zero = next((m for m, (a, _) in halves.items() if tensors[a].shape[0] == 0), None)
    if zero is not None:
        raise lora_weights.LoRAFileError(
            f"{path} holds a LoRA of rank 0 ({zero}: A of shape "
            f"{tuple(tensors[halves[zero][0]].shape)}), which changes nothing: the file is "
            "broken; save it again from the trained model."
        )


def _module_alpha(path: Path, fmt: str, module: str, r: int, alphas: dict, configs: dict) -> float:
    """A module's alpha: kohya's tensor, else the settings' ``alpha_pattern`` or ``lora_alpha``,
    else r (kohya, diffusers and PEFT agree); refused if not finite, or 0."""
    if module in alphas:  # kohya's per-module tensor
        alpha, where = alphas[module], f"its {kohya.kohya_name(module)}.alpha tensor"
    else:
        alpha, where = diffusers.config_alpha(configs, fmt, module)
    if alpha is not None and not (isinstance(alpha, numbers.Real) and math.isfinite(alpha)):
        raise lora_weights.LoRAFileError(
            f"{path}: alpha of {module} is {alpha!r} in {where}; it must be a finite number."
        )
    alpha = float(r if alpha is None else alpha)
    if alpha == 0:
        raise lora_weights.LoRAFileError(
            f"{path}: alpha is 0 in {where}. Tools disagree on what that means (kohya's scripts "
            "and AUTOMATIC1111 read it as alpha = r, diffusers and ComfyUI as a LoRA that does "
            f"nothing), so lorakit refuses to guess: set it to {r} (alpha = r) or to the alpha "
            "it was trained with."
        )
    return alpha


def _assemble(path, fmt, tensors, halves, alphas, configs, metadata) -> lora_weights.LoRAWeights:
    """Check every module's pair and its alpha; build the LoRAWeights."""
    _check_pairs(path, tensors, halves)
    refused.refuse_config_kinds(path, configs)
    _check_rank(path, tensors, halves)
    rslora = {bool(c.get("use_rslora", False)) for c in configs.values() if c}
    module_alphas = {
        m: _module_alpha(path, fmt, m, int(tensors[a].shape[0]), alphas, configs)
        for m, (a, _) in halves.items()
    }
    weights = lora_weights.build_weights(
        fmt,
        {m: tensors[a].float() for m, (a, _) in halves.items()},
        {m: tensors[b].float() for m, (_, b) in halves.items()},
        module_alphas,
        rslora.pop() if len(rslora) == 1 else False,
        metadata,
    )
    lora_weights.check_weights(weights, str(path))
    return weights
