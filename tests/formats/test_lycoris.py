"""LyCORIS LoHa and LoKr files: delta W against the formulas written here, applied to the tiny SD,
and converted to a plain LoRA by SVD with the error Eckart-Young predicts.

The formulas (LyCORIS's modules, ComfyUI's ``weight_adapter``): LoHa
``(alpha / dim) (W1a W1b) * (W2a W2b)``, ``dim`` = ``hada_w1_b``'s rows; LoKr
``scale * kron(W1, W2)``, each factor full or ``W_a W_b``, ``scale = alpha / dim`` with ``dim`` the
rank of the low-rank factor (W2's if both are), 1 when both are full or the file has no alpha.
"""

import copy

import pytest
import safetensors.torch
import torch

from lorakit import formats

ATTN = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"  # tiny SD: 64 -> 128
CONV = "lora_unet_mid_block_resnets_0_conv1"  # tiny SD: a 3x3 convolution, 128 -> 128
PATHS = {
    ATTN: "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
    CONV: "mid_block.resnets.0.conv1",
}
SHAPES = {ATTN: (128, 64), CONV: (128, 128, 3, 3)}


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.5


def loha(name, dim, alpha, seed=0):
    out, flat = SHAPES[name][0], int(torch.tensor(SHAPES[name][1:]).prod())
    t = {
        f"{name}.hada_w1_a": _randn(out, dim, seed=seed),
        f"{name}.hada_w1_b": _randn(dim, flat, seed=seed + 1),
        f"{name}.hada_w2_a": _randn(out, dim, seed=seed + 2),
        f"{name}.hada_w2_b": _randn(dim, flat, seed=seed + 3),
    }
    if alpha is not None:
        t[f"{name}.alpha"] = torch.tensor(float(alpha))
    w1 = t[f"{name}.hada_w1_a"].double() @ t[f"{name}.hada_w1_b"].double()
    w2 = t[f"{name}.hada_w2_a"].double() @ t[f"{name}.hada_w2_b"].double()
    scale = 1.0 if alpha is None else alpha / dim
    return t, (scale * w1 * w2).reshape(SHAPES[name])


def lokr(name, w1_shape, w2_shape, dim1, dim2, alpha, seed=0):
    """W1 (a, b) and W2 (c, d[, kh, kw]); a dim of None: that factor full."""
    t = {}
    for i, (shape, dim) in enumerate(((w1_shape, dim1), (w2_shape, dim2)), start=1):
        if dim is None:
            t[f"{name}.lokr_w{i}"] = _randn(*shape, seed=seed + i)
        else:
            flat = int(torch.tensor(shape[1:]).prod())
            t[f"{name}.lokr_w{i}_a"] = _randn(shape[0], dim, seed=seed + 10 * i)
            t[f"{name}.lokr_w{i}_b"] = _randn(dim, flat, seed=seed + 10 * i + 1)
    if alpha is not None:
        t[f"{name}.alpha"] = torch.tensor(float(alpha))

    def full(i, shape):
        if f"{name}.lokr_w{i}" in t:
            return t[f"{name}.lokr_w{i}"].double()
        return (t[f"{name}.lokr_w{i}_a"].double() @ t[f"{name}.lokr_w{i}_b"].double()).reshape(
            shape
        )

    w1, w2 = full(1, w1_shape), full(2, w2_shape)
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    low = dim2 if dim2 is not None else dim1
    scale = 1.0 if alpha is None or low is None else alpha / low
    return t, (scale * torch.kron(w1, w2)).reshape(SHAPES[name])


CASES = {
    "loha linear": lambda: loha(ATTN, 4, 2.0),
    "loha linear, no alpha": lambda: loha(ATTN, 4, None),
    "loha 3x3 conv (flat kernel)": lambda: loha(CONV, 8, 4.0),
    "loha rank past the layer's": lambda: loha(ATTN, 12, 12.0),  # 144 > min(128, 64)
    "lokr w1 full, w2 low-rank": lambda: lokr(ATTN, (8, 8), (16, 8), None, 4, 2.0),
    "lokr both low-rank": lambda: lokr(ATTN, (8, 4), (16, 16), 2, 3, 6.0),
    "lokr both full (alpha unused)": lambda: lokr(ATTN, (4, 8), (32, 8), None, None, 3.0),
    "lokr conv, w2 a full kernel": lambda: lokr(CONV, (4, 4), (32, 32, 3, 3), None, None, 1.0),
    "lokr conv, w2 low-rank": lambda: lokr(CONV, (4, 8), (32, 16, 3, 3), None, 4, 8.0),
}


def _write(tmp_path, tensors, name="lycoris.safetensors"):
    path = tmp_path / name
    safetensors.torch.save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("case", CASES)
def test_delta_w_is_the_formula(tmp_path, case):
    tensors, want = CASES[case]()
    weights = formats.load_lora(_write(tmp_path, tensors))
    (module,) = weights.modules
    assert module in PATHS.values() and weights.variants[module].startswith(
        case[:4].replace("loha", "LoHa").replace("lokr", "LoKr")
    )
    got = weights.get_delta_weight(module).double().reshape(want.shape)
    relative = float((got - want).norm() / want.norm())
    assert relative < 1e-5, relative
    rank = torch.linalg.matrix_rank(want.reshape(want.shape[0], -1)).item()
    assert weights.rank(module) >= rank  # no rank lost


