"""lorakit.lora.LoRALinear against PEFT's LoRA layer, and the contract the lessons rely on."""

import math

import pytest
import torch
from torch import nn

from lorakit import lora

peft = pytest.importorskip("peft")

IN, OUT = 24, 12
HALF_DTYPES = [torch.float16, torch.bfloat16]


def peft_lora_layer(base, r, lora_alpha, init="kaiming", **config_kwargs):
    """PEFT's ``lora.Linear`` around ``base``, made the way users make it: ``get_peft_model``."""
    config = peft.LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=["0"],
        init_lora_weights=True if init == "kaiming" else init,
        **config_kwargs,
    )
    return peft.get_peft_model(nn.Sequential(base), config).base_model.model[0]


def make_pair(r=4, alpha=None, use_rslora=False, dropout=0.0, init="kaiming", seed=0):
    """Our layer and PEFT's around two identical copies of a base layer, with the same A and a
    random B."""
    torch.manual_seed(seed)
    base = nn.Linear(IN, OUT)
    peft_base = nn.Linear(IN, OUT)
    peft_base.load_state_dict(base.state_dict())
    ours = lora.LoRALinear(
        base, r=r, alpha=alpha, dropout=dropout, init=init, use_rslora=use_rslora
    )
    theirs = peft_lora_layer(
        peft_base, r, ours.alpha, init, lora_dropout=dropout, use_rslora=use_rslora
    )
    with torch.no_grad():
        ours.lora_B.weight.normal_()  # B = 0 would hide every mistake in the LoRA path
        theirs.lora_A["default"].weight.copy_(ours.lora_A.weight)
        theirs.lora_B["default"].weight.copy_(ours.lora_B.weight)
    return ours, theirs


@pytest.fixture
def trained_looking(randomize_lora):
    """``trained_looking(base, r=4)``: a LoRALinear whose B is non-zero, as after training."""

    def make(base, r=4):
        layer = lora.LoRALinear(base, r=r)
        randomize_lora(layer, std=0.5, seed=1)
        return layer

    return make


# --- against PEFT --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "r, alpha, use_rslora",
    [
        (4, None, False),  # alpha = r: scaling 1
        (4, 16, False),  # alpha != r: scaling 4
        (8, 3, False),
        (4, 16, True),  # rsLoRA: 16 / sqrt(4) = 8
        (9, 6, True),
    ],
)
def test_forward_and_delta_weight_match_peft(r, alpha, use_rslora):
    ours, theirs = make_pair(r=r, alpha=alpha, use_rslora=use_rslora)
    expected = (alpha or r) / (math.sqrt(r) if use_rslora else r)
    assert ours.scaling == pytest.approx(expected) == pytest.approx(theirs.scaling["default"])
    x = torch.randn(5, 7, IN)
    assert (ours(x) - theirs(x)).abs().max() <= 1e-6
    assert (ours(x) - ours.base_layer(x)).abs().max() > 1e-2  # the LoRA path really contributes
    delta = ours.get_delta_weight()
    assert delta.shape == (OUT, IN)
    assert (delta - theirs.get_delta_weight("default")).abs().max() <= 1e-6


def test_gradients_match_peft():
    ours, theirs = make_pair(r=4, alpha=8)
    x = torch.randn(6, IN)
    ours(x).pow(2).sum().backward()
    theirs(x).pow(2).sum().backward()
    for name in ("lora_A", "lora_B"):
        ours_grad = getattr(ours, name).weight.grad
        theirs_grad = getattr(theirs, name)["default"].weight.grad
        assert (ours_grad - theirs_grad).abs().max() <= 1e-5 * theirs_grad.abs().max()


@pytest.mark.parametrize("init", ["kaiming", "gaussian"])
def test_initialisation_matches_peft(init):
    torch.manual_seed(0)
    base = nn.Linear(IN, OUT)
    peft_base = nn.Linear(IN, OUT)
    torch.manual_seed(1)
    ours = lora.LoRALinear(base, r=4, init=init)
    torch.manual_seed(1)
    theirs = peft_lora_layer(peft_base, 4, 4, init)
    assert torch.equal(ours.lora_A.weight, theirs.lora_A["default"].weight)
    assert torch.equal(ours.lora_B.weight, torch.zeros(OUT, 4))


def test_dropout_matches_peft_given_the_same_mask_and_is_off_in_eval_mode():
    """lorakit draws its mask its own way (lorakit.dropout); given the mask it drew, PEFT's layer
    must compute the same output: the dropout acts on the LoRA path's input alone."""
    ours, theirs = make_pair(r=4, dropout=0.5)
    x = torch.randn(8, IN)
    dropped = []
    ours.lora_dropout.register_forward_hook(lambda module, args, out: dropped.append(out))
    theirs.lora_dropout["default"] = _Replay(dropped)
    torch.manual_seed(3)
    ours_train = ours(x)
    assert (ours_train - theirs(x)).abs().max() <= 1e-6
    assert 0 < (dropped[0] == 0).float().mean() < 1  # some dropped, some kept
    assert not torch.allclose(ours_train, ours(x))  # a new mask each call
    ours.eval()
    no_dropout = ours.base_layer(x) + ours.lora_B(ours.lora_A(x)) * ours.scaling
    assert torch.equal(ours(x), ours(x))
    assert (ours(x) - no_dropout).abs().max() <= 1e-6


class _Replay(nn.Module):
    """Stands in for PEFT's dropout: returns what ours returned (its mask applied to the input)."""

    def __init__(self, outputs: list):
        super().__init__()
        self.outputs = outputs

    def forward(self, x):
        return self.outputs[-1]


# --- the contract --------------------------------------------------------------------------


