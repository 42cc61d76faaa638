"""lorakit.train's loop on the tiny SD: what it changes and what it leaves, dropout, EMA,
accumulation, mixed precision, samples, a diverging run, and the memory check on a GPU."""

import copy
import math

import pytest
import torch

from lorakit import inject, memory, train


def test_validation_loss_decreases_on_a_new_style(pipe, dataset, quick):
    result = train.train_lora(
        pipe, dataset, quick(steps=15, lr=3e-3, validation_every=15, num_validation=8)
    )
    (step0, before), (step15, after) = result.val_history
    assert (step0, step15) == (0, 15) and len(result.history) == 15
    assert after < 0.9 * before, f"fixed-seed validation loss went {before:.4f} -> {after:.4f}"


def test_only_lora_parameters_change(pipe, dataset, quick):
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    vae = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    text = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    result = train.train_lora(pipe, dataset, quick(steps=3))
    assert len(result.lora_names) > 0 and all(".attn2." in n for n in result.lora_names)
    after = pipe.unet.state_dict()
    for key, value in base.items():  # LoRALinear renames foo.weight to foo.base_layer.weight
        new_key = (
            key
            if key in after
            else key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        )
        assert torch.equal(after[new_key], value), key
    for name, layer in inject.lora_layers(pipe.unet):
        assert layer.lora_B.weight.abs().max() > 0, f"{name}: lora_B is still zero"
        assert layer.lora_A.weight.dtype == torch.float32
    assert all(torch.equal(v, pipe.vae.state_dict()[k]) for k, v in vae.items())
    assert all(torch.equal(v, pipe.text_encoder.state_dict()[k]) for k, v in text.items())
    assert not pipe.unet.training  # put back in eval mode as loaded


def test_lora_dropout_drops_while_training_only_and_repeats_with_the_seed(
    shared_pipe, dataset, quick, lora_weights, monkeypatch
):
    modes, real = [], train.objective.epsilon_loss

    def spy(unet, *args):  # (a gradient is taken, the LoRA dropout is on) at every loss
        dropping = all(layer.training for _, layer in inject.lora_layers(unet))
        modes.append((torch.is_grad_enabled(), dropping))
        return real(unet, *args)

    monkeypatch.setattr(train.objective, "epsilon_loss", spy)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    runs = []
    for dropout in (0.5, 0.5, 0.0):
        pipe = copy.deepcopy(shared_pipe)
        result = train.train_lora(pipe, dataset, quick(lora_dropout=dropout, validation_every=2))
        layers = [layer for _, layer in inject.lora_layers(pipe.unet)]
        assert all(
            isinstance(layer.lora_dropout, torch.nn.Dropout) == (dropout > 0) for layer in layers
        )
        runs.append((result, lora_weights(pipe)))
    (first, a), (second, b), (plain, c) = runs
    # same seed, same masks
    assert first.history == second.history and all(torch.equal(a[k], b[k]) for k in a)
    assert first.history != plain.history  # the masks change the steps
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is left alone
    # Training steps drop, validation losses (no gradient) do not: 4 steps and 3 validations a run.
    assert set(modes) == {(True, True), (False, False)} and modes.count((False, False)) == 3 * 3


def test_ema_returns_the_moving_average_of_the_steps(shared_pipe, dataset, quick, lora_weights):
    def weights_after(steps, **overrides):
        pipe = copy.deepcopy(shared_pipe)
        train.train_lora(pipe, dataset, quick(steps=steps, lr=3e-3, **overrides))
        return lora_weights(pipe)

    # The raw weights after step k depend neither on the EMA nor on the steps that follow
    # (constant lr).
    raw = [weights_after(k) for k in (1, 2, 3)]
    pipe = copy.deepcopy(shared_pipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        inject.inject_lora(pipe.unet, r=4)  # the same start as train_lora's (seed 0)
    average = lora_weights(pipe)  # B = 0
    decay = 0.6
    for step, w in enumerate(raw):
        d = min(decay, (1 + step) / (10 + step))  # 0.1, 0.18, 0.25: diffusers' warm-up
        average = {k: average[k] + (1 - d) * (w[k] - average[k]) for k in average}
    got = weights_after(3, ema_decay=decay)
    for key in average:
        torch.testing.assert_close(got[key], average[key], rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(got[k], raw[-1][k]) for k in got)  # not just the last step


def test_nan_loss_stops_with_a_clear_message(pipe, dataset, quick):
    with pytest.raises(RuntimeError, match=r"at step \d+.*[Ll]ower the learning rate"):
        train.train_lora(pipe, dataset, quick(steps=5, lr=1e30, max_grad_norm=0))


def test_train_with_gradient_checkpointing_and_bf16(pipe, dataset, quick):
    result = train.train_lora(
        pipe, dataset, quick(steps=2, gradient_checkpointing=True, mixed_precision="bf16")
    )
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(result.history)))
    assert not pipe.unet.is_gradient_checkpointing  # switched off again
    assert all(
        layer.lora_B.weight.abs().max() > 0 and layer.lora_B.weight.dtype == torch.float32
        for _, layer in inject.lora_layers(pipe.unet)
    )


def test_accumulation_equals_a_bigger_batch(shared_pipe, dataset, quick, monkeypatch):
    recorded = []

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            recorded[-1].append([p.grad.clone() for g in self.param_groups for p in g["params"]])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    results = []
    for batch_size, grad_accum in ((2, 1), (1, 2)):
        recorded.append([])
        results.append(
            train.train_lora(
                copy.deepcopy(shared_pipe),
                dataset,
                quick(steps=2, batch_size=batch_size, grad_accum=grad_accum),
            )
        )
    torch.testing.assert_close(results[0].history, results[1].history, rtol=1e-5, atol=1e-7)
    for big, accumulated in zip(*recorded, strict=True):
        for a, b in zip(big, accumulated, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_sample_images_during_training(pipe, dataset, quick):
    result = train.train_lora(
        pipe, dataset, quick(steps=2, sample_every=2, sample_prompts=["a red circle"])
    )
    ((step, images),) = result.samples
    assert step == 2 and len(images) == 1 and images[0].size == (64, 64)


def test_the_full_preset_trains_the_tiny_sd_at_its_own_resolution(pipe, dataset, full_preset):
    """On a GPU runtime for_mode() gives the full preset: on the tiny SD it is a valid run at
    64 px, not 512."""
    cfg = full_preset(steps=2, warmup_steps=1, gradient_checkpointing=False)
    result = train.train_lora(pipe, dataset, cfg)
    assert len(result.history) == 2 and all(math.isfinite(v) for v in result.history)
    assert len(result.lora_names) == 64 and all(".attn2." in n for n in result.lora_names)


def test_preflight_checks_memory_on_a_gpu_only(monkeypatch):
    calls = []

    def check_fits(cfg, pipe, device):
        calls.append(device.type)

    monkeypatch.setattr(memory, "check_fits", check_fits)
    cfg = train.TrainConfig()
    train.preflight(cfg, object(), torch.device("cpu"))
    assert calls == []
    train.preflight(cfg, object(), torch.device("cuda"))
    assert calls == ["cuda"]
