"""Applying a LoRA to a model: every module and shape checked before anything changes.

Introduced in notebooks/05_inject_lora.ipynb.

:func:`resolve_modules` finds where each module of a :class:`~lorakit.formats.LoRAWeights` goes in
a UNet or a pipeline (kohya names through the model's real module names; CLIP's ``text_model.``
as either transformers version builds it) and says what does not fit. :func:`apply_lora` injects
LoRA layers there (or loads into the ones the model has) with each module's rank and alpha. A
refusal leaves the model exactly as it was, ``requires_grad`` flags included: nothing is ever
applied in part.

Left out: the wrapping itself (``lorakit.inject``), merging into the weights
(``inject.merge_lora``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lorakit import inject, lora, targets
from lorakit.formats import architectures, kohya, load, lora_weights

__all__ = ["resolve_modules", "apply_lora"]

TEXT_PREFIXES, TEXT_MODEL = lora_weights.TEXT_PREFIXES, lora_weights.TEXT_MODEL


def _misfit(module: nn.Module, a, b, r: int) -> str | None:
    """Why A and B do not fit ``module`` (None if they do): the kind, the shapes, the rank."""
    if not targets.wrappable(module):
        return f"a {type(module).__name__}, not a linear layer or convolution"
    n_in, n_out = targets.shape_of(module)
    kernel = tuple(module.kernel_size) if isinstance(module, nn.Conv2d) else (1, 1)
    file_kernel = tuple(a.shape[2:]) if a.ndim == 4 else (1, 1)
    flat = a.ndim == 2 and a.shape[1] == n_in and kernel != (1, 1)  # LyCORIS: a flat kernel
    if file_kernel != kernel and not flat:
        what = (
            "a linear layer"
            if isinstance(module, nn.Linear)
            else f"a {kernel[0]}x{kernel[1]} convolution"
        )
        return f"a {file_kernel[0]}x{file_kernel[1]} convolution LoRA for {what}"
    file_in, file_out = a[0].numel(), b.shape[0]
    if (file_in, file_out) != (n_in, n_out):
        return f"file {file_in}->{file_out} vs model {n_in}->{n_out}"
    if r > min(n_in, n_out):
        return f"rank {r} above min(in, out) = {min(n_in, n_out)}"
    return None


def _flat_clip_path(path: str) -> str:
    """A text-encoder path without CLIP's ``text_model.``, as transformers 5 builds CLIP."""
    prefix = next((p for p in TEXT_PREFIXES if path.startswith(p + TEXT_MODEL)), None)
    return path.replace(prefix + TEXT_MODEL, prefix, 1) if prefix else path


def resolve_modules(
    model, weights: lora_weights.LoRAWeights
) -> tuple[dict[str, str], dict[str, nn.Module], list[str]]:
    """Where each module of ``weights`` goes in ``model`` (a UNet or a pipeline): ``{module: model
    path}``, ``{model path: its base layer}`` for the modules that fit, and a line for each that
    does not."""
    parts = inject.components(model)
    modules = {prefix + n: m for prefix, part in parts for n, m in part.named_modules()}
    names = kohya.kohya_name_map(model)  # for kohya names that load_lora could not resolve
    paths, bases, problems = {}, {}, []
    for m in weights.modules:
        p = kohya.resolve_name(m, names, model)
        p = paths[m] = (
            p if p in modules or _flat_clip_path(p) not in modules else _flat_clip_path(p)
        )
        module = modules.get(p)
        base = module.base_layer if isinstance(module, lora.LoRALayer) else module
        if base is None and p.startswith(TEXT_PREFIXES) and len(parts) == 1:
            problems.append(
                f"{p}: a text-encoder module, and this is a {type(model).__name__} alone (apply "
                "the LoRA to the pipeline, apply_lora(pipe, ...), or keep its UNet part: "
                "weights.subset(...))"
            )
        elif base is None and p.endswith(kohya.FUSED) and p.startswith(kohya.KOHYA_PREFIXES):
            problems.append(
                f"{p}: kohya's fused q, k and v, three modules in diffusers' transformer "
                "(diffusers' load_lora_weights splits them)"
            )
        elif base is None:
            problems.append(f"{p}: no such module")
        elif why := _misfit(base, weights.A[m], weights.B[m], weights.rank(m)):
            problems.append(f"{p}: {why}")
        else:
            bases[p] = base
    return paths, bases, problems


