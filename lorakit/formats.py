"""Reading and writing LoRA files: kohya (A1111/ComfyUI), diffusers and PEFT, safetensors only.

Introduced in notebooks/06_train_style_lora.ipynb.

One LoRA, three spellings (``P`` is a module path such as
``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q``):

* kohya: ``lora_unet_<P with . as _>.lora_down.weight`` (= A), ``.lora_up.weight`` (= B) and a
  0-dim ``.alpha`` per module, one value for all; ``ss_*`` metadata, all strings.
* diffusers: ``unet.P.lora_A.weight`` and ``.lora_B.weight``; r and alpha in the JSON of the
  ``lora_adapter_metadata`` entry of the safetensors metadata (without it, alpha = r).
* PEFT: a folder, ``adapter_model.safetensors`` (``base_model.model.P.lora_A.weight``) and
  ``adapter_config.json``.

:func:`load_lora` detects the format and returns a :class:`LoRAWeights` (A and B per module
path, one ``r`` and one ``alpha``); :func:`apply_lora` checks every module and shape against
the model before it changes anything. Pickle files (``.ckpt``, ``.pt``, ``.bin``) are refused:
unpickling runs code. Every refusal of a file is a :class:`LoRAFileError` (a ``ValueError``) whose
one-line message names the file and the key; the header is checked before any tensor is read, and
every weight and setting after (floating point, finite, rank above 0, alpha positive and finite).
Files are written atomically (a temporary file, then ``os.replace``), byte for byte the same for the
same LoRA (:func:`safetensors_bytes`).

Left out: text-encoder LoRAs (skipped with a warning), convolution LoRAs, LoHa/LoKr/DoRA,
per-module ranks or alphas, SDXL's key layout. The wrapping itself is ``lorakit.inject``.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

import lorakit
from lorakit import files, inject, lora

FORMATS = ("kohya", "diffusers", "peft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
KOHYA_PREFIX = "lora_unet_"
TEXT_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoder_2.")  # skipped
DIFFUSERS_PREFIX, DIFFUSERS_FILE = "unet.", "pytorch_lora_weights.safetensors"
PEFT_PREFIX, PEFT_FILE, PEFT_CONFIG = "base_model.model.", "adapter_model.safetensors", "adapter_config.json"
METADATA_KEY = "lora_adapter_metadata"  # diffusers' key for the LoraConfig JSON


class LoRAFileError(ValueError):
    """A LoRA file (or :class:`LoRAWeights`) that lorakit refuses; the message names the file and the key.

    Every refusal of a file's content is this one type, a ``ValueError``; a file that is not there
    is a ``FileNotFoundError``. A refused file changes nothing in the model it was meant for.
    """


@dataclass
class LoRAWeights:
    """A LoRA as lorakit holds it: per-module A (r, in) and B (out, r), one r and one alpha.

    ``format`` is where it came from: "kohya", "diffusers", "peft", or "lorakit" (:func:`from_model`).
    """

    format: str
    r: int
    alpha: float
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    use_rslora: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        return self.alpha / (self.r ** 0.5 if self.use_rslora else self.r)

    @property
    def modules(self) -> list[str]:
        return list(self.A)

    def delta_weight(self, path: str) -> torch.Tensor:
        return (self.B[path] @ self.A[path]) * self.scaling  # (out, r) @ (r, in) -> (out, in)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Keys as ``inject.lora_state_dict`` writes them."""
        return {f"{p}.lora_{ab}.weight": t[p] for p in self.A for ab, t in (("A", self.A), ("B", self.B))}


def from_model(model: nn.Module) -> LoRAWeights:
    """The LoRA weights of an injected model (the runtime ``scale`` is not saved)."""
    layers = list(inject.lora_layers(model))
    if not layers:
        raise RuntimeError("this model has no LoRA layers to save: call inject.inject_lora(model) first.")
    configs = {(layer.r, layer.alpha, layer.use_rslora) for _, layer in layers}
    if len(configs) > 1:
        raise ValueError(f"LoRA files hold one r and one alpha, but the layers have {sorted(configs)}.")
    r, alpha, use_rslora = configs.pop()
    copy = lambda t: t.detach().to("cpu", torch.float32).contiguous().clone()  # noqa: E731
    return LoRAWeights("lorakit", r, float(alpha), {n: copy(m.lora_A.weight) for n, m in layers},
                       {n: copy(m.lora_B.weight) for n, m in layers}, use_rslora)


