"""Putting LoRA into a UNet and taking it out again.

Introduced in notebooks/05_inject_lora.ipynb.

:func:`inject_lora` replaces chosen ``nn.Linear`` modules of a model (Stable Diffusion's
UNet) by :class:`lorakit.lora.LoRALinear` wrappers and freezes everything else, so only
``lora_A`` and ``lora_B`` train. The default target is cross-attention, the ``attn2`` of
every transformer block, where the text prompt enters the picture::

    down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q     (and to_k, to_v, to_out.0)

The rest is bookkeeping over all wrapped layers at once: the runtime ``scale``, merge and
unmerge, a PEFT-style state dict (``<path>.lora_A.weight``), and :func:`remove_lora`, which
puts the original ``nn.Linear`` modules back bit-exactly.

Convolutions are wrapped too (:class:`lorakit.lora.LoRAConv2d`): ``proj_in`` and ``proj_out``, the
1x1 convolutions around each transformer block that kohya's trainer adds by default (preset
``"kohya"``), or the 3x3 convolutions of the ResNet blocks (kohya's ``conv_dim``). CLIP's text
encoder takes LoRA the same way (preset ``"text"``: its attention and MLP, as kohya trains it).
``rank_pattern`` and ``alpha_pattern`` give some modules their own rank or alpha, as PEFT's do.

The bookkeeping functions (:func:`lora_layers`, :func:`set_lora_scale`, merge, the state dict,
:func:`remove_lora`) take a model or a whole pipeline: a pipeline's text-encoder layers are named
``text_encoder.<path>``, as diffusers names them in its LoRA files.

Left out: several adapters at once, grouped convolutions, embeddings. Files (kohya, diffusers, PEFT)
are ``lorakit.formats``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lorakit.lora import LoRAConv2d, LoRALayer, LoRALinear

# Name suffixes of the presets. "attn2" is cross-attention (text -> image), "attn1" self-attention,
# "ff" the feed-forward network after them in each transformer block (GEGLU in, linear out).
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")
# kohya's trainer (networks.lora) by default: every linear and 1x1 convolution of each Transformer2DModel
# (proj_in, the transformer block's attention and feed-forward, proj_out); in the text encoder, CLIP's
# attention and MLP.
TEXT_ENCODER = tuple(f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")) + (
    "mlp.fc1",
    "mlp.fc2",
)
TEXT_PREFIX = (
    "text_encoder."  # a pipeline's text-encoder modules, as diffusers' LoRA files name them
)
PRESETS = {
    "attn2": tuple(f"attn2.{p}" for p in PROJECTIONS),
    "attn": tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in PROJECTIONS),
    "attn2+ff": (*(f"attn2.{p}" for p in PROJECTIONS), *FEED_FORWARD),
    "kohya": (
        "proj_in",
        *(f"{a}.{p}" for a in ("attn1", "attn2") for p in PROJECTIONS),
        *FEED_FORWARD,
        "proj_out",
    ),
    "text": TEXT_ENCODER,
}


def components(model) -> list[tuple[str, nn.Module]]:
    """``(prefix, module)`` of what holds LoRA layers: a model itself (prefix ""), or a pipeline's UNet ("")
    and text encoder (``text_encoder.``)."""
    if isinstance(model, nn.Module):
        return [("", model)]
    unet, text_encoder = getattr(model, "unet", None), getattr(model, "text_encoder", None)
    if not isinstance(unet, nn.Module):
        raise TypeError(
            f"expected a model (nn.Module) or a Stable Diffusion pipeline, got a {type(model).__name__}."
        )
    return [("", unet)] + (
        [(TEXT_PREFIX, text_encoder)] if isinstance(text_encoder, nn.Module) else []
    )


def wrappable(module: nn.Module) -> bool:
    """Whether LoRA can wrap ``module``: an ``nn.Linear``, or an ``nn.Conv2d`` without groups."""
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
    )


def wrapper_for(module: nn.Module) -> type[LoRALayer]:
    """The LoRA layer class for ``module``: :class:`LoRAConv2d` for a convolution, else :class:`LoRALinear`."""
    return LoRAConv2d if isinstance(module, nn.Conv2d) else LoRALinear


def shape_of(module: nn.Module) -> tuple[int, int]:
    """``(in, out)`` of the matrix LoRA adapts: a convolution's input is ``in_channels * kh * kw``."""
    if isinstance(module, nn.Conv2d):
        return module.in_channels * module.kernel_size[0] * module.kernel_size[
            1
        ], module.out_channels
    return module.in_features, module.out_features


