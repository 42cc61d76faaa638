"""Cross-attention written out, and per-token attention maps captured from a real UNet.

Introduced in notebooks/04_cross_attention.ipynb.

Every ``attn2`` of SD's UNet is a cross-attention: the image features ``x`` (B, N, C), one row a
latent position, ask (queries Q); the text embeddings ``context`` (B, T, D), one row a token,
answer (keys K, values V); each position takes the ``softmax(Q K^T / sqrt(d))`` mix of the
tokens' values. Its ``to_q``, ``to_k``, ``to_v`` and ``to_out.0`` are what lesson 05's LoRA adapts.
:func:`cross_attention` computes it from scratch, :func:`attention_from_module` with a diffusers
``Attention``'s weights; :func:`capture_cross_attention` records the maps of every ``attn2`` for a
``with`` block, and :func:`token_maps` turns them into one map a picture for a token.

Left out: attention masks, the ``Attention`` extras SD 1.5's ``attn2`` does not use (they raise),
fast kernels (the same maths in less memory), self-attention maps. Records average the heads
unless ``keep_heads=True`` (SD 1.5 at 512x512 would store gigabytes a picture).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "CrossAttentionRecorder",
    "attention_from_module",
    "attention_probs",
    "attn2_modules",
    "capture_cross_attention",
    "cross_attention",
    "merge_heads",
    "split_heads",
    "token_indices",
    "token_maps",
]


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads * d) -> (B, heads, L, d): each head attends with its own slice of the width."""
    b, length, width = t.shape
    if width % heads:
        raise ValueError(
            f"a width of {width} does not split into {heads} heads: use a divisor of {width}."
        )
    return t.reshape(b, length, heads, width // heads).transpose(1, 2)  # (B, heads, L, d)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d) -> (B, L, heads * d): the inverse of :func:`split_heads`."""
    b, heads, length, d = t.shape
    return t.transpose(1, 2).reshape(b, length, heads * d)  # (B, L, heads * d)


def cross_attention(
    x: torch.Tensor,
    context: torch.Tensor,
    to_q: nn.Module,
    to_k: nn.Module,
    to_v: nn.Module,
    to_out: nn.Module,
    heads: int,
    scale: float | None = None,
    return_probs: bool = False,
):
    """Queries from ``x`` (B, N, C), keys and values from ``context`` (B, T, D); returns (B, N, C).

    ``scale`` defaults to 1 / sqrt(d), d the width of one head. With ``return_probs`` it returns
    ``(out, probs)``, ``probs`` the softmax maps (B, heads, N, T) that sum to 1 over the T tokens.
    """
    q = split_heads(to_q(x), heads)  # (B, N, C) -> (B, N, inner) -> (B, heads, N, d)
    k = split_heads(to_k(context), heads)  # (B, T, D) -> (B, T, inner) -> (B, heads, T, d)
    v = split_heads(to_v(context), heads)  # (B, heads, T, d)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (
        q @ k.transpose(-1, -2)
    ) * scale  # (B, heads, N, T): how well position n matches token t
    probs = scores.softmax(dim=-1)  # (B, heads, N, T): each position's mix of tokens
    out = to_out(merge_heads(probs @ v))  # (B, heads, N, d) -> (B, N, inner) -> (B, N, C)
    return (out, probs) if return_probs else out


