"""The LoRA layer: a frozen ``nn.Linear`` plus a trainable low-rank update.

Introduced in notebooks/02_lora_from_scratch.ipynb.

``LoRALinear`` wraps a linear layer ``h = W0 x + b`` and adds ``(alpha / r) * B A x``::

    h = base_layer(x) + scale * scaling * lora_B(lora_A(dropout(x)))
        W0: (out, in) frozen     A = lora_A.weight: (r, in)     B = lora_B.weight: (out, r)

B starts at zero, so a freshly wrapped layer computes exactly what the base layer computes.
``merge()`` folds ``scale * scaling * B @ A`` into ``W0`` for zero-overhead inference and
``unmerge()`` restores ``W0`` bit-exactly from a copy kept at merge time (subtracting the
delta again would lose bits in float16/bfloat16). LoRA parameters stay float32 when the base
is float16/bfloat16; the LoRA path runs in their dtype and its result is cast back.

Names follow PEFT (``base_layer``, ``lora_A``, ``lora_B``, ``r``, ``alpha``, ``scaling``,
``get_delta_weight``, ``merge``, ``unmerge``), and the output matches PEFT's ``lora.Linear``.

The same ``r`` and ``alpha`` mean different strengths in different tools: :func:`alpha_ledger`
gives the scaling of one ``(r, alpha)`` under PEFT (``alpha / r``, default alpha 8), rsLoRA
(``alpha / sqrt(r)``), kohya (the alpha stored in the file, default 1) and lorakit (alpha = r);
lesson 07 explores it with sliders.

``LoRAConv2d`` is the same layer around an ``nn.Conv2d`` (kohya's "LoCon", PEFT's ``lora.Conv2d``):
A is a convolution with the base layer's kernel, stride and padding into ``r`` channels, B a 1x1
convolution back out, so ``B A`` is again a rank-``r`` matrix, of shape ``(out, in * kh * kw)``. On a 1x1
convolution (SD 1.5's ``proj_in`` and ``proj_out``) it is exactly a linear LoRA over the channels.
Introduced in notebooks/11_lora_algebra.ipynb.

Left out: multiple adapters per layer, grouped convolutions and embeddings, DoRA and other variants,
a bias on ``lora_B``, ``fan_in_fan_out`` (GPT-2's Conv1D). Putting LoRA into a whole model
is ``lorakit.inject``; saving it in kohya/diffusers/PEFT files is ``lorakit.formats``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

INITS = ("kaiming", "gaussian")


class LoRALayer(nn.Module):
    """What :class:`LoRALinear` and :class:`LoRAConv2d` share: the checks, ``scaling``, merge and unmerge.

    A subclass builds ``lora_A`` and ``lora_B`` for its kind of layer and says how ``B @ A`` takes
    the shape of the base weight (:meth:`_delta_shape`).
    """

    base_kind: type = nn.Module

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
                f"r={r} is larger than min(in_features, out_features)={min(n_in, n_out)} "
                f"for a {n_in}->{n_out} layer: B @ A can never have rank above "
                "min(in, out), so a rank above min(in, out) adds parameters but no expressiveness. "
                f"Use r <= {min(n_in, n_out)}."
            )
        if alpha is not None and (
            isinstance(alpha, bool)
            or not isinstance(alpha, numbers.Real)
            or not (math.isfinite(alpha) and alpha > 0)
        ):
            raise ValueError(
                f"alpha must be a positive finite number (or None for alpha = r), got alpha={alpha!r}."
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
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
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
        if init == "kaiming":
            nn.init.kaiming_uniform_(
                self.lora_A.weight, a=math.sqrt(5)
            )  # what nn.Linear and nn.Conv2d do
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
                f"this {type(self).__name__} is already merged; call unmerge() before merging again."
            )
        weight = self.base_layer.weight
        self.original_weight = weight.detach().clone()
        merged = weight.to(torch.float32) + self.get_delta_weight().to(
            device=weight.device, dtype=torch.float32
        )
        weight.copy_(merged.to(weight.dtype))  # in place: the Parameter object stays the same

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
        return (result + update * (self.scale * self.scaling)).to(result.dtype)

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
        init: ``"kaiming"`` (PEFT's default, as ``nn.Linear``) or ``"gaussian"`` (std ``1/r``) for A.
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
                f"{' (LoRAConv2d wraps a convolution)' if isinstance(base_layer, nn.Conv2d) else ''}."
            )
        in_features, out_features = base_layer.in_features, base_layer.out_features
        super().__init__(base_layer, r, alpha, dropout, init, use_rslora, in_features, out_features)
        # float32 even when the base is float16/bfloat16: tiny updates to A and B would round away.
        device = base_layer.weight.device
        self.lora_A = nn.Linear(in_features, r, bias=False, device=device, dtype=torch.float32)
        self.lora_B = nn.Linear(r, out_features, bias=False, device=device, dtype=torch.float32)
        self.reset_lora_parameters(init)


class LoRAConv2d(LoRALayer):
    """The same update around an ``nn.Conv2d``: ``lora_A`` has the base's kernel, stride, padding and
    dilation, ``lora_B`` is 1x1, so ``B @ A`` (flattened over ``in * kh * kw``) is of rank ``r``.

    A: ``lora_A.weight`` (r, in, kh, kw); B: ``lora_B.weight`` (out, r, 1, 1); ``get_delta_weight()``
    has the base weight's shape (out, in, kh, kw). Arguments as :class:`LoRALinear`; ``r`` is at most
    ``min(in * kh * kw, out)``. Grouped convolutions are refused.
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
                f"{'(LoRALinear wraps a linear layer)' if isinstance(base_layer, nn.Linear) else ''}."
            )
        if base_layer.groups != 1 or base_layer.padding_mode != "zeros":
            raise ValueError(
                f"LoRAConv2d wraps plain convolutions (groups=1, zero padding); this one has "
                f"groups={base_layer.groups}, padding_mode={base_layer.padding_mode!r}."
            )
        kh, kw = base_layer.kernel_size
        n_in, n_out = base_layer.in_channels * kh * kw, base_layer.out_channels
        super().__init__(base_layer, r, alpha, dropout, init, use_rslora, n_in, n_out)
        device = base_layer.weight.device
        self.lora_A = nn.Conv2d(
            base_layer.in_channels,
            r,
            base_layer.kernel_size,
            base_layer.stride,
            base_layer.padding,
            base_layer.dilation,
            bias=False,
            device=device,
            dtype=torch.float32,
        )
        self.lora_B = nn.Conv2d(r, n_out, 1, bias=False, device=device, dtype=torch.float32)
        self.reset_lora_parameters(init)

    def _delta_shape(self, product: torch.Tensor) -> torch.Tensor:
        return product.reshape(
            self.base_layer.weight.shape
        )  # (out, in * kh * kw) -> (out, in, kh, kw)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- the alpha conventions

