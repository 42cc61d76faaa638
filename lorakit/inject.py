"""Putting LoRA into a UNet (and a text encoder) and taking it out again.

Introduced in notebooks/05_inject_lora.ipynb.

:func:`inject_lora` replaces the targeted layers (``lorakit.targets``; by default the ``to_q``,
``to_k``, ``to_v`` and ``to_out.0`` of every cross-attention ``attn2``) by
:class:`lorakit.lora.LoRALinear` (or :class:`lorakit.lora.LoRAConv2d`) wrappers and freezes
everything else, so only ``lora_A`` and ``lora_B`` train. The rest is bookkeeping over all wrapped
layers at once: the runtime ``scale``, merge and unmerge, a PEFT-style state dict
(``<path>.lora_A.weight``), and :func:`remove_lora`, which puts the original modules back
bit-exactly. They take a model or a whole pipeline, whose text-encoder layers are named
``text_encoder.<path>`` as in diffusers' LoRA files.

Left out: several adapters at once, grouped convolutions, embeddings. Files (kohya, diffusers,
PEFT) are ``lorakit.formats``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from lorakit.language import say
from lorakit.lora import LoRAConv2d, LoRALayer, LoRALinear
from lorakit.targets import (
    FEED_FORWARD,
    PRESETS,
    PROJECTIONS,
    TEXT_ENCODER,
    TEXT_PREFIX,
    check_targets,
    find_targets,
    lora_parameter_count,
    matches_suffix,
    module_kind,
    pattern_value,
    shape_of,
    target_suffixes,
    wrappable,
)

__all__ = [
    # which layers (lorakit.targets), re-exported so that inject.PRESETS etc. keep working
    "FEED_FORWARD",
    "PRESETS",
    "PROJECTIONS",
    "TEXT_ENCODER",
    "TEXT_PREFIX",
    "check_targets",
    "find_targets",
    "lora_parameter_count",
    "matches_suffix",
    "module_kind",
    "pattern_value",
    "shape_of",
    "target_suffixes",
    "wrappable",
    # putting LoRA in and taking it out
    "check_scale",
    "components",
    "inject_lora",
    "keep_requires_grad",
    "load_lora_state_dict",
    "lora_layers",
    "lora_weights",
    "lora_state_dict",
    "merge_lora",
    "remove_lora",
    "set_lora_scale",
    "unmerge_lora",
    "wrapper_for",
]


def components(model) -> list[tuple[str, nn.Module]]:
    """``(prefix, module)`` of what holds LoRA layers: a model itself (prefix ""), or a pipeline's
    UNet or transformer ("") and text encoders (``text_encoder.``, SDXL's ``text_encoder_2.``)."""
    if isinstance(model, nn.Module):
        return [("", model)]
    main = getattr(model, "unet", None) or getattr(model, "transformer", None)
    if not isinstance(main, nn.Module):
        raise TypeError(
            "expected a model (nn.Module) or a Stable Diffusion pipeline, "
            f"got a {type(model).__name__}."
        )
    texts = [(f"{n}.", getattr(model, n, None)) for n in ("text_encoder", "text_encoder_2")]
    return [("", main)] + [(p, t) for p, t in texts if isinstance(t, nn.Module)]


def wrapper_for(module: nn.Module) -> type[LoRALayer]:
    """The LoRA layer class for ``module``: :class:`LoRAConv2d` for a convolution, else
    :class:`LoRALinear`."""
    return LoRAConv2d if isinstance(module, nn.Conv2d) else LoRALinear


def lora_layers(model) -> Iterator[tuple[str, LoRALayer]]:
    """``(path, layer)`` for every LoRA layer (:class:`LoRALinear`, :class:`LoRAConv2d`) in
    ``model``, or in a pipeline's UNet and text encoder (``text_encoder.<path>``)."""
    for prefix, part in components(model):
        for name, module in part.named_modules():
            if isinstance(module, LoRALayer):
                yield prefix + name, module


def lora_weights(model) -> list[torch.Tensor]:
    """Every ``lora_A`` and ``lora_B`` weight of ``model``, in module order: what a LoRA trains."""
    return [
        p for _, layer in lora_layers(model) for p in (layer.lora_A.weight, layer.lora_B.weight)
    ]


@contextmanager
def keep_requires_grad(*modules: nn.Module, on_error_only: bool = False) -> Iterator[None]:
    """Snapshot ``requires_grad`` of every parameter of ``modules``; put it back when the block
    ends, whether it returns or raises (with ``on_error_only=True``: only when it raises).

    Parameters are remembered as objects, so the flags follow them when LoRA wraps or unwraps their
    layer; parameters added inside the block (a new ``lora_A``) are left as they are.
    """
    saved = [(p, p.requires_grad) for module in modules for p in module.parameters()]

    def restore() -> None:
        for p, flag in saved:
            p.requires_grad_(flag)

    try:
        yield
    except BaseException:
        restore()
        raise
    if not on_error_only:
        restore()


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path), child, new)  # ModuleList items ("to_out.0") too


def inject_lora(
    model: nn.Module,
    r: int = 4,
    alpha: float | None = None,
    target_modules: str | Sequence[str] = "attn2",
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
    **lora_kwargs,
) -> list[str]:
    """Wrap the targeted layers in ``LoRALinear`` (``LoRAConv2d`` for convolutions) and freeze
    everything else.

    ``rank_pattern`` and ``alpha_pattern`` (module path or name suffix -> value) give some modules
    another rank or alpha, as PEFT's. ``lora_kwargs`` (``dropout``, ``init``, ``use_rslora``) go to
    the layers. Returns the wrapped module paths. Nothing is changed if any check fails.
    """
    existing = [name for name, _ in lora_layers(model)]
    if existing:
        raise RuntimeError(
            f"this model already has {len(existing)} LoRA layers (e.g. {existing[0]}): "
            "call inject.remove_lora(model) first, or load new weights into them with "
            "inject.load_lora_state_dict."
        )
    names = find_targets(model, target_modules)
    ranks = {name: pattern_value(rank_pattern, name, r) for name in names}
    if not rank_pattern:
        check_targets(model, r, target_modules)  # one message for every layer too small for r
    modules = dict(model.named_modules())
    # Every layer is built (and its settings checked) before the model changes; building one
    # freezes its base layer, and keep_requires_grad puts every flag back, refused or not.
    with keep_requires_grad(model):
        layers = {
            name: wrapper_for(modules[name])(
                modules[name],
                r=ranks[name],
                alpha=pattern_value(alpha_pattern, name, alpha),
                **lora_kwargs,
            )
            for name in names
        }
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
                say(
                    "{name} is merged: call inject.unmerge_lora(model) before changing the scale.",
                    name=name,
                )
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
    """The LoRA weights with PEFT-style keys: ``<path>.lora_A.weight`` (r, in),
    ``<path>.lora_B.weight`` (out, r) (convolutions: (r, in, kh, kw) and (out, r, 1, 1))."""
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
