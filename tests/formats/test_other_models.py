"""LoRAs for SDXL and Flux: an SDXL file applied by lorakit computes what diffusers'
``load_lora_weights`` computes from the same file; Flux files described, resized, merged and
converted with nothing but the file; a LoRA meets only a model of its own architecture.

The tiny SDXL is lesson 12's (``tiny_sdxl_pipeline``: SDXL's block layout at small widths, two
small CLIP text encoders, in diffusers' own ``StableDiffusionXLPipeline``).
"""

import copy

import pytest
import safetensors.torch
import torch

from lorakit import formats, inject
from lorakit.architectures import configs
from lorakit.architectures.tiny_pipelines import tiny_sdxl_pipeline

# kohya's SDXL names (Stability's UNet layout) and the diffusers module each one is, written out
# here by hand for SDXL's layout (2 ResNets a block, the transformer second in each input block)
LDM_NAMES = {
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    ),
    "lora_unet_input_blocks_8_1_transformer_blocks_1_attn1_to_q": (
        "down_blocks.2.attentions.1.transformer_blocks.1.attn1.to_q"
    ),
    "lora_unet_middle_block_1_proj_in": "mid_block.attentions.0.proj_in",
    "lora_unet_output_blocks_2_1_transformer_blocks_1_ff_net_2": (
        "up_blocks.0.attentions.2.transformer_blocks.1.ff.net.2"
    ),
    "lora_unet_output_blocks_5_1_proj_out": "up_blocks.1.attentions.2.proj_out",
    "lora_unet_input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",
    "lora_unet_output_blocks_7_0_skip_connection": "up_blocks.2.resnets.1.conv_shortcut",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    ),
    # (with q_proj alone diffusers' loader cannot tell the text encoder's spelling: kohya trains
    # the four projections together)
    "lora_te1_text_model_encoder_layers_0_self_attn_out_proj": (
        "text_encoder.text_model.encoder.layers.0.self_attn.out_proj"
    ),
    "lora_te2_text_model_encoder_layers_1_self_attn_k_proj": (
        "text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj"
    ),
    "lora_te2_text_model_encoder_layers_1_self_attn_out_proj": (
        "text_encoder_2.text_model.encoder.layers.1.self_attn.out_proj"
    ),
}


def kohya_sdxl_file(pipe, path):
    """A kohya SDXL LoRA on :data:`LDM_NAMES` (its shapes from the tiny model), rank 4, alphas
    that differ by module."""
    modules = {n: m for p, part in inject.components(pipe) for n, m in _named(p, part)}
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for name, path_ in LDM_NAMES.items():
        layer = modules[path_.replace("text_model.", "", 1) if path_ not in modules else path_]
        conv = isinstance(layer, torch.nn.Conv2d)
        n_in = layer.in_channels if conv else layer.in_features
        n_out = layer.out_channels if conv else layer.out_features
        kernel = tuple(layer.kernel_size) if conv else ()
        tensors[f"{name}.lora_down.weight"] = torch.randn(4, n_in, *kernel, generator=g) * 0.3
        tensors[f"{name}.lora_up.weight"] = (
            torch.randn(n_out, 4, *((1, 1) if conv else ()), generator=g) * 0.3
        )
        tensors[f"{name}.alpha"] = torch.tensor(2.0)  # one alpha: diffusers misreads several
    safetensors.torch.save_file(tensors, str(path), {"ss_base_model_version": "sdxl_base_v1-0"})
    return path


def _named(prefix, part):
    return [(prefix + n, m) for n, m in part.named_modules()]


def outputs(pipe):
    """The UNet's output and both text encoders' for fixed inputs."""
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 4, 16, 16, generator=g), torch.tensor([400])
    context = torch.randn(1, 77, 64, generator=g)
    added = {
        "text_embeds": torch.randn(1, 64, generator=g),
        "time_ids": torch.rand(1, 6, generator=g),
    }
    ids = torch.randint(0, 1000, (1, 77), generator=g)
    with torch.no_grad():
        return (
            pipe.unet(x, t, context, added_cond_kwargs=added).sample,
            pipe.text_encoder(ids)[0],
            pipe.text_encoder_2(ids)[0],
        )


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    pipe = tiny_sdxl_pipeline()
    folder = tmp_path_factory.mktemp("sdxl")
    return pipe, kohya_sdxl_file(pipe, folder / "kohya.safetensors"), folder


def test_kohya_sdxl_names_resolve_to_diffusers_modules(sdxl):
    pipe, path, _ = sdxl
    assert sorted(formats.load_lora(path).modules) == sorted(LDM_NAMES.values())  # no model
    assert sorted(formats.load_lora(path, pipe).modules) == sorted(LDM_NAMES.values())


@pytest.mark.parametrize("kind", ["kohya", "diffusers"])
def test_an_sdxl_lora_computes_what_diffusers_loader_computes(sdxl, kind):
    pipe, path, folder = sdxl
    if kind == "diffusers":
        path = formats.convert(path, folder / "diffusers.safetensors", to="diffusers")
    base = outputs(pipe)
    theirs_pipe, ours_pipe = copy.deepcopy(pipe), copy.deepcopy(pipe)
    theirs_pipe.load_lora_weights(str(path))
    formats.apply_lora(ours_pipe, path)
    theirs, ours = outputs(theirs_pipe), outputs(ours_pipe)
    parts = ("unet", "text encoder", "text encoder 2")
    for part, b, t, o in zip(parts, base, theirs, ours, strict=True):
        assert float((t - b).abs().max()) > 1e-3, f"the LoRA changes nothing in the {part}"
        assert torch.allclose(o, t, atol=1e-5), (part, float((o - t).abs().max()))


def test_info_names_sdxl_and_counts_its_parts(sdxl, lorakit_cli):
    _, path, _ = sdxl
    code, out, err = lorakit_cli("info", path)
    assert code == 0, err
    assert "architecture: SDXL" in out
    parts = "UNet 7: conv 1x1 1, conv 3x3 1, linear 5; text encoder 1 2: linear 2; text encoder 2 2"
    assert parts in out


def test_an_sdxl_lora_on_the_tiny_sd_and_a_tiny_sd_lora_on_flux_are_refused(
    sdxl, shared_pipe, tmp_path
):
    pipe, path, _ = sdxl
    before = copy.deepcopy(pipe.unet.state_dict())
    with pytest.raises(formats.UnsupportedKind, match="is a LoRA for SDXL, and this .* is SD 1"):
        formats.apply_lora(shared_pipe, path)
    unet = copy.deepcopy(shared_pipe.unet)
    inject.inject_lora(unet, r=2, target_modules="attn2")
    sd = formats.save_lora(unet, tmp_path / "sd.safetensors", "diffusers")
    flux = configs.build_tiny("flux")
    with pytest.raises(formats.UnsupportedKind, match="a LoRA for SD 1.x/2.x, and this Flux"):
        formats.apply_lora(flux, sd)
    assert not list(inject.lora_layers(flux))
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())