PEFT_DEFAULT_ALPHA = 8.0  # peft.LoraConfig(lora_alpha=8)
KOHYA_DEFAULT_ALPHA = 1.0  # kohya sd-scripts, train_network.py --network_alpha (default 1)


@dataclass(frozen=True)
class AlphaLedger:
    """What multiplies B @ A for one (r, alpha) under each convention; ``alpha=None``: each tool's default."""

    r: int
    alpha: float | None
    peft: float  # alpha / r; PEFT's LoraConfig leaves alpha at 8
    rslora: float  # alpha / sqrt(r) (PEFT with use_rslora=True), alpha at 8 by default
    kohya: float  # stored alpha / r; kohya's trainer stores alpha = 1 unless told otherwise
    lorakit: float  # alpha / r with alpha = r by default (lorakit, diffusers' training scripts): 1

    def rows(self) -> list[tuple[str, float, str, float]]:
        """(convention, alpha used, formula, scaling) for a table."""
        given = self.alpha
        return [
            (
                "PEFT LoraConfig",
                PEFT_DEFAULT_ALPHA if given is None else given,
                "alpha / r",
                self.peft,
            ),
            (
                "rsLoRA (PEFT use_rslora=True)",
                PEFT_DEFAULT_ALPHA if given is None else given,
                "alpha / sqrt(r)",
                self.rslora,
            ),
            (
                "kohya sd-scripts (alpha in the file)",
                KOHYA_DEFAULT_ALPHA if given is None else given,
                "alpha / r",
                self.kohya,
            ),
            (
                "lorakit, diffusers' scripts",
                float(self.r) if given is None else given,
                "alpha / r",
                self.lorakit,
            ),
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
