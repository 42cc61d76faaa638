"""Where text meets image in each architecture, read off the built modules.

Introduced in notebooks/12_beyond_sd15.ipynb.

Every attention module of a denoiser is one of four kinds (:func:`attention_kind`): a
*self-attention* over the image alone (SD's ``attn1``); a *cross-attention* (``attn2``: queries from
the image, keys and values from the text, which it only reads); a *joint attention, two streams*
(SD3's and Flux's double-stream blocks: image and text tokens each have their own projections,
``to_q/to_k/to_v/to_out.0`` and ``add_q_proj/add_k_proj/add_v_proj/to_add_out``, and one softmax
runs over both, so the text is updated too); a *joint attention, one stream* (Flux's single-stream
blocks: one set of projections over the concatenated tokens). :func:`reads` says what a linear
layer of a block reads: the image, the text, or both. :func:`meeting_table` counts it all.

Left out: attention inside the text encoders, SD 3.5's extra image-only ``attn2``, IP-Adapter.
"""

from __future__ import annotations

from torch import nn

__all__ = [
    "CROSS",
    "JOINT_ONE_STREAM",
    "JOINT_TWO_STREAMS",
    "SELF",
    "TEXT_STREAM",
    "TIMESTEP_PARTS",
    "attention_kind",
    "attention_modules",
    "meeting_table",
    "reads",
]

SELF, CROSS = "self-attention (image only)", "cross-attention"
JOINT_TWO_STREAMS, JOINT_ONE_STREAM = "joint, two streams", "joint, one stream"
# The layers of a double-stream block that belong to the text stream.
TEXT_STREAM = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "ff_context")
SINGLE_STREAM_BLOCKS = ("FluxSingleTransformerBlock",)
# Layers that read the timestep embedding (with SDXL's and SD3's/Flux's pooled text), not tokens:
# the adaptive norms' modulation, the resnets' time projections, the embedders themselves.
TIMESTEP_PARTS = ("time_emb_proj", "time_embedding", "time_text_embed", "add_embedding")


def _is_attention(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, p, None), nn.Linear) for p in ("to_q", "to_k", "to_v"))


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{path: module}`` of every attention of ``model`` (a module with ``to_q/to_k/to_v``)."""
    return {name: m for name, m in model.named_modules() if _is_attention(m)}


def attention_kind(model: nn.Module, path: str) -> str:
    """The kind of the attention at ``path``: :data:`SELF`, :data:`CROSS`,
    :data:`JOINT_TWO_STREAMS` or :data:`JOINT_ONE_STREAM`."""
    attn = model.get_submodule(path)
    if isinstance(getattr(attn, "add_k_proj", None), nn.Linear):
        return JOINT_TWO_STREAMS
    parent = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    if type(parent).__name__ in SINGLE_STREAM_BLOCKS:
        return JOINT_ONE_STREAM
    if getattr(attn, "is_cross_attention", False):
        return CROSS
    return SELF


def reads(model: nn.Module, path: str) -> str:
    """What the linear layer at ``path`` reads: "image", "text", "both" or "timestep".

    The adaptive norms (``norm1.linear``, ...) and time projections read the timestep embedding
    (:data:`TIMESTEP_PARTS`); a cross-attention's ``to_k``/``to_v`` read the text, as do a
    double-stream block's text-stream layers (:data:`TEXT_STREAM`); a single-stream block's layers
    read both; the rest reads the image."""
    parts = path.split(".")
    if any(p.startswith("norm") or p in TIMESTEP_PARTS for p in parts):
        return "timestep"
    for i in range(len(parts) - 1, 0, -1):
        holder = model.get_submodule(".".join(parts[:i]))
        if type(holder).__name__ in SINGLE_STREAM_BLOCKS:
            return "both"
        if _is_attention(holder) and attention_kind(model, ".".join(parts[:i])) == CROSS:
            return "text" if parts[i] in ("to_k", "to_v") else "image"
    return "text" if any(p in TEXT_STREAM for p in parts) else "image"


def meeting_table(model: nn.Module) -> dict[str, dict]:
    """For each kind of attention in ``model``: how many, the image width the queries come from
    (``to_q``'s input), the text width (``to_k``'s input in a cross-attention, ``add_k_proj``'s in
    a joint one) and the heads."""
    table: dict[str, dict] = {}
    for path, attn in attention_modules(model).items():
        kind = attention_kind(model, path)
        row = table.setdefault(
            kind, {"count": 0, "image_width": set(), "text_width": set(), "heads": set()}
        )
        row["count"] += 1
        row["image_width"].add(attn.to_q.in_features)
        if kind == CROSS:
            row["text_width"].add(attn.to_k.in_features)
        elif kind == JOINT_TWO_STREAMS:
            row["text_width"].add(attn.add_k_proj.in_features)
        row["heads"].add(attn.heads)
    return table
