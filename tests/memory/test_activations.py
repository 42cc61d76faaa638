"""lorakit.memory.activations: what autograd saves grows with the batch and the resolution,
shrinks with checkpointing and half precision, and the meta-device attention saves what SDPA
does."""

import torch
import torch.nn.functional as F

from lorakit import memory, train


def cfg(**overrides) -> train.TrainConfig:
    return train.TrainConfig(**{"batch_size": 2, "progress": False, **overrides})


def test_activations_grow_with_batch_and_resolution_and_shrink_with_checkpointing():
    one = memory.estimate_memory(cfg(batch_size=1), "tiny")
    four = memory.estimate_memory(cfg(batch_size=4), "tiny")
    assert four.activations == 4 * one.activations
    assert (
        memory.estimate_memory(cfg(batch_size=1, resolution=128), "tiny").activations
        > 3 * one.activations
    )
    for model, extra in (("tiny", {}), ("sd15", dict(mixed_precision="bf16", resolution=256))):
        off = memory.estimate_memory(cfg(**extra), model)
        on = memory.estimate_memory(cfg(gradient_checkpointing=True, **extra), model)
        assert 0 < on.activations < off.activations / 2, (model, on.activations, off.activations)
    # LoRA dropout keeps its mask and the dropped input of every LoRA layer for backward.
    assert (
        memory.estimate_memory(cfg(lora_dropout=0.1), "tiny").activations
        > memory.estimate_memory(cfg(), "tiny").activations
    )
    bf16 = memory.estimate_memory(cfg(mixed_precision="bf16"), "tiny").activations
    assert bf16 < 0.7 * memory.estimate_memory(cfg(), "tiny").activations


def saved(fn) -> int:
    seen = {}

    def pack(t):
        seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_the_attention_stand_in_saves_what_real_sdpa_saves():
    """The meta-device stand-in keeps the bytes the fused CPU kernel keeps (not the N x N
    matrix)."""
    shapes = [(2, 4, 256, 16), (2, 4, 77, 16), (2, 4, 77, 16)]
    real = [torch.randn(s, requires_grad=True) for s in shapes]
    meta = [torch.empty(s, device="meta", requires_grad=True) for s in shapes]
    want = saved(lambda: F.scaled_dot_product_attention(*real))
    assert saved(lambda: memory.activations.fused_sdpa(*meta)) == want
    assert want < 2 * 4 * 256 * 77 * 4  # far less than the attention matrix
