"""lorakit.claims.truncation (claim 8): the truncated update is the best of its rank
(Eckart-Young), for linear layers and flattened convolutions, and the study puts back only it."""

import numpy as np
import pytest
import torch

from lorakit import claims, inject
from lorakit.claims import truncation


def test_truncate_is_numpy_s_best_rank_k_approximation():
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(12, 9, generator=gen)
    u, s, vh = np.linalg.svd(delta.numpy(), full_matrices=False)
    want = (u[:, :3] * s[:3]) @ vh[:3]
    np.testing.assert_allclose(claims.truncate(delta, 3).numpy(), want, atol=1e-5)
    assert claims.truncate(delta, None) is delta
    assert torch.allclose(claims.truncate(delta, 50), delta, atol=1e-5)  # k past the rank


def test_truncate_flattens_a_convolution_s_kernel_and_keeps_its_shape():
    gen = torch.Generator().manual_seed(1)
    kernel = torch.randn(6, 4, 3, 3, generator=gen)
    cut = claims.truncate(kernel, 2)
    assert cut.shape == kernel.shape
    assert torch.linalg.matrix_rank(cut.reshape(6, -1)) == 2
    assert torch.linalg.matrix_rank(cut.reshape(6 * 4, 9)) > 2  # not flattened another way


def test_no_rank_k_matrix_is_closer_than_the_truncation():
    gen = torch.Generator().manual_seed(2)
    delta = torch.randn(10, 8, generator=gen)
    best = (delta - claims.truncate(delta, 2)).norm()
    for _ in range(50):  # random rank-2 matrices, and ones near the truncation
        other = torch.randn(10, 2, generator=gen) @ torch.randn(2, 8, generator=gen)
        assert (delta - other).norm() > best
        nudged = claims.truncate(delta + 0.05 * torch.randn(10, 8, generator=gen), 2)
        assert (delta - nudged).norm() >= best - 1e-5


def test_scoped_layers_are_the_unet_s_linears_and_convolutions(claims_pipe):
    unet = claims_pipe.unet
    linear = claims.scoped_layers(unet, "linear")
    both = claims.scoped_layers(unet, "linear+conv")
    modules = dict(unet.named_modules())
    assert all(isinstance(modules[n[: -len(".weight")]], torch.nn.Linear) for n in linear)
    convs = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(set(both) - set(linear)) == sorted(f"{n}.weight" for n in convs) and convs
    with pytest.raises(ValueError, match="no scope"):
        claims.scoped_layers(unet, "attention")


def test_full_update_ratios():
    before = {"w": torch.ones(2, 2)}
    after = {"w": torch.tensor([[1.0, 1.0], [1.0, 3.0]])}
    assert claims.full_update_ratios(before, after, ["w"]) == [
        {"name": "w", "ratio": pytest.approx(1.0), "params": 4}
    ]


def test_the_truncation_study_puts_back_each_part_and_gives_the_model_back(
    claims_pipe, unchanged, monkeypatch
):
    unet = claims_pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    linear = claims.scoped_layers(unet, "linear")
    convs = sorted(set(claims.scoped_layers(unet, "linear+conv")) - set(linear))
    seen = []  # what is in place as each row is judged
    real = truncation._judge_cross

    def spy(pipe, seeds, plain=True):
        now = pipe.unet.state_dict()
        if next(inject.lora_layers(pipe.unet), None) is None:
            seen.append(
                {
                    "linear_rank": max(
                        int(torch.linalg.matrix_rank((now[n] - before[n]).float(), atol=1e-6))
                        for n in linear
                    ),
                    "convs_moved": any(not torch.equal(now[n], before[n]) for n in convs),
                }
            )
        return real(pipe, seeds, plain)

    monkeypatch.setattr(truncation, "_judge_cross", spy)
    run = claims.truncated_update(steps=2, ranks=(1,), lora_r=2, pipe=claims_pipe, seeds=(0,))
    unchanged.check()
    assert [(row["scope"], row["k"]) for row in run["rows"]] == [
        ("every weight", None),
        ("linear", 1),
        ("linear", None),
        ("linear+conv", 1),
        ("linear+conv", None),
    ]
    # the whole fine-tune; rank 1 on the linears alone; their whole update; then with the convs
    assert [s["convs_moved"] for s in seen] == [True, False, False, True, True]
    assert seen[1]["linear_rank"] == 1 and seen[2]["linear_rank"] > 1
    assert seen[3]["linear_rank"] == 1
    lora = run["lora"]
    # Eckart-Young: no rank-2 update, the trained LoRA's included, is closer than the truncation
    assert 0 < lora["distance_truncated"] < lora["distance_trained"]
    assert run["settings"]["method"] == "full" and lora["settings"]["r"] == 2
    assert lora["settings"]["targets"] == "every linear"
    assert all(row["ratio"] > 0 for row in run["update_ratios"])
