"""Which layers get a LoRA: the target presets, name-suffix matching, and per-module patterns.

Introduced in notebooks/05_inject_lora.ipynb.

``target_modules`` is a preset name (``"attn2"``, ``"attn"``, ``"attn2+ff"``, ``"kohya"``,
``"text"``) or a list of module-name suffixes, matched as PEFT matches them: ``attn2.to_q`` selects
``...transformer_blocks.0.attn2.to_q`` but not ``...attn2.to_qk``. :func:`find_targets` turns it
into module paths and refuses what matches nothing or is not a layer LoRA wraps (:func:`wrappable`);
:func:`check_targets` also refuses a rank too large for a layer. ``rank_pattern`` and
``alpha_pattern`` give some modules their own value (:func:`pattern_value`), as PEFT's do.

Left out: regular expressions as targets (PEFT takes them), layers other than ``nn.Linear`` and
plain ``nn.Conv2d``. Wrapping the layers is ``lorakit.inject``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lorakit.language import say

__all__ = [
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
]

# Name suffixes of the presets. "attn2" is cross-attention (text -> image), "attn1" self-attention,
# "ff" the feed-forward network after them in each transformer block (GEGLU in, linear out).
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")
# kohya's trainer (networks.lora) by default: every linear and 1x1 convolution of each
# Transformer2DModel (proj_in, the transformer block's attention and feed-forward, proj_out); in the
# text encoder, CLIP's attention and MLP.
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


def wrappable(module: nn.Module) -> bool:
    """Whether LoRA can wrap ``module``: an ``nn.Linear``, or an ``nn.Conv2d`` without groups."""
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
    )


def shape_of(module: nn.Module) -> tuple[int, int]:
    """``(in, out)`` of the matrix LoRA adapts (a convolution's in: ``in_channels * kh * kw``)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return module.in_channels * kh * kw, module.out_channels
    return module.in_features, module.out_features


def target_suffixes(target_modules: str | Sequence[str]) -> list[str]:
    """The name suffixes ``target_modules`` stands for: a preset's, or the list itself, checked."""
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


def matches_suffix(name: str, suffix: str) -> bool:
    """Whether module path ``name`` is ``suffix`` or ends with ``.suffix`` (whole name parts)."""
    return name == suffix or name.endswith("." + suffix)


def pattern_value(pattern: dict | None, name: str, default):
    """PEFT's ``rank_pattern``/``alpha_pattern``: the value of the first key that is ``name`` or a
    suffix of it (:func:`matches_suffix`), else ``default``."""
    return next((v for k, v in (pattern or {}).items() if matches_suffix(name, k)), default)


def module_kind(path: str) -> str:
    """The short name of a module path, itself a suffix that matches it: ``attn2.to_q``,
    ``attn2.to_out.0`` and ``ff.net.0.proj`` inside a transformer block, else the last two name
    parts (three when the last is a number)."""
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
    """Paths of the ``nn.Linear`` (and ``nn.Conv2d``) modules that ``target_modules`` selects, in
    model order.

    Every suffix must match at least one module, and every match must be a layer LoRA wraps
    (:func:`wrappable`).
    """
    suffixes = target_suffixes(target_modules)
    modules = dict(model.named_modules())
    for suffix in suffixes:
        if not any(matches_suffix(name, suffix) for name in modules):
            raise ValueError(
                f"target {suffix!r} matches no module of this {type(model).__name__}. Presets: "
                f"{', '.join(map(repr, PRESETS))}; suffixes of its linear layers include: "
                f"{', '.join(_linear_suffixes(model))}."
            )
    names = [name for name in modules if any(matches_suffix(name, s) for s in suffixes)]
    not_linear = [f"{n} ({type(modules[n]).__name__})" for n in names if not wrappable(modules[n])]
    if not_linear:
        raise ValueError(
            f"lorakit wraps nn.Linear and nn.Conv2d layers only, but target_modules also selects "
            f"{', '.join(not_linear[:5])}{' ...' if len(not_linear) > 5 else ''}: "
            "choose longer suffixes that name linear layers."
        )
    return names


def lora_parameter_count(
    model: nn.Module, r: int, target_modules: str | Sequence[str] = "attn2"
) -> int:
    """Trainable parameters a rank-``r`` LoRA on ``target_modules`` adds: ``sum r * (in + out)``.

    Computed from module shapes, so it works on a model built on the ``meta`` device.
    """
    modules = dict(model.named_modules())
    return sum(r * sum(shape_of(modules[n])) for n in find_targets(model, target_modules))


def check_targets(
    model: nn.Module, r: int, target_modules: str | Sequence[str] = "attn2"
) -> list[str]:
    """The paths ``inject.inject_lora`` would wrap (:func:`find_targets`), refusing an ``r`` above a
    layer's min(in, out)."""
    names = find_targets(model, target_modules)
    modules = dict(model.named_modules())
    too_small = [
        f"{n} ({shape_of(modules[n])[0]}->{shape_of(modules[n])[1]})"
        for n in names
        if r > min(shape_of(modules[n]))
    ]
    if too_small:
        raise ValueError(
            say(
                "r={r} does not fit {n} targeted layers, whose min(in, out) is smaller: "
                "{layers}. Use a smaller r or other target_modules.",
                r=r,
                n=len(too_small),
                layers=", ".join(too_small[:5]),
            )
        )
    return names
