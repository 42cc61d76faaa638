"""The published configs hold the values of the hub's config.json files, and the builds are what
diffusers makes of them: block counts, widths and text widths read off the built modules."""

import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock, JointTransformerBlock
from diffusers.models.transformers.transformer_flux import (
    FluxSingleTransformerBlock,
    FluxTransformerBlock,
)

from lorakit import architectures


def count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def test_sdxl_base_unet_config():
    c = architectures.SDXL_UNET_CONFIG
    assert c["block_out_channels"] == (320, 640, 1280)
    assert c["transformer_layers_per_block"] == (1, 2, 10)
    assert c["attention_head_dim"] == (5, 10, 20)
    assert c["cross_attention_dim"] == 2048 == sum(architectures.TEXT_ENCODERS["sdxl"].values())
    assert c["addition_embed_type"] == "text_time" and c["addition_time_embed_dim"] == 256
    assert c["projection_class_embeddings_input_dim"] == 6 * 256 + 1280 == 2816
    assert c["down_block_types"] == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert c["use_linear_projection"] and c["sample_size"] == 128


def test_sd3_medium_transformer_config():
    c = architectures.SD3_MEDIUM_TRANSFORMER_CONFIG
    assert (c["num_layers"], c["num_attention_heads"], c["attention_head_dim"]) == (24, 24, 64)
    assert c["caption_projection_dim"] == 24 * 64 == 1536
    assert (c["joint_attention_dim"], c["pooled_projection_dim"]) == (4096, 2048)
    assert (c["patch_size"], c["in_channels"], c["out_channels"]) == (2, 16, 16)
    assert (c["pos_embed_max_size"], c["sample_size"]) == (192, 128)
    assert "dual_attention_layers" not in c and "qk_norm" not in c  # SD3 medium, not 3.5


def test_flux_dev_transformer_config():
    c = architectures.FLUX_DEV_TRANSFORMER_CONFIG
    assert (c["num_layers"], c["num_single_layers"]) == (19, 38)
    assert c["num_attention_heads"] * c["attention_head_dim"] == 24 * 128 == 3072
    assert (c["joint_attention_dim"], c["pooled_projection_dim"]) == (4096, 768)
    assert (c["in_channels"], c["patch_size"], c["guidance_embeds"]) == (64, 1, True)
    assert tuple(c["axes_dims_rope"]) == (16, 56, 56) and sum(c["axes_dims_rope"]) == 128


def test_the_meta_builds_have_the_published_layouts():
    sdxl, sd3, flux = (architectures.build(n) for n in ("sdxl", "sd3", "flux"))
    assert all(p.device.type == "meta" for m in (sdxl, sd3, flux) for p in m.parameters())
    # SDXL: 2 x 2 and 2 x 10 down, 10 mid, 3 x 10 and 3 x 2 up transformer blocks, each an attn2
    assert count(sdxl, BasicTransformerBlock) == 2 * 2 + 2 * 10 + 10 + 3 * 10 + 3 * 2
    assert {
        b.attn2.to_k.in_features for b in sdxl.modules() if isinstance(b, BasicTransformerBlock)
    } == {2048}
    assert count(sd3, JointTransformerBlock) == 24
    assert sd3.context_embedder.in_features == 4096 and sd3.context_embedder.out_features == 1536
    assert (count(flux, FluxTransformerBlock), count(flux, FluxSingleTransformerBlock)) == (19, 38)
    assert flux.x_embedder.in_features == 64 and flux.context_embedder.in_features == 4096


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sd3", "flux"])
def test_tiny_twins_keep_the_class_and_layout_and_are_seeded(name):
    big, tiny = architectures.build(name), architectures.build_tiny(name, seed=3)
    assert type(big) is type(tiny)
    kinds = lambda m: [type(b).__name__ for b in m.modules()]  # noqa: E731
    assert set(kinds(big)) == set(kinds(tiny))
    again = architectures.build_tiny(name, seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(tiny.parameters(), again.parameters(), strict=True)
    )
    assert next(tiny.parameters()).device.type == "cpu"


def test_an_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture 'sd2'"):
        architectures.build("sd2")
