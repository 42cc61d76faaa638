"""A LoRA in memory, as lorakit holds it whatever file it came from, and the checks it must pass.

Introduced in notebooks/05_inject_lora.ipynb.

:class:`LoRAWeights` holds A and B per module path (a pipeline's text-encoder modules are
``text_encoder.<path>``, as diffusers names them), the ``r`` and ``alpha`` most modules share, and
``alphas`` for the others; each module's rank is its A's number of rows. :func:`build_weights`
makes one from per-module A, B and alpha, :func:`check_weights` refuses what no model should get,
:func:`from_model` reads one out of an injected model. Every refusal is a :class:`LoRAFileError`.

Left out: files (``safetensors_io``, ``kohya``, ``diffusers``, ``load``, ``save``) and putting the
weights into a model (``apply``).
"""

from __future__ import annotations

import collections
import math
import numbers
from dataclasses import dataclass, field

import torch

from lorakit import inject, targets

__all__ = [
    "TEXT_PREFIX",
    "TEXT_PREFIXES",
    "TEXT_MODEL",
    "LoRAFileError",
    "UnsupportedKind",
    "LoRAWeights",
    "canonical",
    "most_common",
    "build_weights",
    "check_weights",
    "from_model",
]

TEXT_PREFIX = targets.TEXT_PREFIX  # "text_encoder.": diffusers' keys, and lorakit's module paths
# every text encoder's (SDXL's second, SD3's third), as diffusers' LoRA files name them
TEXT_PREFIXES = (TEXT_PREFIX, "text_encoder_2.", "text_encoder_3.")
TEXT_MODEL = (
    "text_model."  # CLIP's inner module: in every file's names, flattened by transformers 5
)


class LoRAFileError(ValueError):
    """A LoRA file (or :class:`LoRAWeights`) that lorakit refuses; the message names the file and
    the key.

    Every refusal of a file's content is this one type, a ``ValueError``; a file that is not there
    is a ``FileNotFoundError``. A refused file changes nothing in the model it was meant for.
    """


class UnsupportedKind(LoRAFileError):
    """A well-formed file of a kind lorakit does not apply (LoHa, LoKr, DoRA, SDXL, ...):
    ``lorakit info`` still describes it."""


