"""lorakit.formats against the loaders people use: diffusers' load_lora_weights and PEFT.

The references: a file lorakit writes must give, in a fresh diffusers pipeline, the same
pictures as lorakit's own injected model; a LoRA made and saved by PEFT/diffusers must give
the same UNet output in lorakit. LoRAs use alpha != r so that a lost alpha shows.
"""

import copy
import errno
import json
import os
import re

import numpy as np
import pytest
import safetensors.torch
import torch

from lorakit import files, formats, inject

peft = pytest.importorskip("peft")
from diffusers import StableDiffusionPipeline  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

R, ALPHA = 4, 2.0  # alpha != r: scaling 0.5
ATTN2 = ["attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]


@pytest.fixture(scope="module")
def ours(shared_pipe, randomize_lora, pictures):
    """The tiny SD with a random (trained-looking) attn2 LoRA, and its pictures with and without
    it; ``base_unet`` is the shared UNet without LoRA (read it, never change it)."""
    pipe = copy.deepcopy(shared_pipe)
    base_pictures = pictures(pipe)
    inject.inject_lora(pipe.unet, r=R, alpha=ALPHA)
    randomize_lora(pipe.unet)
    return dict(
        pipe=pipe, base_unet=shared_pipe.unet, base_pictures=base_pictures, pictures=pictures(pipe)
    )


@pytest.fixture(scope="module")
def unet_inputs():
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 4, 8, 8, generator=gen),
        torch.tensor([500]),
        torch.randn(1, 8, 64, generator=gen),
    )


@torch.no_grad()
def run(unet, inputs):
    return unet(*inputs).sample  # (1, 4, 8, 8)


def max_delta_diff(a: formats.LoRAWeights, b: formats.LoRAWeights) -> float:
    assert sorted(a.modules) == sorted(b.modules)
    return max(
        (a.get_delta_weight(m) - b.get_delta_weight(m)).abs().max().item() for m in a.modules
    )


# --- lorakit's files in diffusers -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_diffusers_load_lora_weights_gives_the_same_pictures(ours, tmp_path, fmt, pipe, pictures):
    # the LoRA changes the picture
    assert np.abs(ours["pictures"] - ours["base_pictures"]).max() > 1e-2
    path = formats.save_lora(ours["pipe"].unet, tmp_path / "style.safetensors", format=fmt)
    pipe.load_lora_weights(str(path))
    assert np.abs(pictures(pipe) - ours["pictures"]).max() <= 1e-4


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_feed_forward_layers_load_in_diffusers_too(
    tmp_path, fmt, pipe, shared_pipe, randomize_lora, pictures
):
    """The small preset's ``attn2+ff``: diffusers maps kohya's ``ff_net_0_proj`` names and draws
    the same pictures."""
    inject.inject_lora(pipe.unet, r=R, alpha=ALPHA, target_modules="attn2+ff")
    randomize_lora(pipe.unet)
    want = pictures(pipe)
    ff = [layer for name, layer in inject.lora_layers(pipe.unet) if ".ff." in name]
    saved_b = [layer.lora_B.weight.detach().clone() for layer in ff]
    with torch.no_grad():
        for layer in ff:
            layer.lora_B.weight.zero_()
        without_ff = pictures(pipe)
        for layer, b in zip(ff, saved_b, strict=True):
            layer.lora_B.weight.copy_(b)
    # the ff part shows in the pictures
    assert len(ff) == 32 and np.abs(want - without_ff).max() > 1e-2
    path = formats.save_lora(pipe.unet, tmp_path / "ff.safetensors", format=fmt)
    fresh = copy.deepcopy(shared_pipe)
    fresh.load_lora_weights(str(path))
    assert np.abs(pictures(fresh) - want).max() <= 1e-4
    text = formats.describe(path)
    assert "modules: 96 (" in text and all(
        f"{kind} x16" in text for kind in inject.PRESETS["attn2+ff"]
    ), text


def test_kohya_file_layout_and_metadata(ours, tmp_path):
    path = formats.save_lora(ours["pipe"].unet, tmp_path / "style.safetensors", format="kohya")
    tensors = safetensors.torch.load_file(path)
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0"
    layer = ours["pipe"].unet.get_submodule(
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0"
    )
    assert torch.equal(tensors[f"{name}.lora_down.weight"], layer.lora_A.weight)
    assert torch.equal(tensors[f"{name}.lora_up.weight"], layer.lora_B.weight)
    assert tensors[f"{name}.alpha"].ndim == 0 and tensors[f"{name}.alpha"].item() == ALPHA
    assert len(tensors) == 64 * 3
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_dim"] == str(R) and float(meta["ss_network_alpha"]) == ALPHA
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_output_name"] == "style" and all(isinstance(v, str) for v in meta.values())
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed, not left behind


# --- PEFT's and diffusers' LoRAs in lorakit ----------------------------------------------------


