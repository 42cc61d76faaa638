"""The LoRA layer: a frozen ``nn.Linear`` plus a trainable low-rank update.

Introduced in notebooks/02_lora_from_scratch.ipynb.

``LoRALinear`` computes ``base_layer(x) + scale * scaling * lora_B(lora_A(dropout(x)))``: W0 (out,
in) frozen, A = ``lora_A.weight`` (r, in), B = ``lora_B.weight`` (out, r), zero at first, and
``scaling = alpha / r``. ``merge()`` folds the update into W0; ``unmerge()`` restores W0 bit-exactly
from a copy. Names follow PEFT and the output matches PEFT's ``lora.Linear``. ``LoRAConv2d`` is the
same layer around an ``nn.Conv2d`` (kohya's LoCon; lesson 11), and :func:`alpha_ledger` what one
``(r, alpha)`` means in PEFT, rsLoRA, kohya and lorakit (lesson 07).

Left out: several adapters per layer, grouped convolutions, embeddings, DoRA, a bias on ``lora_B``,
``fan_in_fan_out`` (GPT-2's Conv1D). A whole model is ``lorakit.inject``; files ``lorakit.formats``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from lorakit import dropout as dropouts

__all__ = [
    "INITS",
    "KOHYA_DEFAULT_ALPHA",
    "PEFT_DEFAULT_ALPHA",
    "AlphaLedger",
    "LoRAConv2d",
    "LoRALayer",
    "LoRALinear",
    "alpha_ledger",
    "count_parameters",
]

INITS = ("kaiming", "gaussian")


class LoRALayer(nn.Module):
    """What :class:`LoRALinear` and :class:`LoRAConv2d` share: checks, ``scaling``, merge, unmerge.

    A subclass builds ``lora_A`` and ``lora_B`` for its kind of layer and says how ``B @ A`` takes
    the shape of the base weight (:meth:`_delta_shape`).
    """

    def __init__(
        self,
        base_layer: nn.Module,
        r: int,
        alpha: float | None,
        dropout: float,
        init: str,
        use_rslora: bool,
        n_in: int,
        n_out: int,
    ):
        super().__init__()
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"r must be a positive integer (the rank of B @ A), got r={r!r}.")
        if r > min(n_in, n_out):
            raise ValueError(
                f"r={r} is larger than min(in_features, out_features)={min(n_in, n_out)} for a "
                f"{n_in}->{n_out} layer: B @ A never has a rank above min(in, out), so it adds "
                f"parameters but no expressiveness. Use r <= {min(n_in, n_out)}."
            )
        real = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
        if alpha is not None and not (real and math.isfinite(alpha) and alpha > 0):
            raise ValueError(
                "alpha must be a positive finite number (or None for alpha = r), "
                f"got alpha={alpha!r}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got dropout={dropout!r}.")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got init={init!r}.")
        self.base_layer = base_layer.requires_grad_(False)
        self.r = r
        self.alpha = r if alpha is None else alpha
        self.use_rslora = use_rslora
        self.scale = 1.0
        self.lora_dropout = dropouts.LoRADropout(dropout) if dropout > 0 else nn.Identity()
        # The base weight as it was before merge(); a buffer so .to(device) moves it, not saved.
        self.register_buffer("original_weight", None, persistent=False)

    @property
    def scaling(self) -> float:
        """``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    @property
    def merged(self) -> bool:
        """Whether the update is currently folded into ``base_layer.weight``."""
        return self.original_weight is not None

    @torch.no_grad()
    def reset_lora_parameters(self, init: str = "kaiming") -> None:
        """A as PEFT initialises it, B to zero: the wrapped layer starts as the identity update."""
        if init == "kaiming":  # what nn.Linear and nn.Conv2d do
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        else:
            nn.init.normal_(self.lora_A.weight, std=1 / self.r)
        nn.init.zeros_(self.lora_B.weight)

    def _delta_shape(self, product: torch.Tensor) -> torch.Tensor:
        return product

    def get_delta_weight(self) -> torch.Tensor:
        """``scale * scaling * B @ A`` in the shape of the base weight, in the LoRA dtype."""
        b = self.lora_B.weight.reshape(self.lora_B.weight.shape[0], self.r)  # (out, r)
        a = self.lora_A.weight.reshape(self.r, -1)  # (r, in) or (r, in * kh * kw)
        return self._delta_shape(b @ a) * (self.scale * self.scaling)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``base_layer.weight``; forward then costs one matmul."""
        if self.merged:
            raise RuntimeError(
                f"this {type(self).__name__} is already merged; "
                "call unmerge() before merging again."
            )
        weight = self.base_layer.weight
        self.original_weight = weight.detach().clone()
        delta = self.get_delta_weight().to(device=weight.device, dtype=torch.float32)
        # in place: the Parameter object stays the same
        weight.copy_((weight.to(torch.float32) + delta).to(weight.dtype))

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore ``base_layer.weight`` bit-exactly from the copy taken by :meth:`merge`."""
        if not self.merged:
            raise RuntimeError(
                f"this {type(self).__name__} is not merged; there is nothing to unmerge."
            )
        self.base_layer.weight.copy_(self.original_weight)
        self.original_weight = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)  # (..., out)
        if self.merged:
            return result
        lora_x = self.lora_dropout(x.to(self.lora_A.weight.dtype))  # (..., in)
        update = self.lora_B(self.lora_A(lora_x))  # (..., r) -> (..., out)
        return torch.add(result, update, alpha=self.scale * self.scaling).to(result.dtype)

    def extra_repr(self) -> str:
        rslora = ", use_rslora=True" if self.use_rslora else ""
        return (
            f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}{rslora}, "
            f"scale={self.scale}, merged={self.merged}"
        )


