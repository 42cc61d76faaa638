"""lorakit.train.objective: min-SNR weights against the formula and diffusers, the learning-rate
schedule, and the loss's gradients with and without gradient checkpointing."""

import copy
import math

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from lorakit import inject, train


def test_min_snr_weights_match_the_formula_and_diffusers(shared_pipe):
    scheduler = DDPMScheduler.from_config(shared_pipe.scheduler.config)
    t = torch.tensor([0, 10, 100, 500, 999])
    a = scheduler.alphas_cumprod[t].double()
    snr = a / (1 - a)
    want = torch.clamp(snr, max=5.0) / snr
    got = train.min_snr_weights(scheduler.alphas_cumprod, t, 5.0)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)
    diffusers_snr = compute_snr(scheduler, t)
    torch.testing.assert_close(
        got,
        torch.stack([diffusers_snr, 5.0 * torch.ones_like(diffusers_snr)]).min(0)[0]
        / diffusers_snr,
    )
    assert got[0] < 0.01 and got[-1] == 1.0  # low noise is down-weighted, high noise kept


def test_learning_rate_schedule():
    cfg = train.TrainConfig(steps=110, warmup_steps=10, lr_schedule="cosine")
    assert [train.lr_factor(s, cfg) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert train.lr_factor(60, cfg) == pytest.approx(0.5)
    assert train.lr_factor(109, cfg) == pytest.approx(0.5 * (1 + math.cos(0.99 * math.pi)))
    assert train.lr_factor(50, train.TrainConfig(warmup_steps=10)) == 1.0


def lora_grads(pipe, dataset, checkpointing: bool) -> list[torch.Tensor]:
    unet = pipe.unet
    latents, embeddings, rows = train.cache_dataset(pipe, dataset, 64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        inject.inject_lora(unet, r=4)
        for _, layer in inject.lora_layers(unet):  # B != 0, so that A gets a gradient too
            torch.nn.init.normal_(layer.lora_B.weight, std=0.02)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    gen = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (2,), generator=gen)
    noise = torch.randn((2, *latents.shape[1:]), generator=gen)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    train.epsilon_loss(
        unet, scheduler, latents[:2], embeddings[rows[:2]], t, noise, None
    ).backward()
    return [
        p.grad
        for _, layer in inject.lora_layers(unet)
        for p in (layer.lora_A.weight, layer.lora_B.weight)
    ]


def test_gradient_checkpointing_gives_the_same_lora_grads(shared_pipe, dataset, monkeypatch):
    plain = lora_grads(copy.deepcopy(shared_pipe), dataset, checkpointing=False)
    calls = {"n": 0}
    real_checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls["n"] += 1
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
    checkpointed = lora_grads(copy.deepcopy(shared_pipe), dataset, checkpointing=True)
    assert calls["n"] > 0, "gradient checkpointing was not used"
    assert all(g is not None and g.abs().max() > 0 for g in checkpointed)
    worst = max((a - b).abs().max().item() for a, b in zip(plain, checkpointed, strict=True))
    assert worst < 1e-6, f"grads differ by {worst}"
