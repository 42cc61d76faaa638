"""lorakit.claims.costs (claims 2 and 3): the file and AdamW's state, counted."""

import pytest
import torch

from lorakit import claims, inject, models


def test_claims_2_and_3_count_the_file_and_adams_two_moments(claims_pipe, tmp_path):
    run = claims.size_and_speed("lora", steps=1, pipe=claims_pipe, output_dir=tmp_path)
    assert run["settings"]["targets"] == "attn2+ff" and run["settings"]["lora_dropout"] == 0.1
    # exp_avg and exp_avg_sq, float32
    assert run["optimizer_bytes"] == 2 * 4 * run["trainable_params"]
    assert run["file_bytes"] == (tmp_path / "lora.safetensors").stat().st_size
    assert run["trainable_params"] == inject.lora_parameter_count(claims_pipe.unet, 8, "attn2+ff")


class TwoLayersAndAGram(torch.nn.Module):
    """Two linear layers, then h h^T: a product with no weights, whose gradient only the
    activations' pass computes."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(16, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        h = self.second(torch.relu(self.first(x)))  # (B, 8)
        return h @ h.T  # (B, B)


def test_count_step_splits_a_step_s_arithmetic_as_the_formula_does():
    batch, sizes = 4, [(16, 32), (32, 8)]
    model = TwoLayersAndAGram()
    x = torch.randn(batch, 16, requires_grad=True)
    flops = claims.count_step(model, lambda: model(x))
    matmuls = sum(2 * batch * n_in * n_out for n_in, n_out in sizes)  # 2 B in out a layer
    gram = 2 * batch * batch * 8  # h h^T: (B, 8) @ (8, B)
    assert flops["forward"] == matmuls + gram
    assert flops["input_gradients"] == matmuls + 2 * gram  # dy W a layer; both of h h^T's inputs
    assert flops["weight_gradients"] == matmuls  # dy^T x a layer, nothing for h h^T
    assert flops["full_over_lora"] == pytest.approx(
        (3 * matmuls + 3 * gram) / (2 * matmuls + 3 * gram)
    )
    assert all(p.requires_grad for p in model.parameters())  # trains as before


def test_step_flops_of_sd_1_5_at_512_pixels():
    flops = claims.step_flops(models.SD15_UNET_CONFIG)  # built on the meta device
    tflop = {k: v / 1e12 for k, v in flops.items() if k != "full_over_lora"}
    assert tflop == pytest.approx(
        {"forward": 0.80, "input_gradients": 0.92, "weight_gradients": 0.68}, abs=0.01
    )
    assert 1.35 < flops["full_over_lora"] < 1.45