@dataclass
class LoRAWeights:
    """A LoRA as lorakit holds it: per-module A and B, the rank and alpha most modules share,
    ``alphas`` for the rest.

    A is ``(r, in)`` (a convolution's ``(r, in, kh, kw)``), B ``(out, r)`` (``(out, r, 1, 1)``); a
    module's rank is its A's rows (:meth:`rank`), its alpha ``alphas.get(path, alpha)``
    (:meth:`alpha_of`). Text-encoder modules are named ``text_encoder.<path>``. ``format`` is where
    it came from: "kohya", "diffusers", "peft", or "lorakit" (:func:`from_model`,
    ``lorakit.svd_tools``).
    """

    format: str
    r: int
    alpha: float
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    use_rslora: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    alphas: dict[str, float] = field(default_factory=dict)  # modules whose alpha is not ``alpha``
    # modules read from another kind, exactly (LyCORIS LoHa, LoKr): what they were in the file
    variants: dict[str, str] = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        """``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA): every module's, unless ranks or alphas
        differ (:meth:`scaling_of`)."""
        return self.alpha / (self.r**0.5 if self.use_rslora else self.r)

    @property
    def modules(self) -> list[str]:
        return list(self.A)

    @property
    def text_modules(self) -> list[str]:
        """The text encoders' modules (``text_encoder.<path>``, ``text_encoder_2.<path>``)."""
        return [m for m in self.A if m.startswith(TEXT_PREFIXES)]

    @property
    def uniform(self) -> bool:
        """One rank and one alpha for every module."""
        return not self.alphas and all(self.rank(m) == self.r for m in self.A)

    def rank(self, path: str) -> int:
        return int(self.A[path].shape[0])

    def alpha_of(self, path: str) -> float:
        return float(self.alphas.get(path, self.alpha))

    def scaling_of(self, path: str) -> float:
        """What multiplies ``B @ A`` in module ``path``: its alpha over its rank (or its square
        root, rsLoRA)."""
        r = self.rank(path)
        return self.alpha_of(path) / (r**0.5 if self.use_rslora else r)

    def kind(self, path: str) -> str:
        """ "linear", "conv 1x1" or "conv 3x3" (the kernel of a convolution's A)."""
        a = self.A[path]
        return "linear" if a.ndim == 2 else f"conv {a.shape[2]}x{a.shape[3]}"

    def matrix(self, path: str) -> torch.Tensor:
        """``scaling * B @ A`` as a matrix, ``(out, in)``; a convolution's ``(out, in * kh * kw)``.
        In float32."""
        a, b = self.A[path].float(), self.B[path].float()
        return (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)) * self.scaling_of(path)

    def get_delta_weight(self, path: str) -> torch.Tensor:
        """``scaling * B @ A`` in the shape of the layer's weight: ``(out, in)``, a convolution's
        ``(out, in, kh, kw)``; a file has no runtime scale (``LoRALayer.get_delta_weight`` has)."""
        a = self.A[path]
        return self.matrix(path).reshape(self.B[path].shape[0], *a.shape[1:])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Keys as ``inject.lora_state_dict`` writes them."""
        return {
            f"{p}.lora_{ab}.weight": t[p]
            for p in self.A
            for ab, t in (("A", self.A), ("B", self.B))
        }

    def subset(self, paths) -> LoRAWeights:
        """The same LoRA on ``paths`` only (e.g. ``weights.subset(m for m in weights.modules if
        ...)``)."""
        paths = [m for m in paths if m in self.A]
        part = build_weights(
            self.format,
            {m: self.A[m] for m in paths},
            {m: self.B[m] for m in paths},
            {m: self.alpha_of(m) for m in paths},
            self.use_rslora,
            dict(self.metadata),
        )
        part.variants = {m: v for m, v in self.variants.items() if m in paths}
        return part


def canonical(path: str) -> str:
    """A module path as LoRA files spell it: a text-encoder module's with CLIP's ``text_model.`` in
    it, whichever transformers version built the model (``text_encoder.encoder.layers.0...`` ->
    ``text_encoder.text_model.encoder...``)."""
    prefix = next((p for p in TEXT_PREFIXES[:2] if path.startswith(p)), None)  # CLIP's
    if prefix and not path[len(prefix) :].startswith(TEXT_MODEL):
        return prefix + TEXT_MODEL + path[len(prefix) :]
    return path


def most_common(values):
    """The value most modules have (ties: the largest)."""
    counts = collections.Counter(values)
    return max(counts, key=lambda v: (counts[v], v))


def build_weights(
    fmt: str,
    A: dict,
    B: dict,
    alphas: dict[str, float],
    use_rslora: bool = False,
    metadata: dict | None = None,
) -> LoRAWeights:
    """A :class:`LoRAWeights` from per-module A, B and alpha: ``r`` and ``alpha`` are what most
    modules have."""
    if not A:
        return LoRAWeights(fmt, 1, 1.0, {}, {}, use_rslora, metadata or {})
    r = most_common(int(a.shape[0]) for a in A.values())
    alpha = most_common(alphas[m] for m in A if int(A[m].shape[0]) == r)
    return LoRAWeights(
        fmt,
        r,
        float(alpha),
        A,
        B,
        use_rslora,
        metadata or {},
        {m: float(a) for m, a in alphas.items() if a != alpha},
    )


def _check_settings(weights: LoRAWeights, source: str) -> None:
    """r a positive integer, every alpha positive and finite, A, B and alphas on the same
    modules."""
    if isinstance(weights.r, bool) or not isinstance(weights.r, int) or weights.r <= 0:
        raise LoRAFileError(f"{source}: r must be a positive integer, got r={weights.r!r}.")
    for name, alpha in [("", weights.alpha), *((f" of {m}", a) for m, a in weights.alphas.items())]:
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, numbers.Real)
            or not (math.isfinite(alpha) and alpha > 0)
        ):
            raise LoRAFileError(
                f"{source}: alpha{name} must be a positive finite number, got alpha={alpha!r}; "
                f"alpha = r ({weights.r}) gives scaling 1."
            )
    if (
        set(weights.A) != set(weights.B)
        or not weights.A
        or not set(weights.alphas) <= set(weights.A)
    ):
        raise LoRAFileError(
            f"{source}: A and B (and the per-module alphas) name different modules, or none."
        )


def _check_pair(source: str, m: str, a, b) -> None:
    """Module ``m``'s A and B: float, 2-D (or 4-D with a 1x1 B), one rank above 0, finite."""
    for ab, t in (("A", a), ("B", b)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim not in (2, 4):
            raise LoRAFileError(
                f"{source}: {ab} of {m} must be a 2-D (or a convolution's 4-D) float tensor, got "
                f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}."
            )
    if (
        b.ndim != a.ndim
        or (b.ndim == 4 and tuple(b.shape[2:]) != (1, 1))
        or a.shape[0] != b.shape[1]
        or a.shape[0] == 0
    ):
        raise LoRAFileError(
            f"{source}: A {tuple(a.shape)} and B {tuple(b.shape)} of {m} must be a pair of one "
            "rank above 0: A (r, in) and B (out, r), or a convolution's A (r, in, kh, kw) and "
            "B (out, r, 1, 1)."
        )
    if not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise LoRAFileError(
            f"{source}: A or B of {m} holds NaN or infinite values: the LoRA is broken."
        )


def check_weights(weights: LoRAWeights, source: str = "the LoRA") -> None:
    """Refuse weights that no model should get: r not a positive integer, an alpha not positive
    and finite, A or B not float, not a pair of one rank (2-D, or 4-D with a 1x1 B), or not finite
    (``source`` names them)."""
    _check_settings(weights, source)
    for m in weights.A:
        _check_pair(source, m, weights.A[m], weights.B[m])
    if weights.r not in {weights.rank(m) for m in weights.A}:
        raise LoRAFileError(
            f"{source}: r={weights.r} is the rank of no module (their A have "
            f"{sorted({weights.rank(m) for m in weights.A})} rows)."
        )


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float32).contiguous().clone()


def from_model(model) -> LoRAWeights:
    """The LoRA weights of an injected model, or of a pipeline's UNet and text encoder (the runtime
    ``scale`` is not saved)."""
    layers = list(inject.lora_layers(model))
    if not layers:
        raise RuntimeError(
            "this model has no LoRA layers to save: call inject.inject_lora(model) first."
        )
    rslora = {layer.use_rslora for _, layer in layers}
    if len(rslora) > 1:
        raise ValueError(
            "LoRA files hold one scaling rule, but some layers use rsLoRA and others not."
        )
    layers = [(canonical(n), m) for n, m in layers]
    return build_weights(
        "lorakit",
        {n: _cpu_copy(m.lora_A.weight) for n, m in layers},
        {n: _cpu_copy(m.lora_B.weight) for n, m in layers},
        {n: float(m.alpha) for n, m in layers},
        rslora.pop(),
    )