def _suffixes(target_modules: str | Sequence[str]) -> list[str]:
    if isinstance(target_modules, str):
        if target_modules not in PRESETS:
            raise ValueError(
                f"unknown target_modules preset {target_modules!r}: use one of "
                f"{', '.join(map(repr, PRESETS))} or a list of module name suffixes "
                "such as ['attn2.to_q', 'attn2.to_v']."
            )
        return list(PRESETS[target_modules])
    suffixes = list(target_modules)
    if not suffixes or not all(isinstance(s, str) and s for s in suffixes):
        raise ValueError(
            f"target_modules must be a preset name or a non-empty list of name suffixes, "
            f"got {target_modules!r}."
        )
    return suffixes


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def module_kind(path: str) -> str:
    """The short name of a module path, itself a suffix that matches it: ``attn2.to_q``, ``attn2.to_out.0`` and
    ``ff.net.0.proj`` inside a transformer block, else the last two name parts (three when the last is a number)."""
    parts = path.split(".")
    if "transformer_blocks" in parts[:-2]:
        return ".".join(parts[parts.index("transformer_blocks") + 2 :])
    return ".".join(parts[-3:] if parts[-1].isdigit() else parts[-2:])


def _linear_suffixes(model: nn.Module, limit: int = 12) -> list[str]:
    """A few suffixes (:func:`module_kind`) of the model's linear layers, for error messages."""
    found: list[str] = []
    for name, module in model.named_modules():
        suffix = module_kind(name)
        if isinstance(module, nn.Linear) and suffix not in found:
            found.append(suffix)
    return found[:limit]


def find_targets(model: nn.Module, target_modules: str | Sequence[str] = "attn2") -> list[str]:
    """Paths of the ``nn.Linear`` (and ``nn.Conv2d``) modules that ``target_modules`` selects, in model order.

    Every suffix must match at least one module, and every match must be a layer LoRA wraps (:func:`wrappable`).
    """
    suffixes = _suffixes(target_modules)
    modules = dict(model.named_modules())
    for suffix in suffixes:
        if not any(_matches(name, suffix) for name in modules):
            raise ValueError(
                f"target {suffix!r} matches no module of this {type(model).__name__}. Presets: "
                f"{', '.join(map(repr, PRESETS))}; suffixes of its linear layers include: "
                f"{', '.join(_linear_suffixes(model))}."
            )
    names = [name for name in modules if any(_matches(name, s) for s in suffixes)]
    not_linear = [f"{n} ({type(modules[n]).__name__})" for n in names if not wrappable(modules[n])]
    if not_linear:
        raise ValueError(
            f"lorakit wraps nn.Linear and nn.Conv2d layers only, but target_modules also selects "
            f"{', '.join(not_linear[:5])}{' ...' if len(not_linear) > 5 else ''}: "
            "choose longer suffixes that name linear layers."
        )
    return names


def lora_layers(model) -> Iterator[tuple[str, LoRALayer]]:
    """``(path, layer)`` for every LoRA layer (:class:`LoRALinear`, :class:`LoRAConv2d`) in ``model``, or in a
    pipeline's UNet and text encoder (``text_encoder.<path>``)."""
    for prefix, part in components(model):
        for name, module in part.named_modules():
            if isinstance(module, LoRALayer):
                yield prefix + name, module


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(
        model.get_submodule(parent_path), child, new
    )  # works for ModuleList items ("to_out.0") too


def lora_parameter_count(
    model: nn.Module, r: int, target_modules: str | Sequence[str] = "attn2"
) -> int:
    """Trainable parameters a rank-``r`` LoRA on ``target_modules`` would add: ``sum r * (in + out)``.

    Computed from module shapes, so it works on a model built on the ``meta`` device.
    """
    modules = dict(model.named_modules())
    return sum(r * sum(shape_of(modules[n])) for n in find_targets(model, target_modules))


def check_targets(
    model: nn.Module, r: int, target_modules: str | Sequence[str] = "attn2"
) -> list[str]:
    """The paths :func:`inject_lora` would wrap (:func:`find_targets`), refusing an ``r`` above a layer's min(in, out)."""
    names = find_targets(model, target_modules)
    modules = dict(model.named_modules())
    too_small = [
        f"{n} ({shape_of(modules[n])[0]}->{shape_of(modules[n])[1]})"
        for n in names
        if r > min(shape_of(modules[n]))
    ]
    if too_small:
        raise ValueError(
            f"r={r} does not fit {len(too_small)} targeted layers, whose min(in, out) is "
            f"smaller: {', '.join(too_small[:5])}. Use a smaller r or other target_modules."
        )
    return names


def _pattern(pattern: dict | None, name: str, default):
    """PEFT's ``rank_pattern``/``alpha_pattern``: the value of the first key that is ``name`` or a suffix of it."""
    return next((v for k, v in (pattern or {}).items() if _matches(name, k)), default)