def _check_plain(
    attn: nn.Module, x: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> None:
    """Refuse, with a reason, what :func:`cross_attention` does not compute."""
    extras = {
        "group_norm": attn.group_norm is not None,
        "spatial_norm": attn.spatial_norm is not None,
        "norm_cross": bool(attn.norm_cross),
        "residual_connection": attn.residual_connection,
        "rescale_output_factor != 1": attn.rescale_output_factor != 1.0,
        "attention_mask": attention_mask is not None,
    }
    used = [name for name, on in extras.items() if on]
    if used:
        raise NotImplementedError(
            f"this Attention uses {', '.join(used)}, which lorakit.attention leaves out: "
            "it covers SD 1.5-style attn1/attn2 modules only."
        )
    if x.dim() != 3:
        raise ValueError(
            f"expected image features of shape (B, N, C), got {tuple(x.shape)}: flatten the "
            "spatial grid first, x.flatten(2).transpose(1, 2)."
        )


def attention_from_module(
    attn: nn.Module,
    x: torch.Tensor,
    context: torch.Tensor | None = None,
    return_probs: bool = False,
):
    """:func:`cross_attention` with a diffusers ``Attention``'s weights, heads and scale
    (``context=None``: self-attention)."""
    _check_plain(attn, x)
    context = x if context is None else context
    return cross_attention(
        x,
        context,
        attn.to_q,
        attn.to_k,
        attn.to_v,
        attn.to_out[0],
        attn.heads,
        scale=attn.scale,
        return_probs=return_probs,
    )


def attention_probs(
    attn: nn.Module, x: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """The softmax maps (B, heads, N, T) of a diffusers ``Attention`` on ``x`` and ``context``."""
    return attention_from_module(attn, x, context, return_probs=True)[1]


def attn2_modules(unet: nn.Module) -> dict[str, nn.Module]:
    """``{module path: Attention}`` of every cross-attention (``attn2``) in ``unet``.

    In ``named_modules`` order, which lists the UNet's ``up_blocks`` before its ``mid_block``.
    """
    return {
        name: module for name, module in unet.named_modules() if name.rsplit(".", 1)[-1] == "attn2"
    }


class CrossAttentionRecorder:
    """A diffusers attention processor that computes attention as :func:`cross_attention` does and
    appends its maps to ``records[name]``: (B, N, T) averaged over heads, or (B, heads, N, T).

    With ``keep_graph`` the maps stay on their device and in the autograd graph, so that a loss
    on them trains the model (``lorakit.maintainer.pretrain``'s token loss); otherwise they are
    detached float32 copies on the CPU."""

    def __init__(
        self,
        name: str,
        records: dict[str, list[torch.Tensor]],
        keep_heads: bool = False,
        keep_graph: bool = False,
    ):
        self.name, self.records, self.keep_heads, self.keep_graph = (
            name,
            records,
            keep_heads,
            keep_graph,
        )

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        *args,
        **kwargs,
    ):
        _check_plain(attn, hidden_states, attention_mask)
        out, probs = attention_from_module(
            attn, hidden_states, encoder_hidden_states, return_probs=True
        )  # (B, N, C), (B, heads, N, T)
        maps = probs if self.keep_heads else probs.mean(dim=1)  # (B, heads, N, T) or (B, N, T)
        self.records.setdefault(self.name, []).append(
            maps if self.keep_graph else maps.detach().float().cpu()
        )
        return attn.to_out[1](out)  # dropout, as diffusers' processors apply it


@contextmanager
def capture_cross_attention(
    unet: nn.Module, keep_heads: bool = False, keep_graph: bool = False
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record every ``attn2``'s maps while the block runs: yields ``{attn2 path: [maps per call]}``.

    One UNet call per denoising step (both CFG halves in one batch), so ``records[path][i]`` is
    step i.
    """
    if not hasattr(unet, "set_attn_processor"):
        raise TypeError(
            f"capture_cross_attention needs a diffusers UNet, got {type(unet).__name__}: "
            "pass pipe.unet, not the pipeline."
        )
    original = unet.attn_processors  # {"down_blocks.0....attn1.processor": processor, ...}
    if not any(key.endswith("attn2.processor") for key in original):
        raise ValueError("this UNet has no attn2 (cross-attention) modules to record.")
    records: dict[str, list[torch.Tensor]] = {}
    unet.set_attn_processor(
        {
            key: CrossAttentionRecorder(
                key.removesuffix(".processor"), records, keep_heads, keep_graph
            )
            if key.endswith("attn2.processor")
            else processor
            for key, processor in original.items()
        }
    )
    try:
        yield records
    finally:
        unet.set_attn_processor(
            dict(original)
        )  # a copy: set_attn_processor empties the dict it gets


def token_indices(tokenizer, prompt: str, word: str) -> list[int]:
    """Positions of ``word``'s tokens in ``prompt``'s token ids (position 0 is the start token)."""
    ids = tokenizer(prompt).input_ids
    word_ids = tokenizer(word, add_special_tokens=False).input_ids
    for start in range(len(ids) - len(word_ids) + 1):
        if word_ids and ids[start : start + len(word_ids)] == word_ids:
            return list(range(start, start + len(word_ids)))
    raise ValueError(
        f"{word!r} is not in the prompt {prompt!r} (its tokens {word_ids}, the prompt's {ids})."
    )


def token_maps(
    records: dict[str, list[torch.Tensor]],
    token_index: int | Sequence[int],
    resolution: int = 64,
    cfg: bool = True,
) -> torch.Tensor:
    """One (resolution, resolution) map per picture for ``token_index`` (a list is summed):
    (B, res, res).

    Averages over heads, steps and every layer whose grid is square (16x16, ..., 2x2 in the tiny
    SD), each upsampled to ``resolution``. ``cfg=True`` keeps the conditional (second) half of the
    batch, where the pipeline put the prompt; the first half attended to the empty prompt.
    """
    indices = [token_index] if isinstance(token_index, int) else list(token_index)
    total, layers = None, 0
    for name, steps in records.items():
        if len({tuple(m.shape) for m in steps}) != 1:
            raise ValueError(
                f"{name} holds maps of several shapes: capture one pipeline call per `with` block."
            )
        maps = torch.stack(steps)  # (S, B, N, T) or (S, B, heads, N, T)
        maps = maps.mean(dim=2) if maps.dim() == 5 else maps  # (S, B, N, T)
        maps = maps.mean(dim=0)  # (B, N, T): average over steps
        b, n, _ = maps.shape
        if cfg:
            if b % 2:
                raise ValueError(
                    f"cfg=True needs an even batch (unconditional + conditional), {name} has {b}: "
                    "pass cfg=False for a run with guidance_scale <= 1."
                )
            maps = maps[b // 2 :]  # (B/2, N, T): the prompt half
        side = math.isqrt(n)
        if side * side != n:
            continue  # a non-square grid: its shape cannot be read from N alone
        grid = maps[..., indices].sum(dim=-1).reshape(-1, 1, side, side)  # (B, 1, side, side)
        grid = F.interpolate(
            grid, size=(resolution, resolution), mode="bilinear", align_corners=False
        )
        total, layers = (grid if total is None else total + grid), layers + 1
    if total is None:
        raise ValueError(
            "no square attention grid in the records: capture a square picture (height == width)."
        )
    return (total / layers)[:, 0]  # (B, res, res)
