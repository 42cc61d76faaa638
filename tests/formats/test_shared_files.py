"""The LoRA files people share, read and applied exactly: kohya's default SD 1.5 layout (linear
layers, the 1x1 convolutions proj_in/proj_out, the text encoder), LoCon's 3x3 convolutions,
per-module ranks and alphas; and the kinds lorakit does not apply, refused by name with nothing
applied.

The files here are written key by key the way kohya's sd-scripts name them (not by lorakit's
writer), and the references are diffusers' ``load_lora_weights`` and PEFT's convolution LoRA layer.
"""

import copy
import json

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from lorakit import formats, inject, lora, models

peft = pytest.importorskip("peft")


def kohya_default_modules(unet, text_encoder):
    """What kohya's networks.lora wraps by default: every Linear and 1x1 Conv2d inside each
    Transformer2DModel of the UNet, and CLIP's attention and MLP, as (kohya name, module)."""
    found = []
    for name, module in unet.named_modules():
        if type(module).__name__ == "Transformer2DModel":
            for child, m in module.named_modules():
                if isinstance(m, nn.Linear) or (
                    isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                ):
                    found.append(("lora_unet_" + f"{name}.{child}".replace(".", "_"), m))
    for name, m in text_encoder.named_modules():
        if isinstance(m, nn.Linear) and name.endswith(inject.PRESETS["text"]):
            canonical = name if name.startswith("text_model.") else "text_model." + name
            found.append(("lora_te_" + canonical.replace(".", "_"), m))
    return found


