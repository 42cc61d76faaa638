"""What autograd keeps for backward in one training step: measured on the ``meta`` device.

Introduced in notebooks/08_stable_diffusion_gpu.ipynb.

:func:`activations_per_image` builds the UNet again from its config on the ``meta`` device
(shapes only, no memory, no arithmetic), gives it the same LoRA, and runs it forward at batch 1
under ``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor saved for backward;
each distinct storage that is not a parameter is counted once. On the meta device PyTorch would
take the *math* attention path, which saves the whole N x N matrix; the fused kernels SDPA uses
on a GPU and on the CPU save only q, k, v, the output and a float32 log-sum-exp, so attention
runs through a stand-in that saves exactly those (:func:`fused_sdpa`). With gradient
checkpointing, diffusers re-runs each ResNet and transformer block during backward: a recording
``gradient_checkpointing_func`` finds the blocks, and the count is what non-reentrant
checkpointing keeps (what is saved outside them, every block's inputs, the largest block's
insides). Left out: transient buffers of the backward pass, workspaces, the allocator's cache.
"""

from __future__ import annotations

import functools
import json

import torch
import torch.nn.functional as F

from lorakit import inject, models

__all__ = ["TEXT_TOKENS", "activations_per_image", "fused_sdpa"]

TEXT_TOKENS = 77  # CLIP's context length: the text embeddings the UNet attends to


class _FusedAttention(torch.autograd.Function):
    """Stands in for SDPA on the meta device, saving what the fused kernels save for backward."""

    @staticmethod
    def forward(ctx, q, k, v):  # (B, H, N, d), (B, H, M, d), (B, H, M, d)
        out = torch.empty_like(q)  # (B, H, N, d)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)  # (B, H, N) log-sum-exp per query
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def fused_sdpa(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs
):
    """``F.scaled_dot_product_attention``'s signature, saving for backward what the fused
    kernels save (not the attention matrix)."""
    return _FusedAttention.apply(query, key, value)


def _kept_bytes(outside: dict, inputs: dict, blocks: list[dict], checkpointing: bool) -> int:
    """What stays saved: everything, or (with checkpointing) what is saved outside the blocks,
    their inputs and the insides of the largest block."""
    every_block = {k: v for block in blocks for k, v in block.items()}
    if not checkpointing:  # (block inputs count only where autograd saved them)
        return sum({**outside, **every_block}.values())
    kept = {**outside, **inputs}
    largest = max(
        (sum(v for k, v in block.items() if k not in kept) for block in blocks), default=0
    )
    return sum(kept.values()) + largest


def _saved_bytes(unet, latents, timesteps, context, checkpointing: bool) -> int:
    """Bytes autograd keeps from one forward + loss of ``unet`` (on the meta device)."""
    frozen = {t.untyped_storage()._cdata for t in [*unet.parameters(), *unet.buffers()]}
    outside: dict[int, int] = {}  # storage -> bytes, saved outside any checkpointed block
    inputs: dict[int, int] = {}  # storage -> bytes, inputs of checkpointed blocks
    blocks: list[dict[int, int]] = []  # per checkpointed block: what it saves inside
    stack: list[dict[int, int]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in frozen:
            (stack[-1] if stack else outside)[storage._cdata] = storage.nbytes()
        return t

    def record_block(block, *args):  # diffusers calls this where it would checkpoint ``block``
        for a in args:
            if isinstance(a, torch.Tensor) and a.untyped_storage()._cdata not in frozen:
                inputs[a.untyped_storage()._cdata] = a.untyped_storage().nbytes()
        stack.append({})
        try:
            return block(*args)
        finally:
            blocks.append(stack.pop())

    unet.enable_gradient_checkpointing(gradient_checkpointing_func=record_block)
    unet.train()
    real_sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = fused_sdpa  # diffusers' AttnProcessor2_0 looks it up per call
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            pred = unet(latents.to(unet.dtype), timesteps, context.to(unet.dtype)).sample.float()
            F.mse_loss(pred, torch.empty_like(pred))  # (its saved tensors count too)
    finally:
        F.scaled_dot_product_attention = real_sdpa
    return _kept_bytes(outside, inputs, blocks, checkpointing)


@functools.lru_cache(maxsize=64)
def activations_per_image(
    unet_config_json: str,
    latent_side: int,
    dtype_name: str,
    r: int,
    targets_json: str,
    checkpointing: bool,
    dropout: float = 0.0,
) -> int:
    """Bytes saved for backward by one picture's step of a UNet of this config, with this LoRA
    (cached per model config, latent size, dtype and LoRA)."""
    unet_config = json.loads(unet_config_json)
    dtype = getattr(torch, dtype_name)
    with torch.device("meta"):
        unet = models.UNet2DConditionModel.from_config(unet_config)
        # (diffusers' own .to warns about casting; nothing to keep in float32 here)
        torch.nn.Module.to(unet, dtype)
        unet.requires_grad_(False)
        inject.inject_lora(unet, r=r, target_modules=json.loads(targets_json), dropout=dropout)
        unet.train()  # LoRA dropout saves its mask and dropped input in training mode only
        side, width = latent_side, unet.config.cross_attention_dim
        latents = torch.empty(1, unet.config.in_channels, side, side)  # (1, 4, h, w) as cached
        context = torch.empty(1, TEXT_TOKENS, width)  # (1, 77, D)
        timesteps = torch.zeros(1, dtype=torch.long)
    return _saved_bytes(unet, latents, timesteps, context, checkpointing)