def _existing_layers(model, weights, paths: dict[str, str]) -> dict:
    """The model's LoRA layers: none, or exactly the modules and ranks of ``weights``."""
    existing = dict(inject.lora_layers(model))
    if existing and (
        set(existing) != set(paths.values())
        or any(existing[paths[m]].r != weights.rank(m) for m in paths)
    ):
        raise RuntimeError(
            "the model already has LoRA layers on other modules or of another rank: "
            "call inject.remove_lora(model) first."
        )
    return existing


def _layer_state(weights, paths: dict[str, str], bases: dict[str, nn.Module]) -> dict:
    """The state dict of the layers: a convolution's 4-D A and B, a linear layer's 2-D."""
    state = {}
    for m, p in paths.items():
        base = bases[p]
        conv = isinstance(base, nn.Conv2d)
        a, b = weights.A[m], weights.B[m]
        state[f"{p}.lora_A.weight"] = (
            a.reshape(a.shape[0], base.in_channels, *base.kernel_size)
            if conv
            else a.reshape(a.shape[0], -1)
        )
        state[f"{p}.lora_B.weight"] = (
            b.reshape(b.shape[0], b.shape[1], 1, 1) if conv else b.reshape(b.shape[0], -1)
        )
    return state


def _inject_layers(parts, weights, paths: dict[str, str]) -> None:
    """LoRA layers on each part's modules of ``weights``, with their ranks and alphas."""
    for prefix, part in parts:
        mine = {
            p[len(prefix) :]: m
            for m, p in paths.items()
            if p.startswith(prefix)
            and (prefix or not p.startswith(TEXT_PREFIXES) or len(parts) == 1)
        }
        if mine:
            inject.inject_lora(
                part,
                r=weights.r,
                alpha=weights.alpha,
                target_modules=list(mine),
                rank_pattern={n: weights.rank(m) for n, m in mine.items()},
                alpha_pattern={n: weights.alpha_of(m) for n, m in mine.items()},
                use_rslora=weights.use_rslora,
            )


def _check_architecture(weights, model, source: str) -> None:
    """Refuse a LoRA whose names or shapes show another architecture than the model's (a file
    that shows none, SD 1.x/2.x's names, is checked module by module)."""
    arch = architectures.of_weights(weights)
    if arch != architectures.SD or architectures.of_model(model) in architectures.TRANSFORMERS:
        architectures.check_model(arch, model, source)


def apply_lora(
    model, weights: lora_weights.LoRAWeights | str | Path, scale: float = 1.0
) -> list[str]:
    """Inject LoRA layers for ``weights`` (unless the model already has exactly those) and load
    them.

    ``model`` is a UNet, or a pipeline when the LoRA has text-encoder modules too
    (``text_encoder.<path>``). Everything is checked first (the weights, every module, shape and
    rank, ``scale``); a refusal leaves the model exactly as it was, ``requires_grad`` flags
    included: nothing is ever applied in part.
    """
    source = "the LoRA" if isinstance(weights, lora_weights.LoRAWeights) else str(weights)
    if isinstance(weights, lora_weights.LoRAWeights):
        lora_weights.check_weights(weights)
    else:  # checked as it is read; its names through the model's
        weights = load.load_lora(weights, model)
    _check_architecture(weights, model, source)
    inject.check_scale(scale)  # before anything changes (set_lora_scale checks it at the end)
    parts = inject.components(model)
    paths, bases, problems = resolve_modules(model, weights)
    if problems:
        raise lora_weights.LoRAFileError(
            f"the LoRA does not fit this {type(model).__name__}: {len(problems)} of {len(paths)} "
            f"modules do not match (nothing was loaded): {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}"
        )
    existing = _existing_layers(model, weights, paths)
    state = _layer_state(weights, paths, bases)
    with inject.keep_requires_grad(*(part for _, part in parts), on_error_only=True):
        try:
            if not existing:
                _inject_layers(parts, weights, paths)
            inject.load_lora_state_dict(model, state)
        except BaseException:
            if not existing:
                inject.remove_lora(model)
            raise
    layers = dict(inject.lora_layers(model))
    for m, p in paths.items():  # existing layers take the file's alphas too
        layers[p].alpha, layers[p].use_rslora = weights.alpha_of(m), weights.use_rslora
    inject.set_lora_scale(model, scale)
    return list(paths.values())