def kohya_file(path, modules, r=4, alpha=2.0, seed=0, dtype=torch.float16, conv3x3=(), conv_r=2):
    """A kohya file as sd-scripts writes it: lora_down (r, in[, 1, 1]), lora_up (out, r[, 1, 1]),
    a 0-dim alpha."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, m in list(modules) + [(n, m) for n, m in conv3x3]:
        rank = conv_r if (n3 := isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)) else r
        if isinstance(m, nn.Conv2d):
            down = torch.randn(rank, m.in_channels, *m.kernel_size, generator=gen) * 0.1
            up = torch.randn(m.out_channels, rank, 1, 1, generator=gen) * 0.1
        else:
            down = torch.randn(rank, m.in_features, generator=gen) * 0.1
            up = torch.randn(m.out_features, rank, generator=gen) * 0.1
        tensors |= {
            f"{name}.lora_down.weight": down.to(dtype),
            f"{name}.lora_up.weight": up.to(dtype),
            f"{name}.alpha": torch.tensor(float(rank) / 2 if n3 else alpha).to(dtype),
        }
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(r),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
    }
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def tiny(shared_pipe, pictures):
    """The shared tiny SD (read it, never change it) and its pictures."""
    return dict(pipe=shared_pipe, pictures=pictures(shared_pipe))


@pytest.fixture
def fresh_pipe(shared_pipe):
    """``fresh_pipe()``: another copy of the tiny SD, free to change."""

    def fresh():
        return copy.deepcopy(shared_pipe)

    return fresh


def test_a_kohya_default_sd15_file_loads_every_key(tmp_path):
    """kohya's default for SD 1.5: 160 linear and 32 1x1-conv modules in the UNet, 72 in the text
    encoder, 792 keys."""
    # on the meta device: SD 1.5's real configs, no download (the file needs shapes only)
    parts = models.build_sd15()
    path = kohya_file(
        tmp_path / "sd15.safetensors",
        kohya_default_modules(parts["unet"], parts["text_encoder"]),
        r=1,
        alpha=1.0,
    )
    assert len(safetensors.safe_open(str(path), "pt").keys()) == 792
    weights = formats.load_lora(path)
    counts = (
        sum(weights.kind(m) == "linear" for m in weights.modules if m not in weights.text_modules),
        sum(weights.kind(m) == "conv 1x1" for m in weights.modules),
        len(weights.text_modules),
    )
    assert counts == (160, 32, 72)
    assert "text_encoder.text_model.encoder.layers.11.mlp.fc2" in weights.modules
    # every kohya name resolved to a module path
    assert not any(m.startswith("lora_") for m in weights.modules)
    text = formats.describe(path)
    assert "kind: LoRA on linear layers and 1x1 convolutions" in text
    assert (
        "base model: SD 1.x (cross-attention reads a 768-wide text); text encoder 768 wide (SD 1.x)"
        in text
    )
    assert "UNet 192: conv 1x1 32, linear 160; text encoder 72: linear 72" in text


def test_a_kohya_default_file_applies_exactly_as_diffusers_applies_it(
    tiny, tmp_path, pictures, fresh_pipe
):
    pipe = tiny["pipe"]
    path = kohya_file(
        tmp_path / "kohya.safetensors", kohya_default_modules(pipe.unet, pipe.text_encoder)
    )
    ours = fresh_pipe()
    names = formats.apply_lora(ours, path)
    assert (
        len(names) == 192 + 12
        and sum(isinstance(layer, lora.LoRAConv2d) for _, layer in inject.lora_layers(ours)) == 32
    )
    theirs = fresh_pipe()
    theirs.load_lora_weights(str(path))
    mine = pictures(ours)
    assert np.abs(mine - tiny["pictures"]).max() > 1e-2  # the LoRA shows
    assert np.abs(mine - pictures(theirs)).max() <= 1e-4
    # The text-encoder half does its part: without it, other pictures.
    unet_only = fresh_pipe()
    weights = formats.load_lora(path)
    formats.apply_lora(
        unet_only, weights.subset(m for m in weights.modules if m not in weights.text_modules)
    )
    assert np.abs(pictures(unet_only) - mine).max() > 1e-3
    # scale and merge act on both halves
    inject.set_lora_scale(ours, 0.0)
    assert np.abs(pictures(ours) - tiny["pictures"]).max() <= 1e-5
    inject.set_lora_scale(ours, 1.0)
    inject.merge_lora(ours)
    assert np.abs(pictures(ours) - mine).max() <= 1e-4
    inject.unmerge_lora(ours)


def test_locon_3x3_convolutions_apply_exactly(tiny, tmp_path, pictures, fresh_pipe):
    pipe = tiny["pipe"]
    convs = [
        ("lora_unet_" + n.replace(".", "_"), m)
        for n, m in pipe.unet.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and ".resnets." in n
    ]
    path = kohya_file(
        tmp_path / "locon.safetensors",
        kohya_default_modules(pipe.unet, pipe.text_encoder)[:8],
        conv3x3=convs,
        conv_r=2,
    )
    weights = formats.load_lora(path)
    assert {weights.kind(m) for m in weights.modules} == {"linear", "conv 1x1", "conv 3x3"}
    assert {weights.rank(m) for m in weights.modules if weights.kind(m) == "conv 3x3"} == {2}
    ours = fresh_pipe()
    formats.apply_lora(ours, weights)
    # the reference: every delta W added to a copy of the weights by hand
    reference = fresh_pipe()
    modules = dict(reference.unet.named_modules())
    with torch.no_grad():
        for m in weights.modules:
            modules[m].weight += weights.get_delta_weight(m)
    assert np.abs(pictures(ours) - pictures(reference)).max() <= 1e-4
    text = formats.describe(path)
    assert (
        "kind: LoCon (LoRA on 3x3 convolutions too)" in text
        and "r 2, alpha 1: scale 0.5 on" in text
    )


def test_lora_conv2d_matches_peft_conv_lora():
    torch.manual_seed(0)
    base = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    theirs_base = copy.deepcopy(base)
    ours = lora.LoRAConv2d(base, r=3, alpha=6)
    config = peft.LoraConfig(r=3, lora_alpha=6, target_modules=["0"])
    theirs = peft.get_peft_model(nn.Sequential(theirs_base), config).base_model.model[0]
    with torch.no_grad():
        ours.lora_B.weight.normal_()
        theirs.lora_A["default"].weight.copy_(ours.lora_A.weight)
        theirs.lora_B["default"].weight.copy_(ours.lora_B.weight)
    x = torch.randn(2, 6, 9, 9)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    assert torch.allclose(ours.get_delta_weight(), theirs.get_delta_weight("default"), atol=1e-6)
    before = base.weight.detach().clone()
    want = ours(x)
    ours.merge()
    assert torch.allclose(ours(x), want, atol=1e-5)
    ours.unmerge()
    assert torch.equal(base.weight, before)
    with pytest.raises(ValueError, match="groups=2"):
        lora.LoRAConv2d(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="larger than min"):
        lora.LoRAConv2d(nn.Conv2d(1, 8, 1), r=2)


def test_per_module_ranks_survive_every_format_and_diffusers(
    tiny, tmp_path, pictures, fresh_pipe, randomize_lora
):
    pipe = fresh_pipe()
    inject.inject_lora(
        pipe.unet,
        r=4,
        alpha=2.0,
        target_modules="attn2",
        rank_pattern={"mid_block.attentions.0.transformer_blocks.0.attn2.to_q": 2},
        alpha_pattern={"up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v": 8.0},
    )
    randomize_lora(pipe, seed=3)
    want = pictures(pipe)
    weights = formats.from_model(pipe)
    assert (
        not weights.uniform
        and weights.rank("mid_block.attentions.0.transformer_blocks.0.attn2.to_q") == 2
    )
    for fmt in formats.FORMATS:
        path = formats.save_lora(
            pipe, tmp_path / (fmt if fmt == "peft" else f"{fmt}.safetensors"), format=fmt
        )
        again = formats.load_lora(path)
        assert {m: again.rank(m) for m in again.modules} == {
            m: weights.rank(m) for m in weights.modules
        }, fmt
        assert all(
            torch.allclose(again.matrix(m), weights.matrix(m), atol=1e-7) for m in weights.modules
        ), fmt
        if fmt != "kohya":  # (kohya: one alpha value, the other module's folded into its lora_up)
            assert again.alphas == weights.alphas, fmt
        if fmt != "peft":
            theirs = fresh_pipe()
            theirs.load_lora_weights(str(path))
            assert np.abs(pictures(theirs) - want).max() <= 1e-4, fmt
    assert "ss_network_dim: Dynamic" in formats.describe(tmp_path / "kohya.safetensors")
    assert weights.alphas == {"up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v": 8.0}
    config = json.loads(
        safetensors.safe_open(str(tmp_path / "diffusers.safetensors"), "pt").metadata()[
            formats.METADATA_KEY
        ]
    )
    assert config["unet.rank_pattern"] == {
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_q": 2
    }


def test_a_text_encoder_lora_in_diffusers_and_peft_spelling(
    tiny, tmp_path, pictures, fresh_pipe, randomize_lora
):
    pipe = fresh_pipe()
    inject.inject_lora(pipe.unet, r=2, target_modules="attn2")
    inject.inject_lora(pipe.text_encoder, r=2, alpha=4.0, target_modules="text")
    randomize_lora(pipe, seed=4)
    want = pictures(pipe)
    for fmt in ("kohya", "diffusers"):  # lorakit's own files, both halves, in diffusers
        theirs = fresh_pipe()
        theirs.load_lora_weights(
            str(formats.save_lora(pipe, tmp_path / f"{fmt}.safetensors", format=fmt))
        )
        assert np.abs(pictures(theirs) - want).max() <= 1e-4, fmt
    path = formats.save_lora(pipe, tmp_path / "d.safetensors", format="diffusers")
    keys = list(safetensors.safe_open(str(path), "pt").keys())
    # the spelling every tool reads
    assert any(k.startswith("text_encoder.text_model.encoder.layers.0.") for k in keys)
    folder = formats.save_lora(pipe, tmp_path / "peft", format="peft")
    assert (folder / "text_encoder" / formats.PEFT_FILE).is_file()
    for source in (path, folder):
        ours = fresh_pipe()
        formats.apply_lora(ours, source)
        assert np.abs(pictures(ours) - want).max() <= 1e-5
    with pytest.raises(ValueError, match="text-encoder module"):
        formats.apply_lora(fresh_pipe().unet, path)


PROJ_IN = "lora_unet_mid_block_attentions_0_proj_in"  # a kohya module name, for the cases below
CONV1 = "lora_unet_mid_block_resnets_0_conv1"
TE1, TE2 = (f"lora_te{i}_text_model_encoder_layers_0_mlp_fc1" for i in (1, 2))
INPUT_K = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
FLUX_Q = "transformer.single_transformer_blocks.0.attn.to_q"
FLUX_QKV = "lora_unet_double_blocks_0_img_attn_qkv"
UNET_PROJ_IN = "unet.mid_block.attentions.0.proj_in"
KINDS = [
    (
        {
            f"{PROJ_IN}.hada_w1_a": (128, 4),
            f"{PROJ_IN}.hada_w1_b": (4, 128),
            f"{PROJ_IN}.hada_w2_a": (128, 4),
            f"{PROJ_IN}.hada_w2_b": (4, 128),
            f"{PROJ_IN}.hada_t1": (4, 4, 1, 1),
        },
        "Tucker",
    ),
    (
        {
            f"{PROJ_IN}.lora_down.weight": (4, 128),
            f"{PROJ_IN}.lora_up.weight": (128, 4),
            f"{PROJ_IN}.dora_scale": (1, 128),
        },
        "DoRA",
    ),
    (
        {
            f"{CONV1}.lora_down.weight": (4, 128, 3, 3),
            f"{CONV1}.lora_mid.weight": (4, 4, 3, 3),
            f"{CONV1}.lora_up.weight": (128, 4, 1, 1),
        },
        "Tucker",
    ),
    (
        {
            f"{UNET_PROJ_IN}.lora_A.weight": (4, 128),
            f"{UNET_PROJ_IN}.lora_B.weight": (128, 4),
            f"{UNET_PROJ_IN}.lora_magnitude_vector": (128,),
        },
        "DoRA",
    ),
]
OTHER_MODELS = [  # files for another architecture than the tiny SD's (SD 1.x's shapes)
    (
        {
            f"{TE1}.lora_down.weight": (4, 768),
            f"{TE1}.lora_up.weight": (3072, 4),
            f"{TE2}.lora_down.weight": (4, 1280),
            f"{TE2}.lora_up.weight": (5120, 4),
        },
        "SDXL",
    ),
    (
        {f"{INPUT_K}.lora_down.weight": (4, 2048), f"{INPUT_K}.lora_up.weight": (640, 4)},
        "SDXL",
    ),
    (
        {f"{FLUX_Q}.lora_A.weight": (4, 3072), f"{FLUX_Q}.lora_B.weight": (3072, 4)},
        "Flux",
    ),
    (
        {f"{FLUX_QKV}.lora_down.weight": (4, 3072), f"{FLUX_QKV}.lora_up.weight": (9216, 4)},
        "Flux",
    ),
]


@pytest.mark.parametrize(("tensors", "arch"), OTHER_MODELS, ids=["te2", "ldm", "flux", "qkv"])
def test_a_lora_for_another_architecture_is_refused_by_name(
    tiny, tmp_path, tensors, arch, lorakit_cli
):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({k: torch.ones(shape) for k, shape in tensors.items()}, str(path))
    pipe = tiny["pipe"]
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    with pytest.raises(formats.UnsupportedKind, match=f"a LoRA for {arch}, and this .* is SD 1"):
        formats.apply_lora(pipe, path)
    assert "\n" not in str(formats.UnsupportedKind) and not list(inject.lora_layers(pipe))
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())
    code, out, err = lorakit_cli("info", path)  # the file alone is described
    assert code == 0 and f"architecture: {arch}" in out and "not applied" not in out, (out, err)


@pytest.mark.parametrize(("tensors", "kind"), KINDS, ids=[k for _, k in KINDS])
def test_kinds_lorakit_does_not_apply_are_named_and_nothing_is_applied(
    tiny, tmp_path, tensors, kind, lorakit_cli
):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({k: torch.zeros(shape) for k, shape in tensors.items()}, str(path))
    pipe = tiny["pipe"]
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    with pytest.raises(formats.UnsupportedKind, match=kind) as error:
        formats.apply_lora(pipe, path)
    message = str(error.value)
    assert "\n" not in message and "other.safetensors" in message and "mixed kinds" not in message
    assert not list(inject.lora_layers(pipe))
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())
    code, out, err = lorakit_cli("info", path)  # info still describes it
    assert code == 0 and f"not applied by lorakit: {path}" in out and kind in out, (out, err)


BROKEN = [
    (
        "mixed",
        {
            f"{PROJ_IN}.lora_down.weight": (4, 128),
            f"{PROJ_IN}.lora_up.weight": (128, 4),
            "lora_unet_mid_block_attentions_0_proj_out.lokr_t2": (4, 4, 1, 1),
        },
        r"on 1 module beside 1 plain LoRA modules \(a file of mixed kinds\) "
        r"\(e.g. lora_unet_mid_block_attentions_0_proj_out:",
    ),
    (
        "half a LoHa",
        {f"{PROJ_IN}.hada_w1_a": (128, 4), f"{PROJ_IN}.hada_w1_b": (4, 128)},
        r"a LoHa module without hada_w2_a, hada_w2_b \(lora_unet_mid_block_attentions_0_proj_in\)",
    ),
    (
        "no up",
        {f"{PROJ_IN}.lora_down.weight": (4, 128)},
        r"mid_block.attentions.0.proj_in: lora_up is missing \(lora_down is there\)",
    ),
    (
        "ranks",
        {f"{PROJ_IN}.lora_down.weight": (4, 128), f"{PROJ_IN}.lora_up.weight": (128, 8)},
        r"mid_block.attentions.0.proj_in: the ranks disagree, lora_down \(4, 128\) has 4 rows "
        r"but lora_up \(128, 8\) has 8 columns",
    ),
    (
        "nan",
        {f"{PROJ_IN}.lora_down.weight": (4, 128), f"{PROJ_IN}.lora_up.weight": (128, 4)},
        r"proj_in.lora_up.weight holds 1 NaN or infinite values",
    ),
]


@pytest.mark.parametrize(("case", "tensors", "match"), BROKEN, ids=[c for c, _, _ in BROKEN])
def test_a_broken_file_names_the_module_and_changes_nothing(tiny, tmp_path, case, tensors, match):
    data = {k: torch.ones(shape) * 0.01 for k, shape in tensors.items()}
    if case == "nan":
        data[f"{PROJ_IN}.lora_up.weight"][0, 0] = float("nan")
    path = tmp_path / "broken.safetensors"
    safetensors.torch.save_file(data, str(path))
    pipe = tiny["pipe"]
    with pytest.raises(formats.LoRAFileError, match=match) as error:
        formats.apply_lora(pipe, path)
    assert "\n" not in str(error.value)
    assert not list(inject.lora_layers(pipe))


def test_a_text_encoder_part_that_does_not_fit_applies_nothing_anywhere(tiny, tmp_path):
    pipe = tiny["pipe"]
    modules = kohya_default_modules(pipe.unet, pipe.text_encoder)
    path = kohya_file(tmp_path / "k.safetensors", modules)
    tensors = safetensors.torch.load_file(str(path))
    key = next(
        k for k in tensors if k.startswith("lora_te_") and k.endswith("q_proj.lora_down.weight")
    )
    # SD 1.5's text width, not the tiny SD's
    tensors[key] = torch.zeros(4, 768, dtype=torch.float16)
    safetensors.torch.save_file(tensors, str(path))
    before = {
        k: v.clone()
        for part in (pipe.unet, pipe.text_encoder)
        for k, v in part.state_dict().items()
    }
    with pytest.raises(
        formats.LoRAFileError,
        match=r"1 of 204 modules do not match \(nothing was loaded\).*q_proj: file 768->64",
    ):
        formats.apply_lora(pipe, path)
    assert not list(inject.lora_layers(pipe))
    after = {k: v for part in (pipe.unet, pipe.text_encoder) for k, v in part.state_dict().items()}
    assert all(torch.equal(v, before[k]) for k, v in after.items())


def test_lorakit_train_with_the_text_encoder_writes_a_file_diffusers_applies(
    tmp_path, lorakit_cli, pictures, fresh_pipe
):
    out = tmp_path / "run"
    code, stdout, err = lorakit_cli(
        "train",
        "--data",
        "data/styles/outline",
        "--out",
        out,
        "--steps",
        "2",
        "--text-encoder",
        "--quiet",
        "--sample-steps",
        "2",
    )
    assert code == 0, err
    weights = formats.load_lora(out / "lora.safetensors")
    assert len(weights.text_modules) == 12 and len(weights.modules) == 96 + 12
    # the text encoder's half trained
    assert all(float(weights.B[m].abs().max()) > 0 for m in weights.text_modules)
    ours, theirs = fresh_pipe(), fresh_pipe()
    formats.apply_lora(ours, weights)
    theirs.load_lora_weights(str(out / "lora.safetensors"))
    assert np.abs(pictures(ours) - pictures(theirs)).max() <= 1e-4


def test_extract_computes_in_float32_from_half_precision_models(tiny):
    base = copy.deepcopy(tiny["pipe"].unet).half()
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        layer = tuned.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn2.to_v")
        layer.weight += (
            torch.randn(layer.weight.shape[0], 2) @ torch.randn(2, layer.weight.shape[1]) * 0.01
        ).half()
    from lorakit import svd_tools

    m = "mid_block.attentions.0.transformer_blocks.0.attn2.to_v"
    # every direction: the half-precision rounding is full rank
    full = min(tuned.get_submodule(m).weight.shape)
    weights, reports = svd_tools.extract(base, tuned, rank=full)
    assert weights.modules == [m] and weights.A[m].dtype == torch.float32
    want = tuned.get_submodule(m).weight.float() - base.get_submodule(m).weight.float()
    assert float((weights.matrix(m) - want).abs().max()) <= 1e-6
