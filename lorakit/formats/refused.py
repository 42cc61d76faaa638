"""The LoRA files lorakit refuses to apply, named by kind, with the module that shows it.

Introduced in notebooks/05_inject_lora.ipynb, where every load checks for these kinds; the kinds
themselves are lesson 11's (notebooks/11_lora_algebra.ipynb).

A shared file may hold what lorakit does not apply exactly: DoRA's magnitude (``dora_scale``: its
delta depends on W0, and tools disagree on its axis), Tucker cores (``lora_mid``, ``hada_t1``,
``lokr_t2``), full-weight differences, OFT, (IA)^3, GLoRA; or a whole checkpoint's layout. Such a
file is an :class:`~lorakit.formats.UnsupportedKind` (``lorakit info`` still describes it); keys
that show no kind are a plain :class:`~lorakit.formats.LoRAFileError`. Nothing is loaded either
way. LoHa and LoKr are read exactly (``lycoris``), SDXL's, SD3's and Flux's names too.

Left out: reading these kinds (use ComfyUI, or AUTOMATIC1111 with LyCORIS support).
"""

from __future__ import annotations

from pathlib import Path

from lorakit.formats import lora_weights

__all__ = [
    "VARIANTS",
    "ARCHITECTURES",
    "refuse_architecture",
    "unsupported",
    "refuse_config_kinds",
]

# What a key's name shows that lorakit does not apply: (words in the key, what it is).
DORA_WHY = (
    "its delta W is not a fixed matrix: the magnitude vector rescales W0 + B A by W0's own "
    "column or row norms, so it depends on the base weights, and tools take the norm along "
    "different axes (the DoRA paper and many LyCORIS files per input column, PEFT per output row)"
)
VARIANTS = (
    (".hada_t", "LyCORIS LoHa with Tucker cores (hada_t1, hada_t2)"),
    (".lokr_t2", "LyCORIS LoKr with a Tucker core (lokr_t2)"),
    (".dora_scale", f"DoRA adapter (a magnitude vector, dora_scale, beside the LoRA; {DORA_WHY})"),
    (
        ".lora_magnitude_vector",
        f"DoRA adapter (a magnitude vector, lora_magnitude_vector, beside the LoRA; {DORA_WHY})",
    ),
    (".lora_mid.", "LoCon adapter with a Tucker core (lora_mid, LyCORIS's use_tucker)"),
    (".diff", "full-weight difference (LyCORIS's 'full' algorithm)"),
    (".oft_", "OFT (orthogonal) adapter"),
    (".on_input", "(IA)^3 adapter"),
    (".w_norm", "LyCORIS GLoRA adapter"),
    (".a1.weight", "LyCORIS GLoRA adapter"),
)
ARCHITECTURES = (  # key prefixes of layouts lorakit does not read
    (
        ("model.diffusion_model.", "diffusion_model."),
        "the original LDM checkpoint layout (diffusion_model.)",
    ),
)


def _architecture(keys) -> str | None:
    """The other architecture (SDXL, LDM layout, a DiT) that ``keys`` show, if any."""
    return next(
        (what for prefixes, what in ARCHITECTURES if any(k.startswith(prefixes) for k in keys)),
        None,
    )


def refuse_architecture(path: Path, keys: list[str]) -> None:
    """Refuse a file whose keys are a whole checkpoint's layout, not a LoRA's names."""
    other = _architecture(keys)
    if other:
        key = next(k for k in keys if _architecture([k]) == other)
        raise lora_weights.UnsupportedKind(
            f"{path} has keys of {other} (e.g. {key}); lorakit reads LoRAs with kohya's or "
            "diffusers' module names (lora_unet_..., unet...., transformer....), so nothing was "
            "loaded."
        )


def _variant(key: str) -> str | None:
    """The adapter kind lorakit does not apply that a key shows (LoHa, LoKr, DoRA, ...), if any."""
    return next(
        (what for words, what in VARIANTS if words in "." + key.split(".", 1)[-1] or words in key),
        None,
    )


def _module_of(key: str) -> str:
    """The module a key belongs to: the key without its last name (and without
    ``.weight``/``.bias`` before that)."""
    bare = (
        key[: -len(".weight")]
        if key.endswith(".weight")
        else key[: -len(".bias")]
        if key.endswith(".bias")
        else key
    )
    return bare.rsplit(".", 1)[0]


def unsupported(
    path: Path, keys: list[str], what: str, lora_modules=()
) -> lora_weights.LoRAFileError:
    """The refusal of keys that are not plain LoRA: named by kind (and module) where the key shows
    it; ``lora_modules``: the modules with plain LoRA halves, to tell a file of mixed kinds."""
    kinds: dict[str, list[str]] = {}
    for key in keys:
        kinds.setdefault(_variant(key) or "", []).append(key)
    named = {k: v for k, v in kinds.items() if k}
    if named:
        kind, found = next(iter(named.items()))
        modules = {_module_of(k) for k in found}
        # (DoRA and a Tucker core come with lora halves on their own modules)
        plain = set(lora_modules) - modules
        mixed = f" beside {len(plain)} plain LoRA modules (a file of mixed kinds)" if plain else ""
        n = len(modules)
        return lora_weights.UnsupportedKind(
            f"{path} holds a {kind} on {n} module{'s' if n != 1 else ''}{mixed} "
            f"(e.g. {_module_of(found[0])}: {found[0]}); lorakit applies LoRA (linear, 1x1 and "
            "3x3 convolutions), LyCORIS LoHa and LoKr only, so nothing was loaded: use a tool "
            "that applies this kind (ComfyUI, or AUTOMATIC1111 with LyCORIS support)."
        )
    return lora_weights.LoRAFileError(
        f"{path} has {len(keys)} keys that lorakit cannot read as {what} "
        f"(e.g. {', '.join(keys[:5])}); it reads plain LoRA (lora_down/lora_up, lora_A/lora_B) "
        "only."
    )


def refuse_config_kinds(path: Path, configs: dict[str, dict]) -> None:
    """Refuse settings of another PEFT kind than plain LoRA (DoRA, or another ``peft_type``)."""
    for config in configs.values():
        if config.get("use_dora") or config.get("peft_type", "LORA") != "LORA":
            raise lora_weights.UnsupportedKind(
                f"{path} is a {config.get('peft_type')} adapter "
                f"(use_dora={config.get('use_dora')}); "
                "lorakit loads plain LoRA only."
            )
