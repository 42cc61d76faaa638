"""Where text meets image, read off the built modules: cross-attention in the UNets, joint attention
with two streams or one in SD3 and Flux, and what each adapted layer reads."""

import pytest

from lorakit import architectures as a


@pytest.fixture(scope="module")
def meta_models():
    return {name: a.build(name) for name in a.ARCHITECTURES}


def test_the_kinds_of_attention(meta_models):
    tables = {name: a.meeting_table(m) for name, m in meta_models.items()}
    assert {k: v["count"] for k, v in tables["sd15"].items()} == {a.SELF: 16, a.CROSS: 16}
    assert {k: v["count"] for k, v in tables["sdxl"].items()} == {a.SELF: 70, a.CROSS: 70}
    assert tables["sdxl"][a.CROSS]["text_width"] == {2048}
    assert tables["sd15"][a.CROSS]["text_width"] == {768}
    assert {k: v["count"] for k, v in tables["sd3"].items()} == {a.JOINT_TWO_STREAMS: 24}
    assert {k: v["count"] for k, v in tables["flux"].items()} == {
        a.JOINT_TWO_STREAMS: 19,
        a.JOINT_ONE_STREAM: 38,
    }
    assert tables["flux"][a.JOINT_TWO_STREAMS]["heads"] == {24}


def test_what_each_layer_reads(meta_models):
    sdxl, flux = meta_models["sdxl"], meta_models["flux"]
    block = "down_blocks.2.attentions.0.transformer_blocks.3"
    assert [a.reads(sdxl, f"{block}.attn2.{p}") for p in ("to_q", "to_k", "to_v", "to_out.0")] == [
        "image",
        "text",
        "text",
        "image",
    ]
    assert a.reads(sdxl, f"{block}.attn1.to_k") == "image"
    assert a.reads(flux, "transformer_blocks.4.attn.add_v_proj") == "text"
    assert a.reads(flux, "transformer_blocks.4.ff_context.net.2") == "text"
    assert a.reads(flux, "transformer_blocks.4.attn.to_v") == "image"
    assert a.reads(flux, "single_transformer_blocks.30.attn.to_q") == "both"
    assert a.reads(flux, "single_transformer_blocks.30.norm.linear") == "timestep"
    assert a.reads(flux, "transformer_blocks.4.norm1_context.linear") == "timestep"
    assert a.reads(sdxl, "down_blocks.2.resnets.0.time_emb_proj") == "timestep"
