"""The diffusers/PEFT spelling: ``unet.P.lora_A.weight``, the LoraConfig settings, PEFT's folder.

Introduced in notebooks/05_inject_lora.ipynb.

diffusers keeps the settings in the ``lora_adapter_metadata`` entry (without it, alpha = r); PEFT
writes a folder (``adapter_model.safetensors`` + ``adapter_config.json``, the text encoder's in
``text_encoder/``). Left out: the kohya spelling (``kohya``), which file is which (``load``).

  lorakit (LoRAWeights)  PEFT / diffusers                   kohya (P with _ for .)
  A[P]  (r, in)          P.lora_A.weight                    lora_unet_P.lora_down.weight
  B[P]  (out, r)         P.lora_B.weight                    lora_unet_P.lora_up.weight
  r, rank(P)             r, rank_pattern {P: its rank}      lora_down's rows (ss_network_dim)
  alpha, alpha_of(P)     lora_alpha, alpha_pattern {P: a}   lora_unet_P.alpha (ss_network_alpha)
  use_rslora             use_rslora                         none: folded into alpha
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from lorakit import targets
from lorakit.formats import architectures, lora_weights, safetensors_io

__all__ = [
    "DIFFUSERS_PREFIX",
    "DIFFUSERS_FILE",
    "TRANSFORMER_PREFIX",
    "MAIN_PREFIXES",
    "main_prefix",
    "PEFT_PREFIX",
    "PEFT_FILE",
    "PEFT_CONFIG",
    "PEFT_TEXT_FOLDER",
    "METADATA_KEY",
    "MAX_CONFIG_BYTES",
    "HALF_NAMES",
    "group_diffusers_keys",
    "diffusers_halves",
    "read_configs",
    "read_settings",
    "config_alpha",
    "peft_config",
    "diffusers_tensors",
    "peft_adapter",
]

DIFFUSERS_PREFIX, DIFFUSERS_FILE = "unet.", "pytorch_lora_weights.safetensors"
TRANSFORMER_PREFIX = "transformer."  # SD3's and Flux's transformer, where SD has its UNet
MAIN_PREFIXES = (DIFFUSERS_PREFIX, TRANSFORMER_PREFIX)
PEFT_PREFIX, PEFT_FILE, PEFT_CONFIG = (
    "base_model.model.",
    "adapter_model.safetensors",
    "adapter_config.json",
)
PEFT_TEXT_FOLDER = "text_encoder"  # a PEFT adapter for the text encoder, inside the UNet's folder
METADATA_KEY = "lora_adapter_metadata"  # diffusers' key for the LoraConfig JSON
MAX_CONFIG_BYTES = 2**20  # adapter_config.json
HALF_NAMES = ("lora_A", "lora_B")
SUFFIXES = ("lora_A.weight", "lora_B.weight")
TEXT_PREFIX, TEXT_MODEL = lora_weights.TEXT_PREFIX, lora_weights.TEXT_MODEL
TEXT_PREFIXES = lora_weights.TEXT_PREFIXES


def main_prefix(weights: lora_weights.LoRAWeights) -> str:
    """The prefix of the non-text modules' keys: ``transformer.`` for SD3 and Flux, else
    ``unet.``."""
    arch = architectures.of_weights(weights)
    return TRANSFORMER_PREFIX if arch in architectures.TRANSFORMERS else DIFFUSERS_PREFIX


def _text_prefix(module: str) -> str:
    """The text encoder a module path belongs to (``""``: the UNet or transformer)."""
    return next((p for p in TEXT_PREFIXES if module.startswith(p)), "")


# --- reading ---------------------------------------------------------------------------------


def group_diffusers_keys(keys, fmt: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """A diffusers (``fmt`` "diffusers") or PEFT file's keys by module, ``{name: {suffix: key}}``,
    and the keys that are not plain LoRA (other endings, other prefixes)."""
    prefixes = (PEFT_PREFIX,) if fmt == "peft" else (*MAIN_PREFIXES, *TEXT_PREFIXES)
    groups, others = safetensors_io.group_keys(keys, SUFFIXES)
    others += [k for m, g in groups.items() if not m.startswith(prefixes) for k in g.values()]
    return groups, others


def _module_path(name: str, fmt: str, peft_prefix: str) -> str:
    if fmt == "peft":
        return lora_weights.canonical(peft_prefix + name[len(PEFT_PREFIX) :])
    if name.startswith(TEXT_PREFIXES):
        return lora_weights.canonical(name)
    return name.split(".", 1)[1]  # without unet. or transformer.


def diffusers_halves(groups, fmt: str, peft_prefix: str = "") -> dict:
    """``{module path: (lora_A key, lora_B key)}`` (None for a half that is missing);
    ``peft_prefix``: the prefix of a PEFT text-encoder adapter's paths."""
    return {
        _module_path(m, fmt, peft_prefix): (g.get("lora_A.weight"), g.get("lora_B.weight"))
        for m, g in groups.items()
    }


