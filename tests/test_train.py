"""lorakit.train on the tiny SD: what changes, resume, accumulation, checkpointing, min-SNR, errors."""

import copy
import errno
import math
import os

import pytest
import safetensors.torch
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from lorakit import files, formats, inject, memory, models, shapes, train


@pytest.fixture(scope="module")
def base_pipe():
    return models.load_pipeline("tiny", device="cpu", dtype="float32")


@pytest.fixture
def pipe(base_pipe):
    return copy.deepcopy(base_pipe)


@pytest.fixture(scope="module")
def dataset():
    return shapes.ShapesDataset(8, seed=3, style="outline")  # a style the tiny SD never saw


def quick(**overrides) -> train.TrainConfig:
    kwargs = dict(steps=4, batch_size=2, warmup_steps=0, progress=False) | overrides
    return train.TrainConfig(**kwargs)


def interrupt_after(steps: int, base_pipe, dataset, cfg: train.TrainConfig, monkeypatch) -> None:
    """Train a copy of ``base_pipe`` with ``cfg`` and stop it (KeyboardInterrupt) in the step after ``steps``."""
    real_loss, calls = train.epsilon_loss, {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > steps:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train, "epsilon_loss", crash)
    with pytest.raises(KeyboardInterrupt):
        train.train_lora(copy.deepcopy(base_pipe), dataset, cfg)
    monkeypatch.setattr(train, "epsilon_loss", real_loss)


def lora_weights(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in inject.lora_state_dict(pipe.unet).items()}


def test_validation_loss_decreases_on_a_new_style(pipe, dataset):
    result = train.train_lora(
        pipe, dataset, quick(steps=15, lr=3e-3, validation_every=15, num_validation=8)
    )
    (step0, before), (step15, after) = result.val_history
    assert (step0, step15) == (0, 15) and len(result.history) == 15
    assert after < 0.9 * before, f"fixed-seed validation loss went {before:.4f} -> {after:.4f}"


def test_only_lora_parameters_change(pipe, dataset):
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


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_is_bit_exact(base_pipe, dataset, tmp_path, monkeypatch, ema_decay):
    cfg = dict(
        steps=5,
        checkpoint_every=2,
        lr_schedule="cosine",
        warmup_steps=2,
        lr=3e-3,
        ema_decay=ema_decay,
    )
    whole_pipe = copy.deepcopy(base_pipe)
    whole = train.train_lora(whole_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "whole")))

    interrupt_after(
        3, base_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "cut")), monkeypatch
    )  # checkpoint after 2
    saved = torch.load(tmp_path / "cut" / train.CHECKPOINT, weights_only=True)
    assert saved["step"] == 2 and len(saved["history"]) == 2

    resumed_pipe = copy.deepcopy(base_pipe)
    resumed = train.train_lora(
        resumed_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "cut"))
    )
    assert resumed.history == whole.history
    want, got = lora_weights(whole_pipe), lora_weights(resumed_pipe)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), (
        "resumed LoRA differs from the uninterrupted one"
    )

    with pytest.raises(ValueError, match=r"other settings \(r: 4 -> 8\).*resume=False"):
        train.train_lora(
            copy.deepcopy(base_pipe), dataset, quick(**cfg, r=8, output_dir=str(tmp_path / "cut"))
        )
    with pytest.raises(ValueError, match=r"other settings \(flip: False -> True\)"):
        train.train_lora(
            copy.deepcopy(base_pipe),
            dataset,
            quick(**cfg, flip=True, output_dir=str(tmp_path / "cut")),
        )
    out = tmp_path / "cut"
    assert not list(out.glob("*.tmp")), "a temporary checkpoint file was left behind"
    assert (out / "loss.png").stat().st_size > 0
    loaded = formats.load_lora(out / "lora.safetensors", model=resumed_pipe.unet)
    assert all(torch.equal(loaded.state_dict()[k], got[k]) for k in got)


