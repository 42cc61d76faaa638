"""The kohya spelling of a LoRA (A1111, ComfyUI, kohya's sd-scripts), read and written.

Introduced in notebooks/05_inject_lora.ipynb.

``lora_unet_<P with . as _>.lora_down.weight`` is A, ``.lora_up.weight`` B, and a 0-dim ``.alpha``
per module; the text encoder's modules are ``lora_te_<path>`` (``lora_te1_`` in some tools);
``ss_*`` metadata, all strings. Where the dots were is not guessed: kohya names are mapped back
to module paths through a model's real module names (SD 1.5's by default). lorakit reads any
alpha per module and writes one value for all, folding a module's other alpha into its
``lora_up`` (diffusers misreads per-module alphas there).

Left out: which file is which spelling (``load``), the diffusers/PEFT spelling (``diffusers``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lorakit import inject
from lorakit.formats import architectures, default_names, ldm_layout, lora_weights, safetensors_io

__all__ = [
    "KOHYA_PREFIX",
    "KOHYA_TEXT_PREFIXES",
    "KOHYA_OTHER_PREFIXES",
    "KOHYA_PREFIXES",
    "HALF_NAMES",
    "FUSED",
    "BASE_VERSIONS",
    "kohya_names_of",
    "kohya_name",
    "kohya_name_map",
    "resolve_name",
    "group_kohya_keys",
    "kohya_halves",
    "alpha_value",
    "kohya_tensors",
]

KOHYA_PREFIX = "lora_unet_"
KOHYA_TEXT_PREFIXES = ("lora_te_", "lora_te1_")  # SD 1.x/2.x's one text encoder (te1: some tools)
# SDXL's (and SD3's) second text encoder, SD3's third (T5); SD3's and Flux's transformer in
# some tools
KOHYA_OTHER_PREFIXES = {"lora_te2_": "text_encoder_2.", "lora_te3_": "text_encoder_3."}
KOHYA_PREFIXES = (KOHYA_PREFIX, *KOHYA_TEXT_PREFIXES, *KOHYA_OTHER_PREFIXES, "lora_transformer_")
HALF_NAMES = ("lora_down", "lora_up")  # A and B
FUSED = (
    "_qkv",
    "_linear1",
)  # kohya's Flux and SD3 modules that diffusers splits in three (or four)
BASE_VERSIONS = {  # ss_base_model_version, as kohya's trainers write it
    architectures.SD: "sd_v1",
    architectures.SDXL: "sdxl_base_v1-0",
    architectures.SD3: "sd3",
    architectures.FLUX: "flux1",
}
SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")
TEXT_PREFIX = lora_weights.TEXT_PREFIX


def kohya_names_of(path: str) -> list[str]:
    """The kohya keys of a module path: ``lora_unet_<path with _>``; a text-encoder module's
    ``lora_te_<path>`` and the ``lora_te1_`` some tools write. A kohya name that no model resolved
    is its own."""
    if path.startswith(KOHYA_PREFIXES):
        return [path]
    for kohya, prefix in KOHYA_OTHER_PREFIXES.items():
        if path.startswith(prefix):
            return [kohya + path[len(prefix) :].replace(".", "_")]
    if path.startswith(TEXT_PREFIX):
        return [kp + path[len(TEXT_PREFIX) :].replace(".", "_") for kp in KOHYA_TEXT_PREFIXES]
    return [KOHYA_PREFIX + path.replace(".", "_")]


def kohya_name(path: str) -> str:
    """The kohya key lorakit writes for a module path (the first of :func:`kohya_names_of`)."""
    return kohya_names_of(path)[0]


def kohya_name_map(model, arch: str | None = None) -> dict[str, str]:
    """kohya name -> module path, from the model's real module names (no guessing where the dots
    were): a UNet's, or a pipeline's UNet and text encoders (``text_encoder.<path>``,
    ``text_encoder_2.<path>``); a UNet alone takes its architecture's text encoders' (SD 1.5's,
    SDXL's). With no model, those of ``arch`` (default SD 1.5), built on meta."""
    if model is None:
        paths = default_names.module_paths(arch or architectures.SD)
        return _names_of(paths, arch)
    parts = inject.components(model)
    paths = [
        lora_weights.canonical(prefix + n)
        for prefix, part in parts
        for n, _ in part.named_modules()
        if n
    ]
    names = _names_of(paths, architectures.of_model(model))
    if len(parts) == 1:
        texts = default_names.module_paths(architectures.of_model(model) or architectures.SD)
        text_paths = [p for p in texts if p.startswith(lora_weights.TEXT_PREFIXES)]
        names = {name: path for path in text_paths for name in kohya_names_of(path)} | names
    return names


def _names_of(paths, arch: str | None) -> dict[str, str]:
    """kohya name -> path; a transformer's paths also as ComfyUI's ``lora_transformer_<path>``."""
    names = {name: path for path in paths for name in kohya_names_of(path)}
    if arch in architectures.TRANSFORMERS:
        names |= {"lora_transformer_" + p.replace(".", "_"): p for p in paths}
    return names


def resolve_name(name: str, known: dict[str, str], model=None) -> str:
    """A kohya name's module path through ``known`` (:func:`kohya_name_map`), the original LDM
    layout's names through diffusers' (``ldm_layout``); a name no model has is kept."""
    main = architectures.main_part(model) if model is not None else None
    per_block = getattr(getattr(main, "config", None), "layers_per_block", 2)
    per_block = per_block if isinstance(per_block, int) else 2
    return known.get(name) or known.get(ldm_layout.diffusers_name(name, per_block), name)


def group_kohya_keys(keys) -> tuple[dict[str, dict[str, str]], list[str]]:
    """A kohya file's keys by module, ``{kohya name: {suffix: key}}``, and the keys that are not
    plain kohya LoRA (other endings, other prefixes)."""
    groups, others = safetensors_io.group_keys(keys, SUFFIXES)
    others += [k for m, g in groups.items() if not m.startswith(KOHYA_PREFIXES) for k in g.values()]
    return groups, others


def kohya_halves(groups, model=None, arch: str | None = None) -> tuple[dict, dict[str, str]]:
    """``{module path: (lora_down key, lora_up key)}`` (None for a half that is missing) and
    ``{module path: its alpha's key}``; names resolved through ``model`` (default: the
    architecture ``arch``'s real model, SD 1.5's if not given)."""
    known = kohya_name_map(model, arch)
    paths = {m: resolve_name(m, known, model) for m in groups}
    halves = {
        paths[m]: (g.get("lora_down.weight"), g.get("lora_up.weight")) for m, g in groups.items()
    }
    alpha_keys = {paths[m]: g["alpha"] for m, g in groups.items() if "alpha" in g}
    return halves, alpha_keys


def alpha_value(path: Path, key: str, tensor: torch.Tensor) -> float:
    """A kohya ``.alpha`` tensor as a number: one element, finite (checked when read)."""
    if tensor.numel() != 1:
        raise lora_weights.LoRAFileError(
            f"{path}: {key} holds {tensor.numel()} values of shape {tuple(tensor.shape)}; a kohya "
            "alpha is one number."
        )
    return float(tensor.reshape(()))


def _kohya_metadata(
    weights: lora_weights.LoRAWeights, alpha: float, output_name: str
) -> dict[str, str]:
    """The ``ss_*`` metadata kohya's trainer writes (LoCon's ``conv_dim`` in the network args)."""
    uniform = all(weights.rank(p) == weights.r for p in weights.modules)
    kohya = {
        "ss_network_dim": str(weights.r) if uniform else "Dynamic",
        "ss_network_alpha": f"{alpha:g}",
        "ss_network_module": "networks.lora",
        "ss_base_model_version": BASE_VERSIONS.get(architectures.of_weights(weights), "sd_v1"),
        "ss_v2": "False",
        "ss_output_name": output_name,
        "ss_text_encoder_lr": "" if weights.text_modules else "0",
    }
    convs = [m for m in weights.modules if weights.kind(m) not in ("linear", "conv 1x1")]
    if convs:  # kohya's LoCon: conv_dim and conv_alpha in the network arguments
        kohya["ss_network_args"] = json.dumps(
            {"conv_dim": str(weights.rank(convs[0])), "conv_alpha": f"{alpha:g}"}
        )
    return kohya


def kohya_tensors(
    weights: lora_weights.LoRAWeights, output_name: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and ``ss_*`` metadata of a kohya file of ``weights`` (``output_name``: the file's
    stem)."""
    # kohya knows only alpha / r (rsLoRA folds into alpha). One alpha value for every module: a
    # module whose alpha differs has the ratio folded into its lora_up, because diffusers misreads
    # per-module alphas in kohya files (its per-module ranks it reads right); every tool then
    # applies the same delta W.
    alphas = {p: weights.scaling_of(p) * weights.rank(p) for p in weights.modules}
    alpha = lora_weights.most_common(alphas.values())
    tensors = {}
    dit = architectures.of_weights(weights) in architectures.TRANSFORMERS
    for p in weights.modules:
        own = p.startswith((*KOHYA_PREFIXES, *lora_weights.TEXT_PREFIXES))
        # a transformer's module paths as ComfyUI reads them (lora_transformer_<path with _>)
        name = "lora_transformer_" + p.replace(".", "_") if dit and not own else kohya_name(p)
        up = weights.B[p] if alphas[p] == alpha else weights.B[p] * (alphas[p] / alpha)
        tensors |= {
            f"{name}.lora_down.weight": weights.A[p],
            f"{name}.lora_up.weight": up,
            f"{name}.alpha": torch.tensor(alpha),
        }  # 0-dim
    return tensors, _kohya_metadata(weights, alpha, output_name)
