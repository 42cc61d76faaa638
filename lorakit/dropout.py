"""The LoRA layer's dropout, drawn 16 bits an element: torch's dropout, faster on a CPU.

Introduced in notebooks/02_lora_from_scratch.ipynb (the ``dropout`` of the LoRA layer).

``nn.Dropout`` on a CPU draws one random number an element (``bernoulli_``), which costs more
than the rank-r path it regularises: a sixth of a training step of the tiny SD with LoRA dropout
0.1. :class:`LoRADropout` draws 64 random bits at a time from torch's generator and cuts them into
four 16-bit numbers, one an element; an element is dropped when its number is among the lowest
``round(p * 65536)`` of the 65,536 (at least 1, at most 65,535). So ``p`` counts to 1/65,536
(0.1 drops with probability 0.100006) and the kept elements are scaled by 1 / (1 - that
probability): the expectation stays ``x``, as with ``nn.Dropout``. In eval mode it returns ``x``;
on a GPU it is ``nn.Dropout``'s fused kernel.

Left out: the other layers' dropout (they keep torch's), a dropout over whole tokens or channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LEVELS", "LoRADropout"]

LEVELS = 65536  # the values a 16-bit number takes: p counts in steps of 1 / LEVELS


class LoRADropout(nn.Dropout):
    """``nn.Dropout(p)`` whose mask, on a CPU, takes 16 random bits an element instead of a float.

    ``drop_probability`` is the probability it uses on a CPU: ``p`` rounded to a multiple of
    1/65,536, kept inside [1/65,536, 65,535/65,536] for any 0 < p < 1.
    """

    def __init__(self, p: float = 0.5):
        super().__init__(p)
        # the 16-bit values that drop an element: never none or all for 0 < p < 1
        self.dropped_levels = min(max(round(p * LEVELS), 1), LEVELS - 1) if p > 0 else 0
        self.drop_probability = self.dropped_levels / LEVELS
        self.keep_scale = LEVELS / (LEVELS - self.dropped_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropped_levels == 0:
            return x
        if x.device.type != "cpu":  # the GPU's dropout kernel is fused: keep it
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        numbers = bits.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
        keep = torch.empty(x.shape, dtype=x.dtype)  # 1 where kept, 0 where dropped
        torch.ge(numbers, self.dropped_levels - LEVELS // 2, out=keep)
        return x * keep.mul_(self.keep_scale)