def test_a_lora_made_with_peft_and_saved_by_diffusers_loads_with_the_same_output(
    ours, unet_inputs, tmp_path
):
    theirs = copy.deepcopy(ours["base_unet"])
    theirs.add_adapter(
        peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=ATTN2, init_lora_weights=False)
    )
    expected = run(theirs, unet_inputs)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path,
        unet_lora_layers=get_peft_model_state_dict(theirs),
        unet_lora_adapter_metadata=theirs.peft_config["default"].to_dict(),
    )
    weights = formats.load_lora(tmp_path)
    assert (weights.format, weights.r, weights.alpha) == ("diffusers", R, ALPHA)
    mine = copy.deepcopy(ours["base_unet"])
    assert len(formats.apply_lora(mine, weights)) == 64
    assert (run(mine, unet_inputs) - expected).abs().max() <= 1e-5
    assert (expected - run(ours["base_unet"], unet_inputs)).abs().max() > 1e-3

    # Without the metadata alpha is lost: diffusers then uses alpha = r, and so does lorakit.
    bare = tmp_path / "bare"
    StableDiffusionPipeline.save_lora_weights(
        bare, unet_lora_layers=get_peft_model_state_dict(theirs)
    )
    loaded_by_diffusers = copy.deepcopy(ours["base_unet"])
    loaded_by_diffusers.load_lora_adapter(str(bare / formats.DIFFUSERS_FILE), prefix="unet")
    q = loaded_by_diffusers.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn2.to_q")
    assert formats.load_lora(bare).scaling == next(iter(q.scaling.values())) == 1.0


def test_a_peft_folder_round_trips_with_peft(ours, unet_inputs, tmp_path):
    # PEFT's own save_pretrained -> lorakit
    theirs = peft.get_peft_model(
        copy.deepcopy(ours["base_unet"]),
        peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=ATTN2, init_lora_weights=False),
    )
    theirs.save_pretrained(tmp_path / "by_peft")
    weights = formats.load_lora(tmp_path / "by_peft")
    assert (weights.format, weights.r, weights.alpha, len(weights.modules)) == (
        "peft",
        R,
        ALPHA,
        64,
    )
    for path in weights.modules:
        layer = theirs.base_model.model.get_submodule(path)
        assert torch.allclose(
            weights.get_delta_weight(path), layer.get_delta_weight("default"), atol=1e-7
        )
    # lorakit's folder -> PeftModel.from_pretrained
    folder = formats.save_lora(ours["pipe"].unet, tmp_path / "by_lorakit", format="peft")
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(ours["base_unet"]), folder)
    got = run(loaded.base_model.model, unet_inputs)
    assert (got - run(ours["pipe"].unet, unet_inputs)).abs().max() <= 1e-5


def test_diffusers_metadata_is_what_diffusers_reads(ours, tmp_path):
    path = formats.save_lora(ours["pipe"].unet, tmp_path / "d.safetensors", format="diffusers")
    from diffusers.utils.state_dict_utils import _load_sft_state_dict_metadata

    config = json.loads(json.dumps(_load_sft_state_dict_metadata(str(path))))
    assert config["unet.r"] == R and config["unet.lora_alpha"] == ALPHA
    lora_config = peft.LoraConfig(**{k.removeprefix("unet."): v for k, v in config.items()})
    assert lora_config.lora_alpha == ALPHA and len(lora_config.target_modules) == 64


# --- round trips and conversion ----------------------------------------------------------------


def test_round_trips_preserve_delta_w(ours, tmp_path):
    reference = formats.from_model(ours["pipe"].unet)
    path = formats.save_lora(ours["pipe"].unet, tmp_path / "a.safetensors", format="kohya")
    for i, (to, dst) in enumerate(
        [
            ("diffusers", "b.safetensors"),
            ("peft", "c"),
            ("kohya", "d.safetensors"),
            ("peft", "e"),
            ("diffusers", "f"),
            ("kohya", "g.safetensors"),
        ]
    ):
        path = formats.convert(path, tmp_path / dst, to=to)
        weights = formats.load_lora(path)
        assert weights.format == to and (weights.r, weights.alpha) == (R, ALPHA), (i, to)
        assert max_delta_diff(weights, reference) <= 1e-6


def test_rslora_survives_kohya_which_has_no_rslora(ours, tmp_path, randomize_lora):
    unet = copy.deepcopy(ours["base_unet"])
    inject.inject_lora(unet, r=4, alpha=8, use_rslora=True)  # scaling 8 / sqrt(4) = 4
    randomize_lora(unet)
    reference = formats.from_model(unet)
    diffusers_file = formats.save_lora(unet, tmp_path / "rs.safetensors", format="diffusers")
    assert formats.load_lora(diffusers_file).use_rslora
    kohya = formats.load_lora(
        formats.convert(diffusers_file, tmp_path / "k.safetensors", to="kohya")
    )
    assert not kohya.use_rslora and kohya.alpha == 16.0  # alpha / r = 4: the same scaling
    assert max_delta_diff(kohya, reference) <= 1e-6