def inject_lora(
    model: nn.Module,
    r: int = 4,
    alpha: float | None = None,
    target_modules: str | Sequence[str] = "attn2",
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
    **lora_kwargs,
) -> list[str]:
    """Wrap the targeted layers in ``LoRALinear`` (``LoRAConv2d`` for convolutions) and freeze everything else.

    ``rank_pattern`` and ``alpha_pattern`` (module path or name suffix -> value) give some modules another
    rank or alpha, as PEFT's. ``lora_kwargs`` (``dropout``, ``init``, ``use_rslora``) go to the layers.
    Returns the wrapped module paths. Nothing is changed if any check fails.
    """
    existing = [name for name, _ in lora_layers(model)]
    if existing:
        raise RuntimeError(
            f"this model already has {len(existing)} LoRA layers (e.g. {existing[0]}): "
            "call inject.remove_lora(model) first, or load new weights into them with "
            "inject.load_lora_state_dict."
        )
    names = find_targets(model, target_modules)
    ranks = {name: _pattern(rank_pattern, name, r) for name in names}
    if not rank_pattern:
        check_targets(model, r, target_modules)  # one message for every layer too small for r
    modules = dict(model.named_modules())
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:  # every layer is built (and its settings checked) before the model changes
        layers = {
            name: wrapper_for(modules[name])(
                modules[name],
                r=ranks[name],
                alpha=_pattern(alpha_pattern, name, alpha),
                **lora_kwargs,
            )
            for name in names
        }
    except BaseException:
        for name, p in model.named_parameters():  # LoRALinear freezes its base layer
            p.requires_grad_(flags[name])
        raise
    model.requires_grad_(False)
    for name, layer in layers.items():
        _replace(model, name, layer)
    return names


def _layers_or_raise(model) -> list[tuple[str, LoRALayer]]:
    layers = list(lora_layers(model))
    if not layers:
        raise RuntimeError("this model has no LoRA layers: call inject.inject_lora(model) first.")
    return layers


def check_scale(scale: float) -> None:
    """Refuse a LoRA scale that is not a finite number."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(
            f"the LoRA scale must be a finite number (0 off, 1 as trained), got {scale!r}."
        )


def set_lora_scale(model, scale: float) -> None:
    """Set the runtime multiplier of every LoRA layer (0 turns LoRA off, 1 is as trained)."""
    check_scale(scale)
    for name, layer in _layers_or_raise(model):
        if layer.merged:
            raise RuntimeError(
                f"{name} is merged: call inject.unmerge_lora(model) before changing the scale."
            )
        layer.scale = float(scale)


def merge_lora(model) -> None:
    """Fold every LoRA update into its base weight (inference without the extra matmuls)."""
    layers = _layers_or_raise(model)
    if any(layer.merged for _, layer in layers):
        raise RuntimeError(
            "some LoRA layers are already merged: call inject.unmerge_lora(model) first."
        )
    for _, layer in layers:
        layer.merge()


def unmerge_lora(model) -> None:
    """Restore every base weight bit-exactly (layers that are not merged are left alone)."""
    for _, layer in _layers_or_raise(model):
        if layer.merged:
            layer.unmerge()


def lora_state_dict(model) -> dict[str, torch.Tensor]:
    """The LoRA weights with PEFT-style keys: ``<path>.lora_A.weight`` (r, in), ``<path>.lora_B.weight`` (out, r)
    (convolutions: (r, in, kh, kw) and (out, r, 1, 1))."""
    state = {}
    for name, layer in _layers_or_raise(model):
        state[f"{name}.lora_A.weight"] = layer.lora_A.weight.detach()  # (r, in)
        state[f"{name}.lora_B.weight"] = layer.lora_B.weight.detach()  # (out, r)
    return state


@torch.no_grad()
def load_lora_state_dict(model, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy ``state_dict`` (keys as :func:`lora_state_dict` writes them) into the LoRA layers.

    Every key and shape is checked first; on any mismatch nothing is copied.
    """
    params = {
        k: v
        for name, layer in _layers_or_raise(model)
        for k, v in (
            (f"{name}.lora_A.weight", layer.lora_A.weight),
            (f"{name}.lora_B.weight", layer.lora_B.weight),
        )
    }
    problems = [f"missing {k}" for k in params if k not in state_dict]
    problems += [f"unexpected {k}" for k in state_dict if k not in params]
    problems += [
        f"{k}: file {tuple(v.shape)} vs model {tuple(params[k].shape)}"
        for k, v in state_dict.items()
        if k in params and v.shape != params[k].shape
    ]
    if problems:
        raise ValueError(
            f"the LoRA weights do not fit this model's LoRA layers ({len(problems)} problems, "
            f"nothing loaded): {'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}"
        )
    if any(layer.merged for _, layer in lora_layers(model)):
        raise RuntimeError(
            "LoRA layers are merged: call inject.unmerge_lora(model) before loading weights."
        )
    for key, value in state_dict.items():
        params[key].copy_(value)


def remove_lora(model) -> list[str]:
    """Put the original modules back (unmerging first), bit-exactly; returns their paths.

    Parameters stay frozen; call ``model.requires_grad_(True)`` for full fine-tuning.
    """
    names = []
    for prefix, part in components(model):
        for name, layer in list(lora_layers(part)):
            if layer.merged:
                layer.unmerge()
            _replace(part, name, layer.base_layer)
            names.append(prefix + name)
    return names