def test_flip_caches_every_picture_mirrored_too(pipe, dataset):
    plain_latents, plain_embeddings, plain_rows = train.cache_dataset(pipe, dataset, 64)
    latents, embeddings, rows = train.cache_dataset(pipe, dataset, 64, flip=True)
    n = len(dataset)
    assert latents.shape == (2 * n, *plain_latents.shape[1:])
    torch.testing.assert_close(
        latents[:n], plain_latents, rtol=1e-4, atol=1e-4
    )  # (encoded in other batches)
    assert torch.equal(embeddings, plain_embeddings) and torch.equal(rows, plain_rows.repeat(2))
    pixels = torch.stack([dataset[i][0].flip(-1) for i in range(n)])  # (N, 3, 64, 64) mirrored
    mirrored = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    torch.testing.assert_close(latents[n:], mirrored, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(
        latents[n:], plain_latents, atol=1e-2
    )  # the shapes sit elsewhere: not the same

    seen = []
    real = train.cache_dataset

    def spy(*args, **kwargs):
        seen.append(kwargs.get("flip"))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "cache_dataset", spy)
        train.train_lora(copy.deepcopy(pipe), dataset, quick(steps=1))
        train.train_lora(copy.deepcopy(pipe), dataset, quick(steps=1, flip=True))
    assert seen == [False, True]  # flip is off unless turned on


def test_caption_dropout_shows_some_pictures_with_the_empty_prompt(pipe, dataset, monkeypatch):
    _, embeddings, _ = train.cache_dataset(pipe, dataset, 64, empty_prompt=True)
    ids = pipe.tokenizer(
        [""], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    torch.testing.assert_close(
        embeddings[-1], pipe.text_encoder(ids)[0][0]
    )  # the last row: the empty prompt

    def empty_fraction(dropout: float) -> float:
        seen, real = [], train.epsilon_loss

        def spy(unet, scheduler, latents, context, *args):
            if unet.training:  # training steps, not the validation loss
                seen.extend(
                    torch.isclose(context, embeddings[-1], atol=1e-5).flatten(1).all(1).tolist()
                )
            return real(unet, scheduler, latents, context, *args)

        monkeypatch.setattr(train, "epsilon_loss", spy)
        train.train_lora(
            copy.deepcopy(pipe), dataset, quick(steps=10, batch_size=8, caption_dropout=dropout)
        )
        return sum(seen) / len(seen)

    assert empty_fraction(0.0) == 0.0
    assert 0.3 < empty_fraction(0.5) < 0.7  # 80 pictures drawn at 1/2


def test_lora_dropout_drops_while_training_only_and_repeats_with_the_seed(
    base_pipe, dataset, monkeypatch
):
    modes, real = [], train.epsilon_loss

    def spy(unet, *args):  # (a gradient is taken, the LoRA dropout is on) at every loss
        modes.append(
            (torch.is_grad_enabled(), all(layer.training for _, layer in inject.lora_layers(unet)))
        )
        return real(unet, *args)

    monkeypatch.setattr(train, "epsilon_loss", spy)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    runs = []
    for dropout in (0.5, 0.5, 0.0):
        pipe = copy.deepcopy(base_pipe)
        result = train.train_lora(pipe, dataset, quick(lora_dropout=dropout, validation_every=2))
        layers = [layer for _, layer in inject.lora_layers(pipe.unet)]
        assert all(
            isinstance(layer.lora_dropout, torch.nn.Dropout) == (dropout > 0) for layer in layers
        )
        runs.append((result, lora_weights(pipe)))
    (first, a), (second, b), (plain, c) = runs
    assert first.history == second.history and all(
        torch.equal(a[k], b[k]) for k in a
    )  # same seed, same masks
    assert first.history != plain.history  # the masks change the steps
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is left alone
    # Training steps drop, validation losses (no gradient) do not: 4 steps and 3 validations a run.
    assert set(modes) == {(True, True), (False, False)} and modes.count((False, False)) == 3 * 3


def test_ema_returns_the_moving_average_of_the_steps(base_pipe, dataset):
    def weights_after(steps, **overrides):
        pipe = copy.deepcopy(base_pipe)
        train.train_lora(pipe, dataset, quick(steps=steps, lr=3e-3, **overrides))
        return lora_weights(pipe)

    # The raw weights after step k do not depend on the EMA, nor on how many steps follow (constant lr).
    raw = [weights_after(k) for k in (1, 2, 3)]
    pipe = copy.deepcopy(base_pipe)
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


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / train.CHECKPOINT
    train.save_checkpoint({"step": 3}, path)

    def crash_halfway(fd, data):  # the disk fills up half-way through the new checkpoint
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", crash_halfway)
    with pytest.raises(OSError, match=f"no space left on device: {path}"):
        train.save_checkpoint({"step": 6}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}  # the old checkpoint survived intact
    assert [p.name for p in tmp_path.iterdir()] == [train.CHECKPOINT]


def test_nan_loss_stops_with_a_clear_message(pipe, dataset):
    with pytest.raises(RuntimeError, match=r"at step \d+.*[Ll]ower the learning rate"):
        train.train_lora(pipe, dataset, quick(steps=5, lr=1e30, max_grad_norm=0))


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


def test_gradient_checkpointing_gives_the_same_lora_grads(base_pipe, dataset, monkeypatch):
    plain = lora_grads(copy.deepcopy(base_pipe), dataset, checkpointing=False)
    calls = {"n": 0}
    real_checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls["n"] += 1
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
    checkpointed = lora_grads(copy.deepcopy(base_pipe), dataset, checkpointing=True)
    assert calls["n"] > 0, "gradient checkpointing was not used"
    assert all(g is not None and g.abs().max() > 0 for g in checkpointed)
    worst = max((a - b).abs().max().item() for a, b in zip(plain, checkpointed, strict=True))
    assert worst < 1e-6, f"grads differ by {worst}"


def test_train_with_gradient_checkpointing_and_bf16(pipe, dataset):
    result = train.train_lora(
        pipe, dataset, quick(steps=2, gradient_checkpointing=True, mixed_precision="bf16")
    )
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(result.history)))
    assert not pipe.unet.is_gradient_checkpointing  # switched off again
    assert all(
        layer.lora_B.weight.abs().max() > 0 and layer.lora_B.weight.dtype == torch.float32
        for _, layer in inject.lora_layers(pipe.unet)
    )


