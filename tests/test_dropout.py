"""lorakit.dropout.LoRADropout: nn.Dropout's distribution, drawn 16 bits an element."""

import math

import pytest
import torch
from torch import nn

from lorakit import dropout

N = 1 << 20  # elements: the drop rate's standard error is about 0.0003 at p = 0.1


def test_it_is_a_dropout_with_p_counted_in_sixty_five_thousandths():
    layer = dropout.LoRADropout(0.1)
    assert isinstance(layer, nn.Dropout) and layer.p == 0.1
    assert layer.drop_probability == 6554 / 65536
    assert layer.keep_scale == pytest.approx(1 / (1 - layer.drop_probability), rel=1e-12)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_drop_rate_is_p_in_every_lane_of_the_bits(p):
    """Each 64-bit draw gives four 16-bit numbers: every lane must drop at rate p (a draw of
    non-negative 64-bit integers only would leave the top lane's sign bit clear)."""
    torch.manual_seed(0)
    layer = dropout.LoRADropout(p)
    out = layer(torch.ones(N))
    kept = out != 0
    assert torch.all(out[kept] == layer.keep_scale)  # kept elements scaled, none changed else
    se = math.sqrt(p * (1 - p) / (N // 4))
    for lane in range(4):
        rate = 1 - kept[lane::4].float().mean().item()
        assert abs(rate - layer.drop_probability) < 5 * se, (lane, rate)


def test_neighbours_are_independent_and_the_mean_is_kept():
    torch.manual_seed(1)
    layer = dropout.LoRADropout(0.3)
    x = torch.randn(N)
    out = layer(x)
    kept = (out != 0).float()
    for lag in (1, 2, 4, 8):  # the mask of an element says nothing about its neighbours'
        corr = torch.corrcoef(torch.stack([kept[:-lag], kept[lag:]]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(N), (lag, corr)
    assert abs((out - x).mean().item()) < 5 * math.sqrt(0.3 / 0.7 / N)  # E[out] = x


def test_masks_follow_torch_seed_and_shape_and_gradient_is_the_mask():
    layer = dropout.LoRADropout(0.5)
    x = torch.randn(3, 5, 7, requires_grad=True)
    torch.manual_seed(2)
    first = layer(x)
    torch.manual_seed(2)
    again = layer(x)
    assert first.shape == x.shape and torch.equal(first, again)
    assert not torch.equal(first, layer(x))  # the generator moved on: a new mask
    first.sum().backward()
    mask = (first != 0).float() * layer.keep_scale
    assert torch.equal(x.grad, mask)


def test_p_near_0_or_1_still_drops_some_and_keeps_some():
    """round(p * 65536) would be 65,536 (a division by zero) for p just under 1, and 0 (no dropout
    at all) for p just over 0."""
    high, low = dropout.LoRADropout(1 - 1e-7), dropout.LoRADropout(1e-7)
    assert high.dropped_levels == 65535 and high.keep_scale == 65536
    assert low.dropped_levels == 1 and math.isfinite(low.keep_scale)
    torch.manual_seed(3)
    out = high(torch.ones(1 << 18))
    assert torch.isfinite(out).all() and 0 < (out != 0).sum() < 30  # about 4 of 262,144 kept


def test_eval_mode_and_zero_p_return_the_input():
    x = torch.randn(4, 9)
    assert dropout.LoRADropout(0.5).eval()(x) is x
    assert dropout.LoRADropout(0.0)(x) is x
