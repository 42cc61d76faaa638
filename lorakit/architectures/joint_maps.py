"""Joint attention written out, and its per-token maps captured from SD3- and Flux-shaped models.

Introduced in notebooks/12_beyond_sd15.ipynb.

In SD3's and Flux's joint attention the image tokens (B, N, C) and the text tokens (B, T, C) are
projected, each stream by its own layers (one shared set in Flux's single-stream blocks), joined
into one sequence, and one ``softmax(Q K^T / sqrt(d))`` runs over all T + N keys: an image token
attends to the text *and* to the other image tokens, and the text tokens attend to the image.
:class:`JointAttentionRecorder` computes that as diffusers' ``JointAttnProcessor2_0`` (SD3) and
``FluxAttnProcessor`` (Flux: q/k norms, rotary embedding) do, but forms the softmax explicitly and
records it, text first; :func:`capture_joint_attention` puts it into every attention for a
``with`` block; :func:`image_rows` and :func:`token_map` read the records.

Left out: attention masks, fused projections, SD 3.5's image-only ``attn2``; records average the
heads.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn

__all__ = [
    "JointAttentionRecorder",
    "JointRecords",
    "capture_joint_attention",
    "image_rows",
    "joint_qkv",
    "token_map",
]


@dataclass
class JointRecords:
    """``maps[path]``: one (B, T + N, T + N) map a call, queries and keys in [text, image] order,
    averaged over heads; ``text_tokens``: T."""

    maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    text_tokens: int = 0


def _heads(attn: nn.Module, t: torch.Tensor) -> torch.Tensor:
    return t.unflatten(-1, (attn.heads, -1))  # (B, L, heads * d) -> (B, L, heads, d)


def _normed(norm: nn.Module | None, t: torch.Tensor) -> torch.Tensor:
    return t if norm is None else norm(t)  # RMS/LayerNorm over d, the last axis


def joint_qkv(attn, x, context=None, rotary=None):
    """q, k, v (B, heads, L, d) of the joint sequence, text first: ``context`` (B, T, C) through the
    text stream's ``add_*_proj``, ``x`` (B, N, C) through ``to_q/to_k/to_v``, each normed as the
    module says, then Flux's rotary embedding (``rotary``, built for [text, image]). SD3 joins
    [image, text]; no position is in its attention, so the order changes nothing but the rows'."""
    q, k, v = (_heads(attn, p(x)) for p in (attn.to_q, attn.to_k, attn.to_v))  # (B, N, heads, d)
    q, k = _normed(attn.norm_q, q), _normed(attn.norm_k, k)
    if context is not None:
        projections = (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        cq, ck, cv = (_heads(attn, p(context)) for p in projections)  # (B, T, heads, d)
        cq, ck = _normed(attn.norm_added_q, cq), _normed(attn.norm_added_k, ck)
        q, k, v = (torch.cat(pair, dim=1) for pair in ((cq, q), (ck, k), (cv, v)))  # (B, T+N, ..)
    if rotary is not None:
        q = apply_rotary_emb(q, rotary, sequence_dim=1)
        k = apply_rotary_emb(k, rotary, sequence_dim=1)
    return (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, L, d)


class JointAttentionRecorder:
    """An attention processor for SD3's ``Attention`` and Flux's ``FluxAttention`` that computes
    joint attention with an explicit softmax and appends its head-averaged map to ``records``."""

    def __init__(self, name: str, records: JointRecords):
        self.name, self.records = name, records

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        image_rotary_emb=None,
        *args,
        **kwargs,
    ):
        if attention_mask is not None:
            raise NotImplementedError("lorakit's joint attention leaves attention masks out.")
        q, k, v = joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        probs = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])).softmax(dim=-1)  # (B,h,L,L)
        self.records.maps.setdefault(self.name, []).append(probs.mean(dim=1).detach().cpu())
        out = (probs @ v).transpose(1, 2).flatten(2)  # (B, heads, L, d) -> (B, L, heads * d)
        if encoder_hidden_states is None:
            return out  # a single-stream block: its proj_out follows the attention
        text, image = out.split([encoder_hidden_states.shape[1], hidden_states.shape[1]], dim=1)
        image = attn.to_out[1](attn.to_out[0](image))
        if getattr(attn, "context_pre_only", False):  # SD3's last block: no text output
            return image, text
        return image, attn.to_add_out(text)


@contextmanager
def capture_joint_attention(model: nn.Module) -> Iterator[JointRecords]:
    """Record every joint attention of an SD3 or Flux transformer while the block runs."""
    if not hasattr(model, "set_attn_processor"):
        raise TypeError(f"expected a diffusers transformer, got {type(model).__name__}.")
    records = JointRecords()

    def note_text(module, args, kwargs):
        records.text_tokens = kwargs["encoder_hidden_states"].shape[1]

    original = model.attn_processors
    model.set_attn_processor(
        {key: JointAttentionRecorder(key.removesuffix(".processor"), records) for key in original}
    )
    hook = model.register_forward_pre_hook(note_text, with_kwargs=True)
    try:
        yield records
    finally:
        hook.remove()
        model.set_attn_processor(dict(original))


def image_rows(records: JointRecords) -> torch.Tensor:
    """The image tokens' rows (B, N, T + N), keys in [text, image] order, averaged over every
    recorded layer and call: each row sums to 1, its first T entries are the text's share."""
    rows = [torch.stack(calls).mean(0) for calls in records.maps.values()]  # (B, L, L) each
    return torch.stack(rows).mean(0)[:, records.text_tokens :]


def token_map(records: JointRecords, token_index: int) -> torch.Tensor:
    """(B, side, side): how much each image token attends to text token ``token_index``."""
    column = image_rows(records)[..., token_index]  # (B, N)
    side = math.isqrt(column.shape[1])
    return column.reshape(-1, side, side)