# --- writing ---------------------------------------------------------------------------

def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file, byte for byte the same for the same tensors and metadata.

    (safetensors itself writes the metadata in the order of a hash map, which changes from one process
    to the next; the header is rewritten here with the metadata sorted, the tensors in file order.)
    """
    raw = safetensors.torch.save({k: v.contiguous().clone() for k, v in tensors.items()}, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"])
    ordered = ({"__metadata__": dict(sorted(header["__metadata__"].items()))} if "__metadata__" in header else {})
    ordered |= dict(entries)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def _save_safetensors(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    files.write_atomically(path, safetensors_bytes(tensors, metadata))


def save_weights(weights: LoRAWeights, path: str | Path, format: str = "kohya",
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``weights`` as ``format``; returns the file written (for PEFT, the folder)."""
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}.")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"lorakit writes safetensors only; name the file {path.with_suffix('.safetensors').name}.")
    unresolved = [m for m in weights.modules if m.startswith(KOHYA_PREFIX)]
    if unresolved and format != "kohya":
        raise ValueError(f"{len(unresolved)} kohya names (e.g. {unresolved[0]}) were not mapped to module paths: "
                         "load the file with load_lora(path, model=your_unet) before writing another format.")
    own = {"lorakit_version": lorakit.__version__, "lorakit_format": format, **(metadata or {})}
    if format == "kohya":
        if path.suffix != ".safetensors":
            raise ValueError(f"a kohya LoRA is one .safetensors file, got {path}.")
        alpha = weights.scaling * weights.r  # kohya knows only alpha / r: rsLoRA folds into alpha
        tensors = {}
        for p in weights.modules:
            name = KOHYA_PREFIX + p.replace(".", "_")
            tensors |= {f"{name}.lora_down.weight": weights.A[p], f"{name}.lora_up.weight": weights.B[p],
                        f"{name}.alpha": torch.tensor(alpha)}  # 0-dim
        kohya = {"ss_network_dim": str(weights.r), "ss_network_alpha": str(alpha),
                 "ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1", "ss_v2": "False",
                 "ss_output_name": path.stem}
        _save_safetensors(tensors, path, kohya | own)
        return path
    config = {"r": weights.r, "lora_alpha": weights.alpha, "use_rslora": weights.use_rslora,
              "target_modules": weights.modules, "rank_pattern": {}, "alpha_pattern": {}}
    if format == "diffusers":
        path = path if path.suffix == ".safetensors" else path / DIFFUSERS_FILE
        packed = {DIFFUSERS_PREFIX + k: v for k, v in config.items()}  # as diffusers' save_lora_weights packs it
        tensors = {DIFFUSERS_PREFIX + k: v for k, v in weights.state_dict().items()}
        _save_safetensors(tensors, path, {"format": "pt", METADATA_KEY: json.dumps(packed, sort_keys=True)} | own)
        return path
    if path.suffix == ".safetensors":
        raise ValueError(f"a PEFT adapter is a folder ({PEFT_FILE} + {PEFT_CONFIG}); give a folder, not {path}.")
    config |= {"peft_type": "LORA", "task_type": None, "bias": "none", "lora_dropout": 0.0,
               "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": None}
    tensors = {PEFT_PREFIX + k: v for k, v in weights.state_dict().items()}
    _save_safetensors(tensors, path / PEFT_FILE, {"format": "pt"} | own)
    text = json.dumps(config, indent=2, sort_keys=True)
    files.write_atomically(path / PEFT_CONFIG, text)
    return path


def save_lora(model: nn.Module, path: str | Path, format: str = "kohya",
              metadata: dict[str, str] | None = None) -> Path:
    """Save the LoRA layers of ``model`` as a kohya, diffusers or PEFT file."""
    return save_weights(from_model(model), path, format, metadata)


# --- reading ---------------------------------------------------------------------------

