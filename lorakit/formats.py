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
unpickling runs code. Files are written atomically (a temporary file, then ``os.replace``).

Left out: text-encoder LoRAs (skipped with a warning), convolution LoRAs, LoHa/LoKr/DoRA,
per-module ranks or alphas, SDXL's key layout. The wrapping itself is ``lorakit.inject``.
"""

from __future__ import annotations

import functools
import json
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

def _save_safetensors(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}
    files.write_atomically(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=metadata))


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
    files.write_atomically(path / PEFT_CONFIG, lambda tmp: tmp.write_text(text))
    return path


def save_lora(model: nn.Module, path: str | Path, format: str = "kohya",
              metadata: dict[str, str] | None = None) -> Path:
    """Save the LoRA layers of ``model`` as a kohya, diffusers or PEFT file."""
    return save_weights(from_model(model), path, format, metadata)


# --- reading ---------------------------------------------------------------------------

def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, refusing pickles and broken files with a clear message."""
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}.")
    refuse = (f"{path} is a pickle-based checkpoint, which can run arbitrary code when loaded; lorakit "
              "reads .safetensors only. Ask for a .safetensors version of this LoRA, or convert it yourself "
              "in a sandbox with code you trust.")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(refuse)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if not (len(head) == 9 and header_len <= size - 8 and head[8:9] == b"{"):
        if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
            raise ValueError(refuse)  # a torch.save zip or a raw pickle, whatever its name
        why = (f"{size} bytes is too short for a header" if header_len < 0
               else f"its header claims {header_len} bytes but the file has {size} (truncated?)"
               if header_len > size - 8 else "its header is not JSON")
        raise ValueError(f"{path} is not a valid safetensors file: {why}.")
    try:
        with safetensors.safe_open(str(path), "pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a valid safetensors file: {error}.") from error


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


def _unsupported(path: Path, keys: list[str], what: str) -> ValueError:
    return ValueError(f"{path} has {len(keys)} keys that lorakit cannot read as {what} "
                      f"(e.g. {', '.join(keys[:5])}); it reads plain LoRA on linear layers only.")


def load_lora(path: str | Path, model: nn.Module | None = None) -> LoRAWeights:
    """Read a kohya/diffusers file or a PEFT folder; the format is detected from keys and layout.

    kohya names (``lora_unet_down_blocks_0_...``) are mapped back to module paths through the
    module names of ``model``, or of SD 1.5's UNet (the tiny SD's are the same) by default.
    """
    path = Path(path)
    if path.is_dir():
        for name in (PEFT_FILE, DIFFUSERS_FILE):
            if (path / name).is_file():
                return load_lora(path / name, model)
        raise FileNotFoundError(f"{path} holds neither {PEFT_FILE} (PEFT) nor {DIFFUSERS_FILE} (diffusers).")
    tensors, metadata = _read_safetensors(path)
    text = [k for k in tensors if k.startswith(TEXT_PREFIXES)]
    keys = [k for k in tensors if k not in text]
    if text and not keys:
        raise ValueError(f"{path} holds only text-encoder LoRA weights; lorakit loads UNet LoRAs only.")
    if text:
        warnings.warn(f"{path.name}: skipping {len(text)} text-encoder tensors; lorakit loads UNet LoRAs only.",
                      stacklevel=2)
    config: dict = {}
    alphas: dict[str, float] = {}
    if any(k.startswith(KOHYA_PREFIX) for k in keys):
        fmt = "kohya"
        groups, others = _split(keys, ("lora_down.weight", "lora_up.weight", "alpha"))
        if others:
            raise _unsupported(path, others, "kohya LoRA")
        known = _kohya_names(model) if model is not None else _sd_kohya_names()
        pairs = {known.get(m, m): (g.get("lora_down.weight"), g.get("lora_up.weight")) for m, g in groups.items()}
        alphas = {known.get(m, m): float(tensors[g["alpha"]]) for m, g in groups.items() if "alpha" in g}
    elif any(k.startswith((PEFT_PREFIX, DIFFUSERS_PREFIX)) for k in keys):
        peft = any(k.startswith(PEFT_PREFIX) for k in keys)
        fmt, prefix = ("peft", PEFT_PREFIX) if peft else ("diffusers", DIFFUSERS_PREFIX)
        groups, others = _split(keys, ("lora_A.weight", "lora_B.weight"))
        others += [m for m in groups if not m.startswith(prefix)]
        if others:
            raise _unsupported(path, others, f"{fmt} LoRA")
        pairs = {m[len(prefix):]: (g.get("lora_A.weight"), g.get("lora_B.weight")) for m, g in groups.items()}
        if fmt == "diffusers" and METADATA_KEY in metadata:
            packed = json.loads(metadata[METADATA_KEY])
            config = {k[len(prefix):]: v for k, v in packed.items() if k.startswith(prefix)}
        elif fmt == "peft" and (path.parent / PEFT_CONFIG).is_file():
            config = json.loads((path.parent / PEFT_CONFIG).read_text())
        elif fmt == "peft":
            warnings.warn(f"no {PEFT_CONFIG} next to {path.name}: assuming lora_alpha = r.", stacklevel=2)
    else:
        raise ValueError(f"cannot tell the LoRA format of {path}: expected kohya keys ({KOHYA_PREFIX}..."
                         f".lora_down.weight), diffusers keys ({DIFFUSERS_PREFIX}....lora_A.weight) or PEFT "
                         f"keys ({PEFT_PREFIX}....lora_A.weight), found {', '.join(keys[:3]) or 'no tensors'}.")
    return _assemble(path, fmt, tensors, pairs, alphas, config, metadata)