def read_configs(path: Path, fmt: str, metadata: dict, peft_prefix: str = "") -> dict[str, dict]:
    """The LoraConfig fields of each component (``""`` the UNet, ``"text_encoder."``): diffusers'
    metadata entry, or the PEFT folder's adapter_config.json (none: a warning, alpha = r)."""
    configs = {}
    if fmt == "diffusers" and METADATA_KEY in metadata:
        text = metadata[METADATA_KEY]
        for part, prefix in (("", DIFFUSERS_PREFIX), *((p, p) for p in TEXT_PREFIXES)):
            configs[part] = read_settings(path, f"the {METADATA_KEY} metadata", text, prefix)
        if not configs[""]:  # SD3's and Flux's: transformer.r, transformer.lora_alpha
            configs[""] = read_settings(
                path, f"the {METADATA_KEY} metadata", text, TRANSFORMER_PREFIX
            )
    elif fmt == "peft" and (path.parent / PEFT_CONFIG).is_file():
        config_file = path.parent / PEFT_CONFIG
        if config_file.stat().st_size > MAX_CONFIG_BYTES:
            raise lora_weights.LoRAFileError(
                f"{config_file} is {config_file.stat().st_size:,} bytes; a PEFT "
                "adapter_config.json is a few hundred."
            )
        configs[peft_prefix] = read_settings(
            config_file, "the adapter config", config_file.read_bytes()
        )
    elif fmt == "peft":
        warnings.warn(
            f"no {PEFT_CONFIG} next to {path.name}: assuming lora_alpha = r.", stacklevel=5
        )  # stacklevel: the caller of load_lora
    return configs


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