MAX_HEADER_BYTES = 32 * 2 ** 20  # SD 1.5's largest LoRAs have headers of a few hundred KB, metadata included
MAX_TENSORS = 20_000  # a full SDXL LoRA (UNet, both text encoders, convolutions) has under 10,000
MAX_CONFIG_BYTES = 2 ** 20  # adapter_config.json
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names of the floating-point dtypes lorakit reads


def _looks_like_pickle(path: Path, head: bytes, size: int) -> bool:
    """A torch.save zip, or a raw pickle: the PROTO opcode (protocol 2-5), an opcode after it, the STOP opcode
    ``.`` last. (A safetensors header of 640 bytes also begins 0x80 0x02, but zeros follow it.)"""
    if head.startswith(b"PK\x03\x04"):
        return True
    if head[:1] != b"\x80" or head[1:2] not in (b"\x02", b"\x03", b"\x04", b"\x05") or head[2:3] in (b"", b"\x00"):
        return False
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"."


def _read_header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """The tensor entries (name -> dtype, shape, offsets) and the metadata of a safetensors file, read from
    its header alone: pickles, broken headers and oversized files are refused before any tensor is read."""
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}.")
    refuse = (f"{path} is a pickle-based checkpoint, which can run arbitrary code when loaded; lorakit "
              "reads .safetensors only. Ask for a .safetensors version of this LoRA, or convert it yourself "
              "in a sandbox with code you trust.")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoRAFileError(refuse)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if not (len(head) == 9 and header_len <= size - 8 and head[8:9] == b"{"):
        if _looks_like_pickle(path, head, size):
            raise LoRAFileError(refuse)  # whatever its name
        why = (f"{size} bytes is too short for a header" if header_len < 0
               else f"its header claims {header_len} bytes but the file has {size} (truncated?)"
               if header_len > size - 8 else "its header is not JSON")
        raise LoRAFileError(f"{path} is not a valid safetensors file: {why}.")
    if header_len > MAX_HEADER_BYTES:
        raise LoRAFileError(f"{path} is not a LoRA lorakit reads: its header is {header_len / 2 ** 20:.0f} MB, "
                            f"more than the {MAX_HEADER_BYTES // 2 ** 20} MB of any LoRA's (a full model, or a "
                            "file made to exhaust memory?).")
    with open(path, "rb") as f:
        f.seek(8)
        text = f.read(header_len)
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LoRAFileError(f"{path} is not a valid safetensors file: its header is not JSON ({error}).") from None
    if not isinstance(header, dict):
        raise LoRAFileError(f"{path} is not a valid safetensors file: its header is a JSON "
                            f"{type(header).__name__}, not an object.")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LoRAFileError(f"{path} is not a valid safetensors file: its __metadata__ is not an object of strings.")
    if len(header) > MAX_TENSORS:
        raise LoRAFileError(f"{path} is not a LoRA lorakit reads: it holds {len(header):,} tensors, more than the "
                            f"{MAX_TENSORS:,} of any LoRA's.")
    for key, entry in header.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
                and isinstance(entry.get("shape"), list)):
            raise LoRAFileError(f"{path} is not a valid safetensors file: the entry of {key!r} has no dtype and shape.")
    return header, metadata