def _assemble(path, fmt, tensors, pairs, alphas, config, metadata) -> LoRAWeights:
    """Check that every module has a 2-D A and B of one shared rank, and one alpha; build the LoRAWeights."""
    problems = [f"{m}: no {'A' if a is None else 'B'}" for m, (a, b) in pairs.items() if a is None or b is None]
    problems += [f"{m}: A {tuple(tensors[a].shape)} and B {tuple(tensors[b].shape)} are not a 2-D pair "
                 "(a convolution LoRA?)" for m, (a, b) in pairs.items() if a and b and
                 (tensors[a].ndim != 2 or tensors[b].ndim != 2 or tensors[a].shape[0] != tensors[b].shape[1])]
    if problems or not pairs:
        raise ValueError(f"{path} is not a LoRA lorakit can load: {'; '.join(problems[:5]) or 'no LoRA tensors'}.")
    ranks = {tensors[a].shape[0] for a, _ in pairs.values()}
    alpha_values = {alphas.get(m) or float(min(ranks)) for m in pairs} if alphas else set()  # kohya: none = r
    if len(ranks) > 1 or len(alpha_values) > 1 or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{path} has per-module ranks {sorted(ranks)} or alphas {sorted(alpha_values)}; "
                         "lorakit (like diffusers) handles one r and one alpha for all modules.")
    if config.get("use_dora") or config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path} is a {config.get('peft_type')} adapter (use_dora={config.get('use_dora')}); "
                         "lorakit loads plain LoRA only.")
    r = ranks.pop()
    alpha = next(iter(alpha_values), None) or config.get("lora_alpha") or r  # kohya, then config, then alpha = r
    return LoRAWeights(fmt, r, float(alpha), {m: tensors[a].float() for m, (a, _) in pairs.items()},
                       {m: tensors[b].float() for m, (_, b) in pairs.items()},
                       bool(config.get("use_rslora", False)), metadata)


# --- using ----------------------------------------------------------------------------

def apply_lora(model: nn.Module, weights: LoRAWeights | str | Path, scale: float = 1.0) -> list[str]:
    """Inject LoRA layers for ``weights`` (unless the model already has exactly those) and load them.

    Every module and shape is checked first; on any mismatch the model is left untouched.
    """
    weights = weights if isinstance(weights, LoRAWeights) else load_lora(weights)
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
    if problems:
        raise ValueError(f"the LoRA does not fit this {type(model).__name__}: {len(problems)} of {len(paths)} "
                         f"modules do not match (nothing was loaded): {'; '.join(problems[:5])}"
                         f"{' ...' if len(problems) > 5 else ''}")
    existing = dict(inject.lora_layers(model))
    if existing:
        if set(existing) != set(paths.values()) or any(layer.r != weights.r for layer in existing.values()):
            raise RuntimeError("the model already has LoRA layers on other modules or of another rank: "
                               "call inject.remove_lora(model) first.")
    else:
        inject.inject_lora(model, r=weights.r, alpha=weights.alpha, target_modules=list(paths.values()),
                           use_rslora=weights.use_rslora)
    inject.load_lora_state_dict(model, {f"{paths[m]}.lora_{ab}.weight": t[m] for m in paths
                                        for ab, t in (("A", weights.A), ("B", weights.B))})
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