SETTING_RULES = {  # what each LoraConfig field read from a file must be
    "r": (
        lambda v: _is_number(v) and math.isfinite(v) and v == int(v) and v > 0,
        "a positive integer",
    ),
    "lora_alpha": (lambda v: _is_number(v) and math.isfinite(v), "a finite number"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "use_dora": (lambda v: isinstance(v, bool), "true or false"),
    "peft_type": (lambda v: isinstance(v, str), "a string"),
    "rank_pattern": (lambda v: isinstance(v, dict), "an object"),
    "alpha_pattern": (lambda v: isinstance(v, dict), "an object"),
}


def read_settings(path: Path, where: str, text: str, prefix: str = "") -> dict:
    """The LoRA settings in a JSON object (diffusers' metadata entry, PEFT's adapter_config.json),
    checked: ``r`` a positive integer, ``lora_alpha`` a positive finite number,
    ``use_rslora``/``use_dora`` booleans, the patterns objects. Keys are returned without
    ``prefix``; the messages name them as the file has them."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise lora_weights.LoRAFileError(
            f"{path}: {where} is not valid JSON ({error}); rewrite the file with "
            "`lorakit convert` or the tool that made it."
        ) from None
    if not isinstance(value, dict):
        raise lora_weights.LoRAFileError(
            f"{path}: {where} is a JSON {type(value).__name__}, not an object of LoRA settings "
            "(r, lora_alpha, ...)."
        )
    config = {k[len(prefix) :]: v for k, v in value.items() if k.startswith(prefix)}
    for key, (ok, what) in SETTING_RULES.items():
        if config.get(key) is not None and not ok(config[key]):
            raise lora_weights.LoRAFileError(
                f"{path}: {where} has {prefix}{key} = {json.dumps(config[key])[:60]}; it must be "
                f"{what}."
            )
    return config


def config_alpha(configs: dict[str, dict], fmt: str, module: str) -> tuple[object, str]:
    """A module's alpha as the settings give it (its ``alpha_pattern`` entry, else
    ``lora_alpha``, else None: alpha = r), and where it was read, for a message."""
    part = _text_prefix(module)
    config = configs.get(part, {})
    name = module[len(part) :]  # patterns match it as a suffix
    alpha = targets.pattern_value(config.get("alpha_pattern"), name, config.get("lora_alpha"))
    source = f"the {METADATA_KEY} metadata" if fmt == "diffusers" else PEFT_CONFIG
    return alpha, f"{source} lora_alpha"


# --- writing ---------------------------------------------------------------------------------


def _peft_name(path: str, strip: str) -> str:
    """A module's name in a PEFT adapter: without ``strip`` and CLIP's ``text_model.`` (a suffix
    that CLIP matches in any transformers version)."""
    return path[len(strip) :].removeprefix(TEXT_MODEL)


def peft_config(weights: lora_weights.LoRAWeights, paths: list[str], strip: str = "") -> dict:
    """The LoraConfig fields of ``paths`` (names without ``strip``): the commonest rank and alpha,
    patterns for the rest."""
    part = weights.subset(paths)
    return {
        "r": part.r,
        "lora_alpha": part.alpha,
        "use_rslora": weights.use_rslora,
        "target_modules": [_peft_name(m, strip) for m in paths],
        "rank_pattern": {
            _peft_name(m, strip): part.rank(m) for m in paths if part.rank(m) != part.r
        },
        "alpha_pattern": {
            _peft_name(m, strip): part.alpha_of(m) for m in paths if part.alpha_of(m) != part.alpha
        },
    }


def diffusers_tensors(weights: lora_weights.LoRAWeights) -> tuple[dict, dict[str, str]]:
    """The tensors and metadata of a diffusers file: the settings packed as diffusers'
    ``save_lora_weights`` packs them (``"unet.r"``, ``"text_encoder.r"``, ...)."""
    main = main_prefix(weights)
    parts = [(main, [m for m in weights.modules if not _text_prefix(m)], "")]
    parts += [(p, [m for m in weights.modules if _text_prefix(m) == p], p) for p in TEXT_PREFIXES]
    packed = {}
    for prefix, paths, strip in parts:
        if paths:
            packed |= {prefix + k: v for k, v in peft_config(weights, paths, strip).items()}
    tensors = {
        (k if k.startswith(TEXT_PREFIXES) else main + k): v for k, v in weights.state_dict().items()
    }
    return tensors, {"format": "pt", METADATA_KEY: json.dumps(packed, sort_keys=True)}


def peft_adapter(
    weights: lora_weights.LoRAWeights, paths: list[str], strip: str = ""
) -> tuple[dict, dict]:
    """The tensors and adapter_config.json of one PEFT adapter folder: ``paths`` without
    ``strip``."""
    config = peft_config(weights, paths, strip) | {
        "peft_type": "LORA",
        "task_type": None,
        "bias": "none",
        "lora_dropout": 0.0,
        "fan_in_fan_out": False,
        "inference_mode": True,
        "base_model_name_or_path": None,
    }
    tensors = {
        PEFT_PREFIX + _peft_name(p, strip) + f".lora_{ab}.weight": t[p]
        for p in paths
        for ab, t in (("A", weights.A), ("B", weights.B))
    }
    return tensors, config
