"""Joint attention with an explicit softmax equals diffusers' processors, and its rows are the
softmax over text and image keys, computed here from the module's own layers."""

import pytest
import torch

from lorakit import architectures


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 4, 16, 16, generator=g),
        torch.randn(2, 7, 64, generator=g),
        torch.randn(2, 64, generator=g),
    )


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_recording_changes_nothing_but_rounding(name):
    model = architectures.build_tiny(name)
    x, text, pooled = inputs()
    default = {k: type(p) for k, p in model.attn_processors.items()}
    with torch.no_grad():
        want = architectures.denoise(model, x, text, pooled)
        with architectures.capture_joint_attention(model) as records:
            got = architectures.denoise(model, x, text, pooled)
    assert torch.allclose(got, want, atol=1e-5)
    assert {k: type(p) for k, p in model.attn_processors.items()} == default
    assert records.text_tokens == 7 and len(records.maps) == len(default)
    rows = architectures.image_rows(records)  # (B, N, T + N)
    assert rows.shape == (2, 64, 7 + 64)
    assert torch.allclose(rows.sum(-1), torch.ones(2, 64), atol=1e-5)
    assert architectures.token_map(records, 2).shape == (2, 8, 8)


def test_sd3s_rows_are_the_softmax_over_text_and_image_keys():
    model = architectures.build_tiny("sd3")
    attn = model.transformer_blocks[0].attn
    seen = {}
    hook = attn.register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    x, text, pooled = inputs(1)
    with torch.no_grad(), architectures.capture_joint_attention(model) as records:
        architectures.denoise(model, x, text, pooled)
    hook.remove()
    image, context = seen["hidden_states"], seen["encoder_hidden_states"]  # (B, N, C), (B, T, C)
    heads, d = attn.heads, attn.to_q.out_features // attn.heads
    with torch.no_grad():
        q = attn.to_q(image).reshape(2, -1, heads, d).transpose(1, 2)  # (B, h, N, d)
        keys = torch.cat([attn.add_k_proj(context), attn.to_k(image)], dim=1)  # text, then image
        k = keys.reshape(2, -1, heads, d).transpose(1, 2)  # (B, h, T + N, d)
        want = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1).mean(1)  # (B, N, T + N)
    got = records.maps["transformer_blocks.0.attn"][0][:, 7:]  # the image tokens' rows
    assert torch.allclose(got, want, atol=1e-6)
    share = got[..., :7].sum(-1)  # what the image gives the text: less than all of it
    assert torch.all((share > 0) & (share < 1))
