"""LoRAs for Flux (and SD3): kohya's fused names and diffusers' ``transformer.`` names, described,
resized, merged and converted with nothing but the file; a diffusers-named LoRA applied to the tiny
Flux by lorakit computes what diffusers' own loader (``load_lora_adapter``) computes.

kohya's Flux names fuse q, k and v into one module (``double_blocks_0_img_attn_qkv``: lora_up
3 x 3072 rows); diffusers' transformer has ``to_q``, ``to_k``, ``to_v``. Flux.1's width is 3072.
"""

import copy

import safetensors.torch
import torch
from diffusers import FluxPipeline

from lorakit import formats, inject
from lorakit.architectures import calling, configs

FLUX_KOHYA = {  # kohya's Flux modules: (in, out)
    "lora_unet_double_blocks_0_img_attn_qkv": (3072, 9216),
    "lora_unet_double_blocks_0_txt_attn_proj": (3072, 3072),
    "lora_unet_double_blocks_18_img_mlp_0": (3072, 12288),
    "lora_unet_single_blocks_0_linear1": (3072, 21504),
    "lora_unet_single_blocks_37_linear2": (15360, 3072),
}
FLUX_DIFFUSERS = {  # diffusers' names of Flux's modules: (in, out)
    "transformer.transformer_blocks.0.attn.to_q": (3072, 3072),
    "transformer.transformer_blocks.0.attn.add_k_proj": (3072, 3072),
    "transformer.single_transformer_blocks.5.attn.to_v": (3072, 3072),
    "transformer.single_transformer_blocks.5.proj_out": (15360, 3072),
}


def write(path, modules, rank, seed, kohya=True):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (n_in, n_out) in modules.items():
        down, up = ("lora_down", "lora_up") if kohya else ("lora_A", "lora_B")
        tensors[f"{name}.{down}.weight"] = torch.randn(rank, n_in, generator=g) * 0.01
        tensors[f"{name}.{up}.weight"] = torch.randn(n_out, rank, generator=g) * 0.01
        if kohya:
            tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    safetensors.torch.save_file(tensors, str(path))
    return path


def test_info_names_flux_and_its_blocks(tmp_path, lorakit_cli):
    code, out, err = lorakit_cli("info", write(tmp_path / "k.safetensors", FLUX_KOHYA, 4, 0))
    assert code == 0, err
    assert "architecture: Flux" in out and "transformer 5: linear 5" in out
    assert "double_blocks    3: linear 3" in out and "single_blocks    2: linear 2" in out
    code, out, err = lorakit_cli(
        "info", write(tmp_path / "d.safetensors", FLUX_DIFFUSERS, 4, 0, False)
    )
    assert code == 0, err
    assert "architecture: Flux" in out and "format: diffusers" in out
    assert "transformer 4: linear 4" in out
    assert "single_transformer_blocks   2: linear 2" in out and "attn.to_q x1" in out
    assert "\n  transformer_blocks   2: linear 2" in out


def test_resize_merge_and_convert_need_only_the_file(tmp_path, lorakit_cli):
    a = write(tmp_path / "a.safetensors", FLUX_KOHYA, 8, 0)
    b = write(tmp_path / "b.safetensors", FLUX_KOHYA, 4, 1)
    code, out, err = lorakit_cli(
        "resize", a, "--rank", "2", "--out", tmp_path / "r.safetensors", "--quiet"
    )
    assert code == 0, err
    resized = formats.load_lora(tmp_path / "r.safetensors")
    assert sorted(resized.modules) == sorted(FLUX_KOHYA) and {
        resized.rank(m) for m in resized.modules
    } == {2}
    code, out, err = lorakit_cli("merge", a, f"{b}:0.5", "--out", tmp_path / "m.safetensors")
    assert code == 0 and float(out.split("largest ")[1].split()[0]) < 1e-6, (out, err)
    merged, la, lb = (formats.load_lora(p) for p in (tmp_path / "m.safetensors", a, b))
    m = "lora_unet_double_blocks_0_img_attn_qkv"
    want = la.matrix(m) + 0.5 * lb.matrix(m)  # concat is exact: the ranks add
    assert merged.rank(m) == 12 and torch.allclose(merged.matrix(m), want, atol=1e-7)
    code, out, err = lorakit_cli("convert", a, "--to", "kohya", "--out", tmp_path / "c.safetensors")
    assert code == 0, err
    code, out, err = lorakit_cli(
        "convert", a, "--to", "diffusers", "--out", tmp_path / "x.safetensors"
    )
    assert code != 0 and "fused q, k and v" in err and not (tmp_path / "x.safetensors").exists()


def test_diffusers_flux_names_round_trip_through_kohya(tmp_path):
    source = write(tmp_path / "d.safetensors", FLUX_DIFFUSERS, 4, 0, kohya=False)
    kohya = formats.convert(source, tmp_path / "k.safetensors", to="kohya")
    with safetensors.safe_open(str(kohya), "pt") as f:
        keys = list(f.keys())
        assert f.metadata()["ss_base_model_version"] == "flux1"
    assert "lora_transformer_single_transformer_blocks_5_proj_out.lora_down.weight" in keys
    back = formats.convert(kohya, tmp_path / "back.safetensors", to="diffusers")
    with safetensors.safe_open(str(back), "pt") as f:
        assert {k.rsplit(".", 2)[0] for k in f.keys()} <= set(FLUX_DIFFUSERS) | {
            k.replace("transformer.", "lora_transformer_", 1).replace(".", "_")
            for k in FLUX_DIFFUSERS
        }


def test_a_flux_lora_on_the_tiny_flux_computes_what_diffusers_computes(tmp_path):
    model = configs.build_tiny("flux")
    targets = ["attn.to_q", "attn.to_k", "attn.add_q_proj", "attn.to_add_out", "proj_mlp"]
    trained = copy.deepcopy(model)
    inject.inject_lora(trained, r=2, alpha=4.0, target_modules=targets)
    g = torch.Generator().manual_seed(0)
    for _, layer in inject.lora_layers(trained):
        torch.nn.init.normal_(layer.lora_B.weight, std=0.2, generator=g)
    path = formats.save_lora(trained, tmp_path / "tiny_flux.safetensors", "diffusers")
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    formats.apply_lora(ours, path)
    state, alphas, metadata = FluxPipeline.lora_state_dict(
        str(path), return_alphas=True, return_lora_metadata=True
    )  # diffusers' FluxPipeline.load_lora_weights, on the transformer alone
    FluxPipeline.load_lora_into_transformer(state, alphas, theirs, metadata=metadata)
    latents, text = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 7, 64, generator=g)
    pooled = torch.randn(1, 64, generator=g)
    with torch.no_grad():
        base, a, b = (calling.denoise(m, latents, text, pooled) for m in (model, ours, theirs))
    assert float((b - base).abs().max()) > 1e-3
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