def test_a_wrong_scale_rule_would_be_seen(tmp_path):
    """The cases tell the rules apart: alpha / dim against alpha / dim^2, or alpha ignored."""
    tensors, want = lokr(ATTN, (8, 8), (16, 8), None, 4, 2.0)
    unscaled = want / 0.5
    got = formats.load_lora(_write(tmp_path, tensors)).get_delta_weight(PATHS[ATTN]).double()
    assert float((got - unscaled).norm()) > 0.5 * float(unscaled.norm())
    tensors, want = lokr(ATTN, (4, 8), (32, 8), None, None, 3.0)  # full: scale 1, not 3 / r
    got = formats.load_lora(_write(tmp_path, tensors, "full.safetensors"))
    assert torch.allclose(got.get_delta_weight(PATHS[ATTN]).double(), want, atol=1e-6)


@pytest.mark.parametrize("case", ["loha 3x3 conv (flat kernel)", "lokr w1 full, w2 low-rank"])
def test_applied_to_the_tiny_sd_it_adds_the_formula(shared_pipe, tmp_path, case):
    tensors, want = CASES[case]()
    both = dict(tensors)
    other, other_want = loha(ATTN if "conv" in case else CONV, 4, 2.0, seed=7)
    both |= other
    base = copy.deepcopy(shared_pipe.unet).double()  # float64: the comparison sees 1e-12
    unet, by_hand = copy.deepcopy(base), copy.deepcopy(base)
    modules = dict(by_hand.named_modules())
    name = next(n for n in PATHS if n in next(iter(tensors)))
    other_name = next(n for n in PATHS if n != name)
    with torch.no_grad():
        modules[PATHS[name]].weight += want
        modules[PATHS[other_name]].weight += other_want
    formats.apply_lora(unet, _write(tmp_path, both))
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 4, 8, 8, generator=g).double(), torch.tensor([500])
    text = torch.randn(1, 77, 64, generator=g).double()
    with torch.no_grad():
        change = by_hand(x, t, text).sample - base(x, t, text).sample
        error = unet(x, t, text).sample - by_hand(x, t, text).sample
    assert float(change.abs().max()) > 1e-4  # the LoRA changes the output
    # the factors are float32 in the file's reading: exact to float32's rounding of delta W
    assert float(error.abs().max()) < 1e-4 * float(change.abs().max()), float(error.abs().max())


def test_convert_to_kohya_is_exact_or_eckart_young(tmp_path, lorakit_cli):
    tensors, want = loha(ATTN, 4, 2.0)
    source = _write(tmp_path, tensors)
    code, out, err = lorakit_cli(
        "convert", source, "--to", "kohya", "--out", tmp_path / "p.safetensors"
    )
    assert code == 0, err
    assert "LoHa dim 4 on 1 modules as a plain LoRA of ranks 16-16" in out
    largest = float(out.split("largest ")[1].split()[0])
    assert largest < 1e-6
    code, out, err = lorakit_cli(
        "convert", source, "--to", "kohya", "--rank", "3", "--out", tmp_path / "r3.safetensors"
    )
    assert code == 0, err
    s = torch.linalg.svdvals(want)
    predicted = float(s[3:].square().sum().sqrt() / s.square().sum().sqrt())  # Eckart-Young
    printed = float(out.split("largest ")[1].split()[0])
    assert printed == pytest.approx(predicted, rel=1e-3) and predicted > 0.01
    plain = formats.load_lora(tmp_path / "r3.safetensors")
    assert not plain.variants and plain.rank(PATHS[ATTN]) == 3
    with safetensors.safe_open(str(tmp_path / "r3.safetensors"), "pt") as f:
        assert all(k.endswith(("lora_down.weight", "lora_up.weight", "alpha")) for k in f.keys())
    got = plain.get_delta_weight(PATHS[ATTN]).double()
    assert float((got - want).norm() / want.norm()) == pytest.approx(predicted, rel=1e-3)


def test_info_says_what_the_file_was(tmp_path, lorakit_cli):
    tensors, _ = lokr(ATTN, (8, 8), (16, 8), None, 4, 2.0)
    code, out, err = lorakit_cli("info", _write(tmp_path, tensors))
    assert code == 0, err
    assert "LyCORIS LoKr (W1 full, W2 rank 4) on 1 modules; read exactly" in out
    held = sum(t.numel() for k, t in tensors.items() if not k.endswith("alpha"))
    assert f"(the file's own factors: {held:,})" in out


def test_tucker_and_dora_stay_refused_with_the_reason(tmp_path):
    tensors, _ = loha(ATTN, 4, 2.0)
    tucker = _write(
        tmp_path, tensors | {f"{ATTN}.hada_t1": torch.zeros(4, 4, 1, 1)}, "t.safetensors"
    )
    with pytest.raises(formats.UnsupportedKind, match="LoHa with Tucker cores"):
        formats.load_lora(tucker)
    dora = _write(tmp_path, tensors | {f"{ATTN}.dora_scale": torch.ones(1, 64)}, "d.safetensors")
    with pytest.raises(
        formats.UnsupportedKind, match="DoRA .*depends on the base weights.* different axes"
    ):
        formats.load_lora(dora)