def _read_tensors(path: Path, header: dict[str, dict], keys: list[str]) -> dict[str, torch.Tensor]:
    """The tensors ``keys`` of the file, each checked: a floating-point dtype, every value finite."""
    wrong = [f"{k} ({header[k]['dtype']})" for k in keys if header[k]["dtype"] not in FLOAT_DTYPES]
    if wrong:
        raise LoRAFileError(f"{path}: LoRA weights are floating point, but {len(wrong)} tensors are not: "
                            f"{', '.join(wrong[:3])}. The file is broken, or not a LoRA.")
    try:
        with safetensors.safe_open(str(path), "pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in keys}
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise LoRAFileError(f"{path} is not a valid safetensors file: {error}.") from None
    for key, tensor in tensors.items():
        bad = tensor.numel() - int(torch.isfinite(tensor).sum())
        if bad:
            raise LoRAFileError(f"{path}: {key} holds {bad} NaN or infinite values of {tensor.numel()}; the "
                                "LoRA is broken (a training run that diverged?): use an earlier checkpoint, "
                                "or retrain with a lower learning rate.")
    return tensors


def _kohya_names(model: nn.Module) -> dict[str, str]:
    """kohya name -> module path, from the model's real module names (no guessing where the dots were)."""
    return {KOHYA_PREFIX + n.replace(".", "_"): n for n, _ in model.named_modules() if n}


@functools.lru_cache(maxsize=1)
def _sd_kohya_names() -> dict[str, str]:
    """:func:`_kohya_names` of SD 1.5's UNet (the tiny SD shares every path), built on the meta device."""
    from diffusers import UNet2DConditionModel

    from lorakit import models
    with torch.device("meta"):
        return _kohya_names(UNet2DConditionModel(**models.SD15_UNET_CONFIG))


def _split(keys, suffixes: tuple[str, ...]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Group keys by module: {module: {suffix: key}}; keys with other endings are returned apart."""
    groups, others = {}, []
    for key in keys:
        suffix = next((s for s in suffixes if key.endswith("." + s)), None)
        if suffix is None:
            others.append(key)
        else:
            groups.setdefault(key[: -len(suffix) - 1], {})[suffix] = key
    return groups, others


def _unsupported(path: Path, keys: list[str], what: str) -> LoRAFileError:
    return LoRAFileError(f"{path} has {len(keys)} keys that lorakit cannot read as {what} "
                      f"(e.g. {', '.join(keys[:5])}); it reads plain LoRA on linear layers only.")


def _settings(path: Path, where: str, text: str, prefix: str = "") -> dict:
    """The LoRA settings in a JSON object (diffusers' metadata entry, PEFT's adapter_config.json), checked:
    ``r`` a positive integer, ``lora_alpha`` a positive finite number, ``use_rslora``/``use_dora`` booleans,
    the patterns objects. Keys are returned without ``prefix``; the messages name them as the file has them."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LoRAFileError(f"{path}: {where} is not valid JSON ({error}); rewrite the file with "
                            "`lorakit convert` or the tool that made it.") from None
    if not isinstance(value, dict):
        raise LoRAFileError(f"{path}: {where} is a JSON {type(value).__name__}, not an object of LoRA settings "
                            "(r, lora_alpha, ...).")
    config = {k[len(prefix):]: v for k, v in value.items() if k.startswith(prefix)}
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    rules = {"r": (lambda v: number(v) and v == int(v) and v > 0, "a positive integer"),
             "lora_alpha": (lambda v: number(v) and math.isfinite(v), "a finite number"),
             "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
             "use_dora": (lambda v: isinstance(v, bool), "true or false"),
             "peft_type": (lambda v: isinstance(v, str), "a string"),
             "rank_pattern": (lambda v: isinstance(v, dict), "an object"),
             "alpha_pattern": (lambda v: isinstance(v, dict), "an object")}
    for key, (ok, what) in rules.items():
        if config.get(key) is not None and not ok(config[key]):
            raise LoRAFileError(f"{path}: {where} has {prefix}{key} = {json.dumps(config[key])[:60]}; it must be "
                                f"{what}.")
    return config


def _alpha(path: Path, key: str, tensor: torch.Tensor) -> float:
    """A kohya ``.alpha`` tensor as a number: one element, finite (checked when read)."""
    if tensor.numel() != 1:
        raise LoRAFileError(f"{path}: {key} holds {tensor.numel()} values of shape {tuple(tensor.shape)}; a kohya "
                            "alpha is one number.")
    return float(tensor.reshape(()))


def load_lora(path: str | Path, model: nn.Module | None = None) -> LoRAWeights:
    """Read a kohya/diffusers file or a PEFT folder; the format is detected from keys and layout.

    kohya names (``lora_unet_down_blocks_0_...``) are mapped back to module paths through the
    module names of ``model``, or of SD 1.5's UNet (the tiny SD's are the same) by default.
    The format is told from the header's key names before any tensor is read; every tensor and
    setting is checked (:class:`LoRAFileError` names the file and the key).
    """
    path = Path(path)
    if path.is_dir():
        for name in (PEFT_FILE, DIFFUSERS_FILE):
            if (path / name).is_file():
                return load_lora(path / name, model)
        raise FileNotFoundError(f"{path} holds neither {PEFT_FILE} (PEFT) nor {DIFFUSERS_FILE} (diffusers).")
    header, metadata = _read_header(path)
    text = [k for k in header if k.startswith(TEXT_PREFIXES)]
    keys = [k for k in header if k not in text]
    if text and not keys:
        raise LoRAFileError(f"{path} holds only text-encoder LoRA weights; lorakit loads UNet LoRAs only.")
    config: dict = {}
    alpha_keys: dict[str, str] = {}
    if any(k.startswith(KOHYA_PREFIX) for k in keys):
        fmt = "kohya"
        groups, others = _split(keys, ("lora_down.weight", "lora_up.weight", "alpha"))
        if others:
            raise _unsupported(path, others, "kohya LoRA")
        known = _kohya_names(model) if model is not None else _sd_kohya_names()
        pairs = {known.get(m, m): (g.get("lora_down.weight"), g.get("lora_up.weight")) for m, g in groups.items()}
        alpha_keys = {known.get(m, m): g["alpha"] for m, g in groups.items() if "alpha" in g}
    elif any(k.startswith((PEFT_PREFIX, DIFFUSERS_PREFIX)) for k in keys):
        peft = any(k.startswith(PEFT_PREFIX) for k in keys)
        fmt, prefix = ("peft", PEFT_PREFIX) if peft else ("diffusers", DIFFUSERS_PREFIX)
        groups, others = _split(keys, ("lora_A.weight", "lora_B.weight"))
        others += [m for m in groups if not m.startswith(prefix)]
        if others:
            raise _unsupported(path, others, f"{fmt} LoRA")
        pairs = {m[len(prefix):]: (g.get("lora_A.weight"), g.get("lora_B.weight")) for m, g in groups.items()}
        if fmt == "diffusers" and METADATA_KEY in metadata:
            config = _settings(path, f"the {METADATA_KEY} metadata", metadata[METADATA_KEY], prefix)
        elif fmt == "peft" and (path.parent / PEFT_CONFIG).is_file():
            config_file = path.parent / PEFT_CONFIG
            if config_file.stat().st_size > MAX_CONFIG_BYTES:
                raise LoRAFileError(f"{config_file} is {config_file.stat().st_size:,} bytes; a PEFT adapter_config.json "
                                    "is a few hundred.")
            config = _settings(config_file, "the adapter config", config_file.read_bytes())
        elif fmt == "peft":
            warnings.warn(f"no {PEFT_CONFIG} next to {path.name}: assuming lora_alpha = r.", stacklevel=2)
    else:
        raise LoRAFileError(f"cannot tell the LoRA format of {path}: expected kohya keys ({KOHYA_PREFIX}..."
                            f".lora_down.weight), diffusers keys ({DIFFUSERS_PREFIX}....lora_A.weight) or PEFT "
                            f"keys ({PEFT_PREFIX}....lora_A.weight), found {', '.join(keys[:3]) or 'no tensors'}.")
    problems = [f"{m}: no {'A' if a is None else 'B'}" for m, (a, b) in pairs.items() if a is None or b is None]
    if problems or not pairs:
        raise LoRAFileError(f"{path} is not a LoRA lorakit can load: {'; '.join(problems[:5]) or 'no LoRA tensors'}.")
    if text:
        warnings.warn(f"{path.name}: skipping {len(text)} text-encoder tensors; lorakit loads UNet LoRAs only.",
                      stacklevel=2)
    tensors = _read_tensors(path, header, [k for pair in pairs.values() for k in pair] + list(alpha_keys.values()))
    alphas = {m: _alpha(path, k, tensors[k]) for m, k in alpha_keys.items()}
    return _assemble(path, fmt, tensors, pairs, alphas, config, metadata)


def _assemble(path, fmt, tensors, pairs, alphas, config, metadata) -> LoRAWeights:
    """Check that every module has a 2-D A and B of one shared rank, and one alpha; build the LoRAWeights."""
    problems = [f"{m}: A {tuple(tensors[a].shape)} and B {tuple(tensors[b].shape)} are not a 2-D pair "
                "(a convolution LoRA?)" for m, (a, b) in pairs.items() if
                tensors[a].ndim != 2 or tensors[b].ndim != 2 or tensors[a].shape[0] != tensors[b].shape[1]]
    if problems:
        raise LoRAFileError(f"{path} is not a LoRA lorakit can load: {'; '.join(problems[:5])}.")
    ranks = {tensors[a].shape[0] for a, _ in pairs.values()}
    alpha_values = {alphas.get(m, float(min(ranks))) for m in pairs} if alphas else set()  # kohya: none = r
    if len(ranks) > 1 or len(alpha_values) > 1 or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise LoRAFileError(f"{path} has per-module ranks {sorted(ranks)} or alphas {sorted(alpha_values)}; "
                            "lorakit (like diffusers) handles one r and one alpha for all modules.")
    if config.get("use_dora") or config.get("peft_type", "LORA") != "LORA":
        raise LoRAFileError(f"{path} is a {config.get('peft_type')} adapter (use_dora={config.get('use_dora')}); "
                            "lorakit loads plain LoRA only.")
    r = ranks.pop()
    if r == 0:
        raise LoRAFileError(f"{path} holds a LoRA of rank 0 (A of shape {tuple(tensors[pairs[next(iter(pairs))][0]].shape)}), "
                            "which changes nothing: the file is broken; save it again from the trained model.")
    # alpha: kohya's per-module tensor, else the config's lora_alpha, else alpha = r (kohya, diffusers and PEFT agree)
    where = "its .alpha tensors" if alpha_values else f"{'the ' + METADATA_KEY + ' metadata' if fmt == 'diffusers' else PEFT_CONFIG} lora_alpha"
    alpha = alpha_values.pop() if alpha_values else config.get("lora_alpha")
    alpha = float(r if alpha is None else alpha)
    if alpha == 0:
        raise LoRAFileError(f"{path}: alpha is 0 in {where}. Tools disagree on what that means (kohya's scripts and "
                            "AUTOMATIC1111 read it as alpha = r, diffusers and ComfyUI as a LoRA that does nothing), "
                            f"so lorakit refuses to guess: set it to {r} (alpha = r) or to the alpha it was trained with.")
    weights = LoRAWeights(fmt, r, alpha, {m: tensors[a].float() for m, (a, _) in pairs.items()},
                          {m: tensors[b].float() for m, (_, b) in pairs.items()},
                          bool(config.get("use_rslora", False)), metadata)
    check_weights(weights, str(path))
    return weights


def check_weights(weights: LoRAWeights, source: str = "the LoRA") -> None:
    """Refuse weights that no model should get: r not a positive integer, alpha not positive and finite,
    A or B not float, not 2-D of rank r, or not finite (``source`` names them in the message)."""
    if isinstance(weights.r, bool) or not isinstance(weights.r, int) or weights.r <= 0:
        raise LoRAFileError(f"{source}: r must be a positive integer, got r={weights.r!r}.")
    if isinstance(weights.alpha, bool) or not isinstance(weights.alpha, numbers.Real) \
            or not (math.isfinite(weights.alpha) and weights.alpha > 0):
        raise LoRAFileError(f"{source}: alpha must be a positive finite number, got alpha={weights.alpha!r}; "
                            f"alpha = r ({weights.r}) gives scaling 1.")
    if set(weights.A) != set(weights.B) or not weights.A:
        raise LoRAFileError(f"{source}: A and B name different modules, or none.")
    for name, (ab, tensors, dim) in [(m, t) for m in weights.A for t in (("A", weights.A, 0), ("B", weights.B, 1))]:
        t = tensors[name]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim != 2 or t.shape[dim] != weights.r:
            raise LoRAFileError(f"{source}: {ab} of {name} must be a 2-D float tensor with {weights.r} "
                                f"{'rows' if dim == 0 else 'columns'} (rank r), got "
                                f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}.")
        if not bool(torch.isfinite(t).all()):
            raise LoRAFileError(f"{source}: {ab} of {name} holds NaN or infinite values: the LoRA is broken.")


# --- using ----------------------------------------------------------------------------

def apply_lora(model: nn.Module, weights: LoRAWeights | str | Path, scale: float = 1.0) -> list[str]:
    """Inject LoRA layers for ``weights`` (unless the model already has exactly those) and load them.

    Everything is checked first (the weights, every module and shape, ``scale``); a refusal leaves the
    model exactly as it was, ``requires_grad`` flags included.
    """
    if isinstance(weights, LoRAWeights):
        check_weights(weights)
    else:
        weights = load_lora(weights)  # checked as it is read
    inject.check_scale(scale)  # before anything changes (set_lora_scale checks it at the end)
    modules = dict(model.named_modules())
    kohya = _kohya_names(model)  # for kohya names that load_lora could not resolve
    paths = {m: m if m in modules else kohya.get(m, m) for m in weights.modules}
    problems = []
    for m, p in paths.items():
        module = modules.get(p)
        base = module.base_layer if isinstance(module, lora.LoRALinear) else module
        n_in, n_out = weights.A[m].shape[1], weights.B[m].shape[0]
        if base is None:
            problems.append(f"{p}: no such module")
        elif not isinstance(base, nn.Linear):
            problems.append(f"{p}: a {type(base).__name__}, not a linear layer")
        elif (base.in_features, base.out_features) != (n_in, n_out):
            problems.append(f"{p}: file {n_in}->{n_out} vs model {base.in_features}->{base.out_features}")
        elif weights.r > min(n_in, n_out):
            problems.append(f"{p}: rank {weights.r} above min(in, out) = {min(n_in, n_out)}")
    if problems:
        raise LoRAFileError(f"the LoRA does not fit this {type(model).__name__}: {len(problems)} of {len(paths)} "
                            f"modules do not match (nothing was loaded): {'; '.join(problems[:5])}"
                            f"{' ...' if len(problems) > 5 else ''}")
    existing = dict(inject.lora_layers(model))
    if existing and (set(existing) != set(paths.values()) or any(layer.r != weights.r for layer in existing.values())):
        raise RuntimeError("the model already has LoRA layers on other modules or of another rank: "
                           "call inject.remove_lora(model) first.")
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        if not existing:
            inject.inject_lora(model, r=weights.r, alpha=weights.alpha, target_modules=list(paths.values()),
                               use_rslora=weights.use_rslora)
        inject.load_lora_state_dict(model, {f"{paths[m]}.lora_{ab}.weight": t[m] for m in paths
                                            for ab, t in (("A", weights.A), ("B", weights.B))})
    except BaseException:
        if not existing:
            inject.remove_lora(model)
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        raise
    for _, layer in inject.lora_layers(model):  # existing layers take the file's alpha too
        layer.alpha, layer.use_rslora = weights.alpha, weights.use_rslora
    inject.set_lora_scale(model, scale)
    return list(paths.values())


def convert(src: str | Path, dst: str | Path, to: str = "kohya", model: nn.Module | None = None) -> Path:
    """Rewrite the LoRA at ``src`` in format ``to`` at ``dst`` (``model``: see :func:`load_lora`)."""
    weights = load_lora(src, model)
    return save_weights(weights, dst, to, {"lorakit_converted_from": weights.format})


def describe(path: str | Path) -> str:
    """A few lines about a LoRA file, for ``lorakit info``: format, r, alpha, modules, metadata."""
    w = load_lora(path)
    kinds: dict[str, int] = {}
    for m in w.modules:
        kind = inject.module_kind(m)  # attn2.to_q, attn2.to_out.0, ff.net.0.proj
        kinds[kind] = kinds.get(kind, 0) + 1
    params = sum(w.A[m].numel() + w.B[m].numel() for m in w.modules)
    lines = [f"file: {path}", f"format: {w.format}",
             f"r: {w.r}  alpha: {w.alpha:g}  scaling: {w.scaling:g}{'  (rsLoRA)' if w.use_rslora else ''}",
             f"modules: {len(w.modules)} ({', '.join(f'{k} x{n}' for k, n in kinds.items())})",
             f"parameters: {params:,}"]
    if w.metadata:
        lines.append("metadata:")
        lines += [f"  {k}: {v if len(v) < 80 else v[:77] + '...'}" for k, v in sorted(w.metadata.items())]
    return "\n".join(lines)