def test_min_snr_weights_match_the_formula_and_diffusers(base_pipe):
    scheduler = DDPMScheduler.from_config(base_pipe.scheduler.config)
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


def test_vae_and_text_encoder_never_run_in_the_loop(pipe, dataset, monkeypatch):
    real_cache = train.cache_dataset
    text_rows = []
    real_text_forward = pipe.text_encoder.forward

    def counting_text_forward(input_ids, *args, **kwargs):
        text_rows.append(len(input_ids))
        return real_text_forward(input_ids, *args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("the VAE or the text encoder ran inside the training loop")

    def cache_then_forbid(p, *args, **kwargs):
        out = real_cache(p, *args, **kwargs)
        p.vae.encode = p.vae.decode = p.vae.forward = p.text_encoder.forward = forbidden
        return out

    pipe.text_encoder.forward = counting_text_forward
    monkeypatch.setattr(train, "cache_dataset", cache_then_forbid)
    result = train.train_lora(pipe, dataset, quick(steps=3, validation_every=3, num_validation=2))
    assert len(result.history) == 3
    distinct = {dataset.caption(i) for i in range(len(dataset))}
    assert sum(text_rows) == len(distinct)  # every distinct caption embedded once


def test_accumulation_equals_a_bigger_batch(base_pipe, dataset, monkeypatch):
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
                copy.deepcopy(base_pipe),
                dataset,
                quick(steps=2, batch_size=batch_size, grad_accum=grad_accum),
            )
        )
    torch.testing.assert_close(results[0].history, results[1].history, rtol=1e-5, atol=1e-7)
    for big, accumulated in zip(*recorded, strict=True):
        for a, b in zip(big, accumulated, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_sample_images_during_training(pipe, dataset):
    result = train.train_lora(
        pipe, dataset, quick(steps=2, sample_every=2, sample_prompts=["a red circle"])
    )
    ((step, images),) = result.samples
    assert step == 2 and len(images) == 1 and images[0].size == (64, 64)


def test_processes_split_every_micro_batch_exactly():
    for batch_size, processes in ((8, 1), (8, 2), (3, 2), (3, 3), (7, 4)):
        parts = [train.process_rows(batch_size, processes, i) for i in range(processes)]
        assert [row for part in parts for row in range(batch_size)[part]] == list(range(batch_size))
        assert all(part.stop > part.start for part in parts), parts  # nobody idles
    assert train.process_rows(8, 1, 0) == slice(0, 8)  # one process: the whole batch, as always
    with pytest.raises(
        ValueError, match=r"batch_size 1 is smaller than the number of processes \(2\)"
    ):
        train.process_rows(1, 2, 1)


def test_one_process_all_reduce_is_a_no_op(pipe, dataset):
    accelerator = train._make_accelerator(quick(), torch.device("cpu"))
    params = [torch.nn.Parameter(torch.ones(3))]
    params[0].grad = torch.full((3,), 2.0)
    assert (
        accelerator.num_processes == 1 and train.all_reduce_grads(accelerator, params, 0.25) == 0.25
    )
    assert torch.equal(params[0].grad, torch.full((3,), 2.0))


def test_learning_rate_schedule():
    cfg = train.TrainConfig(steps=110, warmup_steps=10, lr_schedule="cosine")
    assert [train.lr_factor(s, cfg) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert train.lr_factor(60, cfg) == pytest.approx(0.5)
    assert train.lr_factor(109, cfg) == pytest.approx(0.5 * (1 + math.cos(0.99 * math.pi)))
    assert train.lr_factor(50, train.TrainConfig(warmup_steps=10)) == 1.0


def test_for_mode():
    small, full = train.TrainConfig.for_mode("small"), train.TrainConfig.for_mode("full", r=8)
    assert (
        small.resolution is None and small.mixed_precision == "no"
    )  # the resolution is the model's own
    # The small preset is the one measured on the outline style set (docs/style-lora.md).
    assert (
        small.r,
        small.min_snr_gamma,
        small.flip,
        small.caption_dropout,
        small.lora_dropout,
        small.target_modules,
        small.steps,
    ) == (8, 2.0, True, 0.3, 0.1, "attn2+ff", 300)
    assert (
        full.target_modules == "attn2"
    )  # SD 1.5: cross-attention only (the small preset's ff measured on the tiny SD)
    assert not full.flip and full.caption_dropout == 0  # SD 1.5 subjects may not be symmetric
    assert train.TrainConfig().lora_dropout == 0 and full.lora_dropout == 0
    assert full.resolution is None and full.mixed_precision == "bf16" and full.r == 8


def test_the_full_preset_trains_the_tiny_sd_at_its_own_resolution(pipe, dataset):
    """On a GPU runtime for_mode() gives the full preset: on the tiny SD it is a valid run at 64 px, not 512."""
    cfg = train.TrainConfig.for_mode(
        "full",
        steps=2,
        batch_size=2,
        warmup_steps=1,
        mixed_precision="no",
        gradient_checkpointing=False,
        progress=False,
    )
    result = train.train_lora(pipe, dataset, cfg)
    assert len(result.history) == 2 and all(math.isfinite(v) for v in result.history)
    assert len(result.lora_names) == 64 and all(".attn2." in n for n in result.lora_names)


def test_a_resolution_the_model_does_not_draw_says_what_to_set(pipe, dataset):
    with pytest.raises(
        ValueError,
        match=r"training expects \(3, 512, 512\): build the dataset with resolution=512 "
        r"or set TrainConfig.resolution",
    ):
        train.train_lora(pipe, dataset, quick(resolution=512))
    assert next(inject.lora_layers(pipe.unet), None) is None, "nothing was injected"


@pytest.mark.parametrize(
    "data_kind, overrides, message",
    [
        ("empty", {}, "dataset is empty"),
        ("shapes", {"steps": 0}, "steps must be a positive integer"),
        ("shapes", {"batch_size": 0}, "batch_size must be a positive integer"),
        ("shapes", {"mixed_precision": "fp16"}, "needs a CUDA GPU"),
        ("shapes", {"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ("shapes", {"save_format": "ckpt"}, "save_format must be one of"),
        ("shapes", {"caption_dropout": 1.0}, r"caption_dropout must be in \[0, 1\), got 1.0"),
        ("shapes", {"lora_dropout": -0.1}, r"lora_dropout must be in \[0, 1\), got -0.1"),
        ("shapes", {"ema_decay": 1.0}, r"ema_decay must be in \(0, 1\) or None, got 1.0"),
        ("small_images", {}, r"shape \(3, 32, 32\).*resolution=64"),
    ],
)
def test_bad_input_is_refused_clearly(pipe, data_kind, overrides, message):
    dataset = {
        "empty": [],
        "shapes": shapes.ShapesDataset(2),
        "small_images": shapes.ShapesDataset(2, resolution=32),
    }[data_kind]
    with pytest.raises(ValueError, match=message):
        train.train_lora(pipe, dataset, quick(**overrides))
    assert not list(inject.lora_layers(pipe.unet))  # nothing was injected


def test_preflight_checks_memory_on_a_gpu_only(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "check_fits", lambda cfg, pipe, device: calls.append(device.type))
    cfg = train.TrainConfig()
    train.preflight(cfg, object(), torch.device("cpu"))
    assert calls == []
    train.preflight(cfg, object(), torch.device("cuda"))
    assert calls == ["cuda"]


# --- full fine-tuning: the baseline, with the same loop ----------------------------------------


def test_full_fine_tuning_changes_every_unet_weight_and_saves_them(pipe, dataset, tmp_path):
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    vae = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    result = train.train_lora(
        pipe, dataset, quick(method="full", steps=2, lr=1e-4, output_dir=str(tmp_path))
    )
    after = pipe.unet.state_dict()
    assert (
        result.lora_names == []
        and not list(inject.lora_layers(pipe.unet))
        and after.keys() == before.keys()
    )
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == [], f"{len(unchanged)} UNet tensors did not change, e.g. {unchanged[:3]}"
    assert all(
        torch.equal(v, pipe.vae.state_dict()[k]) for k, v in vae.items()
    )  # the VAE stays frozen
    saved = safetensors.torch.load_file(tmp_path / train.FULL_FILE)
    assert saved.keys() == after.keys() and all(torch.equal(saved[k], after[k]) for k in saved)
    assert not (tmp_path / "lora.safetensors").exists()


def test_a_full_fine_tune_resumes_bit_exactly(base_pipe, dataset, tmp_path, monkeypatch):
    cfg = dict(method="full", steps=4, checkpoint_every=2, lr=1e-4)
    whole_pipe = copy.deepcopy(base_pipe)
    whole = train.train_lora(whole_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "whole")))
    interrupt_after(
        2, base_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "cut")), monkeypatch
    )
    resumed_pipe = copy.deepcopy(base_pipe)
    resumed = train.train_lora(
        resumed_pipe, dataset, quick(**cfg, output_dir=str(tmp_path / "cut"))
    )
    assert resumed.history == whole.history
    want, got = whole_pipe.unet.state_dict(), resumed_pipe.unet.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(ValueError, match=r"other settings \(method: 'full' -> 'lora'\)"):
        train.train_lora(
            copy.deepcopy(base_pipe),
            dataset,
            quick(**cfg | {"method": "lora"}, output_dir=str(tmp_path / "cut")),
        )


def test_full_fine_tuning_refuses_a_unet_with_lora_layers_or_in_half_precision(pipe, dataset):
    inject.inject_lora(pipe.unet, r=2)
    with pytest.raises(ValueError, match="has LoRA layers: call inject.remove_lora"):
        train.train_lora(pipe, dataset, quick(method="full", steps=1))
    inject.remove_lora(pipe.unet)
    pipe.unet.to(torch.bfloat16)
    with pytest.raises(ValueError, match="needs the UNet's weights in float32"):
        train.train_lora(pipe, dataset, quick(method="full", steps=1))
    with pytest.raises(ValueError, match="method must be one of lora, full"):
        train.train_lora(pipe, dataset, quick(method="dora", steps=1))