class LoRALinear(LoRALayer):
    """``base_layer(x) + scale * scaling * lora_B(lora_A(dropout(x)))`` with ``base_layer`` frozen.

    Args:
        base_layer: the ``nn.Linear`` to adapt; its parameters are frozen (``requires_grad=False``).
        r: the rank of the update, ``1 <= r <= min(in_features, out_features)``.
        alpha: the LoRA alpha; ``None`` means ``alpha = r`` (scaling 1).
        dropout: dropout probability on the LoRA path's input (training only).
        init: how A starts, ``"kaiming"`` (PEFT's, as ``nn.Linear``) or ``"gaussian"`` (std 1/r).
        use_rslora: rank-stabilised scaling ``alpha / sqrt(r)`` instead of ``alpha / r``.

    ``scaling`` is derived from ``alpha``, ``r`` and ``use_rslora`` whenever it is read, so
    changing ``layer.alpha`` changes it; ``scale`` is the separate runtime multiplier (the
    "LoRA weight" of inference UIs), 1.0 by default.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        r: int = 4,
        alpha: float | None = None,
        dropout: float = 0.0,
        init: str = "kaiming",
        use_rslora: bool = False,
    ):
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(
                f"LoRALinear wraps an nn.Linear, but base_layer is a {type(base_layer).__name__}; "
                "pass the linear layer itself (e.g. attn2.to_q), not its parent module"
                + (" (LoRAConv2d wraps a convolution)" if isinstance(base_layer, nn.Conv2d) else "")
                + "."
            )
        in_features, out_features = base_layer.in_features, base_layer.out_features
        super().__init__(base_layer, r, alpha, dropout, init, use_rslora, in_features, out_features)
        # float32 even when the base is float16/bfloat16: tiny updates to A and B would round away.
        device = base_layer.weight.device
        self.lora_A = nn.Linear(in_features, r, bias=False, device=device, dtype=torch.float32)
        self.lora_B = nn.Linear(r, out_features, bias=False, device=device, dtype=torch.float32)
        self.reset_lora_parameters(init)


class LoRAConv2d(LoRALayer):
    """The same update around an ``nn.Conv2d``: ``lora_A`` has the base's kernel, stride, padding
    and dilation, ``lora_B`` is 1x1, so ``B @ A`` (flattened over ``in * kh * kw``) has rank ``r``.

    A: ``lora_A.weight`` (r, in, kh, kw); B: ``lora_B.weight`` (out, r, 1, 1); the delta weight has
    the base weight's shape (out, in, kh, kw). Arguments as :class:`LoRALinear`, ``r`` at most
    ``min(in * kh * kw, out)``; grouped convolutions are refused.
    """

    def __init__(
        self,
        base_layer: nn.Conv2d,
        r: int = 4,
        alpha: float | None = None,
        dropout: float = 0.0,
        init: str = "kaiming",
        use_rslora: bool = False,
    ):
        if not isinstance(base_layer, nn.Conv2d):
            raise TypeError(
                f"LoRAConv2d wraps an nn.Conv2d, but base_layer is a {type(base_layer).__name__} "
                + ("(LoRALinear wraps a linear layer)" if isinstance(base_layer, nn.Linear) else "")
                + "."
            )
        if base_layer.groups != 1 or base_layer.padding_mode != "zeros":
            raise ValueError(
                f"LoRAConv2d wraps plain convolutions (groups=1, zero padding); this one has "
                f"groups={base_layer.groups}, padding_mode={base_layer.padding_mode!r}."
            )
        kh, kw = base_layer.kernel_size
        n_in, n_out = base_layer.in_channels * kh * kw, base_layer.out_channels
        super().__init__(base_layer, r, alpha, dropout, init, use_rslora, n_in, n_out)
        b = base_layer  # A: the base's kernel into r channels; B: 1x1 back out; float32 as above
        float32 = {"bias": False, "device": b.weight.device, "dtype": torch.float32}
        self.lora_A = nn.Conv2d(
            b.in_channels, r, b.kernel_size, b.stride, b.padding, b.dilation, **float32
        )
        self.lora_B = nn.Conv2d(r, n_out, 1, **float32)
        self.reset_lora_parameters(init)

    def _delta_shape(self, product: torch.Tensor) -> torch.Tensor:
        # (out, in * kh * kw) -> (out, in, kh, kw)
        return product.reshape(self.base_layer.weight.shape)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- the alpha conventions

PEFT_DEFAULT_ALPHA = 8.0  # peft.LoraConfig(lora_alpha=8)
KOHYA_DEFAULT_ALPHA = 1.0  # kohya sd-scripts, train_network.py --network_alpha (default 1)


@dataclass(frozen=True)
class AlphaLedger:
    """What multiplies B @ A for one (r, alpha) in each convention (alpha None: their defaults)."""

    r: int
    alpha: float | None
    peft: float  # alpha / r; PEFT's LoraConfig leaves alpha at 8
    rslora: float  # alpha / sqrt(r) (PEFT with use_rslora=True), alpha at 8 by default
    kohya: float  # stored alpha / r; kohya's trainer stores alpha = 1 unless told otherwise
    lorakit: float  # alpha / r with alpha = r by default (lorakit, diffusers' training scripts): 1

    def rows(self) -> list[tuple[str, float, str, float]]:
        """(convention, alpha used, formula, scaling) for a table."""
        peft_alpha = PEFT_DEFAULT_ALPHA if self.alpha is None else self.alpha
        kohya_alpha = KOHYA_DEFAULT_ALPHA if self.alpha is None else self.alpha
        lorakit_alpha = float(self.r) if self.alpha is None else self.alpha
        return [
            ("PEFT LoraConfig", peft_alpha, "alpha / r", self.peft),
            ("rsLoRA (PEFT use_rslora=True)", peft_alpha, "alpha / sqrt(r)", self.rslora),
            ("kohya sd-scripts (alpha in the file)", kohya_alpha, "alpha / r", self.kohya),
            ("lorakit, diffusers' scripts", lorakit_alpha, "alpha / r", self.lorakit),
        ]


def alpha_ledger(r: int, alpha: float | None = None) -> AlphaLedger:
    """The scaling of B @ A for rank ``r`` and ``alpha`` in PEFT, rsLoRA, kohya and lorakit.

    With ``alpha`` given, PEFT, kohya and lorakit agree (alpha / r) and rsLoRA differs
    (alpha / sqrt(r)); with ``alpha=None`` each tool uses its own default alpha (PEFT 8,
    kohya 1, lorakit r), and the same r gives different strengths.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"r must be a positive integer, got {r!r}.")
    if alpha is not None and not alpha > 0:
        raise ValueError(
            f"alpha must be positive (or None for each tool's default), got {alpha!r}."
        )
    peft_alpha = PEFT_DEFAULT_ALPHA if alpha is None else float(alpha)
    return AlphaLedger(
        r=r,
        alpha=alpha,
        peft=peft_alpha / r,
        rslora=peft_alpha / math.sqrt(r),
        kohya=(KOHYA_DEFAULT_ALPHA if alpha is None else float(alpha)) / r,
        lorakit=1.0 if alpha is None else float(alpha) / r,
    )