def test_zero_init_is_exactly_the_base_layer():
    base = nn.Linear(IN, OUT)
    layer = lora.LoRALinear(base, r=4, alpha=32)
    x = torch.randn(10, IN)
    assert torch.equal(layer.lora_B.weight, torch.zeros(OUT, 4))
    assert layer.lora_A.weight.abs().max() > 0
    assert torch.equal(layer(x), base(x))


def test_attributes_and_state_dict_names():
    layer = lora.LoRALinear(nn.Linear(IN, OUT), r=3)
    assert (layer.r, layer.alpha, layer.scaling, layer.scale, layer.merged) == (
        3,
        3,
        1.0,
        1.0,
        False,
    )
    assert layer.lora_A.weight.shape == (3, IN) and layer.lora_B.weight.shape == (OUT, 3)
    assert set(layer.state_dict()) == {
        "base_layer.weight",
        "base_layer.bias",
        "lora_A.weight",
        "lora_B.weight",
    }
    layer.alpha = 6
    assert layer.scaling == 2.0
    assert "r=3, alpha=6" in repr(layer)


def test_only_lora_parameters_get_gradients(trained_looking):
    layer = trained_looking(nn.Linear(IN, OUT))
    layer(torch.randn(4, IN)).sum().backward()
    assert layer.base_layer.weight.grad is None and layer.base_layer.bias.grad is None
    assert layer.lora_A.weight.grad.abs().max() > 0 and layer.lora_B.weight.grad.abs().max() > 0
    assert [name for name, p in layer.named_parameters() if p.requires_grad] == [
        "lora_A.weight",
        "lora_B.weight",
    ]
    assert lora.count_parameters(layer) == 4 * (IN + OUT)
    assert lora.count_parameters(layer, trainable_only=False) == 4 * (IN + OUT) + IN * OUT + OUT


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, -1.0])
def test_scale_multiplies_the_update(trained_looking, scale):
    layer = trained_looking(nn.Linear(IN, OUT))
    x = torch.randn(4, IN)
    full_update = layer(x) - layer.base_layer(x)
    layer.scale = scale
    if scale == 0.0:
        assert torch.equal(layer(x), layer.base_layer(x))
    assert (layer(x) - layer.base_layer(x) - scale * full_update).abs().max() <= 1e-5
    assert (
        layer.get_delta_weight() - scale * layer.lora_B.weight @ layer.lora_A.weight
    ).abs().max() <= 1e-6


@pytest.mark.parametrize("scale", [1.0, 0.7])
def test_merged_forward_equals_unmerged_forward(trained_looking, scale):
    layer = trained_looking(nn.Linear(IN, OUT))
    layer.scale = scale
    x = torch.randn(16, IN)
    unmerged = layer(x)
    weight_object = layer.base_layer.weight
    layer.merge()
    assert layer.merged and layer.base_layer.weight is weight_object
    assert (layer(x) - unmerged).abs().max() <= 1e-5
    assert torch.equal(layer(x), layer.base_layer(x))  # merged: the base layer alone


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES])
def test_unmerge_restores_the_weight_bit_exactly(trained_looking, dtype):
    base = nn.Linear(64, 48).to(dtype)
    original = base.weight.detach().clone()
    layer = trained_looking(base, r=8)
    delta = layer.get_delta_weight().to(dtype)
    if dtype != torch.float32:  # the naive way really loses bits here, so this test can fail
        assert not torch.equal((original + delta) - delta, original)
    for _ in range(2):
        layer.merge()
        assert not torch.equal(base.weight, original)
        layer.unmerge()
        assert not layer.merged and torch.equal(base.weight, original)
    assert "original_weight" not in layer.state_dict()


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_lora_stays_float32_on_a_half_precision_base(dtype):
    base = nn.Linear(IN, OUT).to(dtype)
    layer = lora.LoRALinear(base, r=4)
    assert layer.lora_A.weight.dtype == layer.lora_B.weight.dtype == torch.float32
    x = torch.randn(3, IN, dtype=dtype)
    assert torch.equal(layer(x), base(x))  # zero init, still exact
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    out = layer(x)
    assert out.dtype == dtype
    reference = base(x).float() + layer.lora_B(layer.lora_A(x.float())) * layer.scaling
    assert (out.float() - reference).abs().max() <= 2e-2 * reference.abs().max()
    out.float().sum().backward()
    assert layer.lora_A.weight.grad.dtype == torch.float32


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"r": 0}, ValueError, "r must be a positive integer"),
        ({"r": -2}, ValueError, "r must be a positive integer"),
        ({"r": 2.0}, ValueError, "r must be a positive integer"),
        ({"r": OUT + 1}, ValueError, r"adds parameters but no expressiveness"),
        ({"alpha": 0}, ValueError, "alpha must be a positive finite number"),
        ({"alpha": -4.0}, ValueError, "alpha must be a positive finite number"),
        ({"alpha": float("inf")}, ValueError, "alpha must be a positive finite number"),
        ({"dropout": 1.0}, ValueError, r"dropout must be a probability"),
        ({"init": "orthogonal"}, ValueError, "init must be one of kaiming, gaussian"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        lora.LoRALinear(nn.Linear(IN, OUT), **kwargs)


def test_rank_equal_to_min_dimension_is_allowed():
    assert lora.LoRALinear(nn.Linear(IN, OUT), r=OUT).r == OUT


@pytest.mark.parametrize("module", [nn.Conv2d(3, 8, 3), nn.Sequential(nn.Linear(4, 4))])
def test_base_layer_must_be_linear(module):
    with pytest.raises(TypeError, match=type(module).__name__):
        lora.LoRALinear(module, r=2)


def test_merge_twice_and_unmerge_unmerged_are_refused(trained_looking):
    layer = trained_looking(nn.Linear(IN, OUT))
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