def test_a_failed_write_keeps_the_old_file(ours, tmp_path, monkeypatch):
    path = formats.save_lora(ours["pipe"].unet, tmp_path / "s.safetensors", format="kohya")
    old = path.read_bytes()

    def half_write(fd, data):
        os.write(fd, data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", half_write)
    with pytest.raises(OSError, match="no space left on device: .*s.safetensors"):
        formats.save_lora(ours["pipe"].unet, path, format="kohya")
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]


# --- applying a file ---------------------------------------------------------------------------


def test_apply_lora_into_injected_layers_and_describe(ours, unet_inputs, tmp_path):
    path = formats.save_lora(ours["pipe"].unet, tmp_path / "s.safetensors", format="kohya")
    unet = copy.deepcopy(ours["base_unet"])
    inject.inject_lora(unet, r=R)  # alpha = r: apply_lora must set alpha from the file
    formats.apply_lora(unet, path, scale=0.5)
    inject.set_lora_scale(ours["pipe"].unet, 0.5)
    try:
        assert torch.equal(run(unet, unet_inputs), run(ours["pipe"].unet, unet_inputs))
    finally:
        inject.set_lora_scale(ours["pipe"].unet, 1.0)
    text = formats.describe(path)
    assert "format: kohya" in text and f"r: {R}  alpha: {ALPHA:g}" in text and "modules: 64" in text
    assert "ss_network_module: networks.lora" in text


def test_per_module_alphas_load_and_apply(ours, tmp_path, unet_inputs):
    path = formats.save_lora(ours["pipe"].unet, tmp_path / "a.safetensors", format="kohya")
    tensors = safetensors.torch.load_file(path)
    key = next(k for k in tensors if k.endswith(".alpha"))
    tensors[key] = torch.tensor(1.0)
    safetensors.torch.save_file(tensors, path)
    weights = formats.load_lora(path)
    module = next(m for m in weights.modules if formats.kohya_name(m) + ".alpha" == key)
    assert weights.alpha == ALPHA and weights.alphas == {module: 1.0} and not weights.uniform
    unet = copy.deepcopy(ours["base_unet"])
    formats.apply_lora(unet, weights)
    assert unet.get_submodule(module).alpha == 1.0
    assert "r 4, alpha 2: scale 0.5 on 63 modules" in formats.describe(path)


def test_a_file_that_does_not_fit_the_model_loads_nothing(ours, tmp_path):
    tensors = safetensors.torch.load_file(
        formats.save_lora(ours["pipe"].unet, tmp_path / "a.safetensors", format="kohya")
    )
    bad_shape = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    # SD 1.5's text width, not the tiny SD's
    tensors[f"{bad_shape}.lora_down.weight"] = torch.zeros(R, 768)
    missing = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q"
    for suffix in ("lora_down.weight", "lora_up.weight", "alpha"):
        tensors[f"{missing.replace('blocks_0_attentions', 'blocks_7_attentions')}.{suffix}"] = (
            tensors.pop(f"{missing}.{suffix}")
        )
    safetensors.torch.save_file(tensors, tmp_path / "bad.safetensors")
    unet = copy.deepcopy(ours["base_unet"])
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"2 of 64 modules do not match \(nothing was loaded\)"
    ) as error:
        formats.apply_lora(unet, tmp_path / "bad.safetensors")
    assert re.search(
        r"mid_block\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k: "
        r"file 768->\d+ vs model 64->",
        str(error.value),
    )
    assert "down_blocks_7_attentions" in str(error.value) and "no such module" in str(error.value)
    assert not list(inject.lora_layers(unet))
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())


def test_text_encoder_tensors_load_and_a_unet_alone_refuses_them(ours, tmp_path):
    tensors = safetensors.torch.load_file(
        formats.save_lora(ours["pipe"].unet, tmp_path / "a.safetensors", format="kohya")
    )
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    extra = {
        f"{te}.lora_down.weight": torch.zeros(R, 64),
        f"{te}.lora_up.weight": torch.zeros(64, R),
    }
    safetensors.torch.save_file(tensors | extra, tmp_path / "both.safetensors")
    weights = formats.load_lora(tmp_path / "both.safetensors")
    assert len(weights.modules) == 65 and weights.text_modules == [
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    ]
    unet = copy.deepcopy(ours["base_unet"])
    with pytest.raises(
        ValueError, match="1 of 65 modules do not match.*text-encoder module.*apply_lora\\(pipe"
    ):
        formats.apply_lora(unet, weights)
    assert not list(inject.lora_layers(unet))
    safetensors.torch.save_file(extra, tmp_path / "te.safetensors")
    assert formats.load_lora(tmp_path / "te.safetensors").modules == weights.text_modules


def test_apply_lora_over_other_lora_layers_is_refused(ours, tmp_path):
    path = formats.save_lora(ours["pipe"].unet, tmp_path / "a.safetensors", format="diffusers")
    unet = copy.deepcopy(ours["base_unet"])
    inject.inject_lora(unet, r=R, target_modules="attn")
    with pytest.raises(RuntimeError, match="remove_lora"):
        formats.apply_lora(unet, path)
