"""The steps of a training run, one named function each, in the order lesson 06 teaches them.

Introduced in notebooks/06_train_style_lora.ipynb.

Step 1, :func:`prepare`, refuses bad settings (``check_config``) and, on a GPU, runs that will not
fit (:func:`preflight`, lesson 08's ``lorakit.memory``), then starts accelerate. Step 4,
:func:`make_optimizer`: AdamW on the trained parameters alone, with warm-up then a constant or
cosine learning rate. Step 6, :func:`training_step`: noise, predict, loss, backward (gradient
accumulation, clipping), AdamW and, with ``ema_decay``, an exponential moving average of the LoRA
(diffusers' ``--use_ema``, less dependent on the last few noisy batches); its randomness comes
from ``(seed, step)`` alone (:func:`draw_batch`). Step 7: :func:`validation_loss` on fixed
triples, and :func:`sample_during_training`. Left out: steps 2-3, 5, 8-9 (``caching``,
``trainable``, ``checkpoints``, ``loop``).
"""

from __future__ import annotations

import math

import torch

from lorakit import files, sample
from lorakit.train import objective, processes, settings, training_run

__all__ = [
    "draw_batch",
    "embed",
    "make_optimizer",
    "preflight",
    "prepare",
    "sample_during_training",
    "training_step",
    "validation_indices",
    "validation_loss",
]


def preflight(cfg: settings.TrainConfig, pipe, device: torch.device) -> None:
    """On a GPU, refuse a run whose memory estimate does not fit, naming settings that would
    (``lorakit.memory``).

    On the CPU the budget is the machine's RAM, which the tiny SD never comes near; estimating
    costs a second or two per new setting there, so the check runs on CUDA devices only.
    (``lorakit.memory`` estimates LoRA runs; a full fine-tune is not checked.)
    """
    if device.type == "cuda" and cfg.method == "lora":
        from lorakit import memory  # lesson 08's, loaded only where it is used

        memory.check_fits(cfg, pipe, device=device)


def prepare(pipe, cfg: settings.TrainConfig):
    """Step 1: refuse bad settings and runs that won't fit, before any work; start accelerate.

    Returns ``(accelerator, mine)``: accelerate's view of the processes and this process's rows.
    """
    device = pipe.device
    settings.check_config(cfg, device)
    preflight(cfg, pipe, device)
    accelerator = processes.make_accelerator(cfg, device)
    world, index = accelerator.num_processes, accelerator.process_index
    mine = processes.process_rows(cfg.batch_size, world, index)  # (all rows with one process)
    if world > 1 and device.type != "cpu" and device != accelerator.device:
        raise ValueError(
            f"process {index} of {world} has the pipeline on {device} but accelerate gave it "
            f"{accelerator.device}: load the pipeline on accelerate.PartialState().device."
        )
    return accelerator, mine


def make_optimizer(params: list[torch.Tensor], cfg: settings.TrainConfig, accelerator):
    """Step 4: AdamW on the trained parameters alone (LoRA's A and B), and its learning-rate
    schedule (``objective.lr_factor``)."""
    # fused: one kernel for every parameter, where the for-loop takes 8 ms a step on a CPU
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: objective.lr_factor(step, cfg)
    )
    # fp16: loss scaling via its GradScaler
    return accelerator.prepare_optimizer(optimizer), lr_scheduler


def draw_batch(run: training_run.TrainingRun, step: int):
    """The randomness of one step, all from ``(seed, step)``: which pictures, timesteps, noise and
    captions.

    A resumed run, and every process of a several-process run, draws the same. Returns
    ``(idx, t, noise, context)``: latent rows, timesteps, noise and embedding rows of the
    ``batch_size * grad_accum`` pictures of the step.
    """
    cfg, device = run.cfg, run.device
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    total = cfg.batch_size * cfg.grad_accum
    num_timesteps = run.noise_scheduler.config.num_train_timesteps
    idx = torch.randint(len(run.latents), (total,), generator=gen).to(device)  # (B*A,)
    t = torch.randint(0, num_timesteps, (total,), generator=gen).to(device)  # (B*A,)
    noise = torch.randn((total, *run.latents.shape[1:]), generator=gen)  # (B*A, 4, h, w)
    noise = noise.to(device)
    context = run.rows[idx]  # (B*A,) embedding row of each picture
    if cfg.caption_dropout > 0:  # some get the empty prompt (last row), guidance's other branch
        dropped = (torch.rand(total, generator=gen) < cfg.caption_dropout).to(device)  # (B*A,)
        context = torch.where(dropped, len(run.embeddings) - 1, context)
    return idx, t, noise, context


def embed(run: training_run.TrainingRun, rows: torch.Tensor) -> torch.Tensor:
    """The text embeddings (B, 77, D) of caption ``rows``: cached, or through the text encoder's
    LoRA (with the gradient) when it trains too."""
    if not run.cfg.text_encoder:
        return run.embeddings[rows]
    return run.pipe.text_encoder(run.ids[rows])[0].float()


def _backward(run: training_run.TrainingRun, step: int) -> float:
    """The gradients of one step, micro-batch by micro-batch; returns this process's loss."""
    cfg, accelerator, unet = run.cfg, run.accelerator, run.pipe.unet
    idx, t, noise, context = draw_batch(run, step)
    micro, mine, step_loss = cfg.batch_size, run.mine, 0.0
    # LoRA dropout draws from torch's global generator: seed it from (seed, step, process) as
    # well, and give it back as it was.
    device = run.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed * 1_000_003 + step + 7_919 * accelerator.process_index)
        for k in range(cfg.grad_accum):
            part = slice(k * micro + mine.start, k * micro + mine.stop)  # mine of micro-batch k
            with accelerator.accumulate(unet), accelerator.autocast():
                loss = objective.epsilon_loss(
                    unet,
                    run.noise_scheduler,
                    run.latents[idx[part]],
                    embed(run, context[part]),
                    t[part],
                    noise[part],
                    cfg.min_snr_gamma,
                    run.dtype,
                )
                # its share of the batch's mean (x 1.0 alone)
                loss = loss * ((mine.stop - mine.start) / micro)
                accelerator.backward(loss)  # divides by grad_accum
            step_loss += loss.item() / cfg.grad_accum
    return step_loss


def training_step(run: training_run.TrainingRun, step: int) -> float:
    """Step 6: one optimizer step on the LoRA: noise, predict, loss, backward (all processes),
    clip, AdamW, EMA.

    Returns the step's loss (the mean over its micro-batches and processes).
    """
    cfg = run.cfg
    # the whole batch's gradient and loss
    step_loss = processes.all_reduce_grads(run.accelerator, run.params, _backward(run, step))
    if not math.isfinite(step_loss):  # checked after the all-reduce, so that every process stops
        lr = run.lr_scheduler.get_last_lr()[0]
        raise RuntimeError(
            f"the loss became {step_loss} at step {step + 1} of {cfg.steps} (lr {lr:.3g}): "
            "training diverged. Lower the learning rate, or train in float32 "
            "(mixed_precision='no')."
        )
    if cfg.max_grad_norm > 0:
        run.accelerator.clip_grad_norm_(run.params, cfg.max_grad_norm)
    run.optimizer.step()
    if run.ema:  # diffusers' EMAModel warm-up: the average forgets its start quickly
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(run.ema, [p.detach() for p in run.params], 1 - decay)
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss


def validation_indices(run: training_run.TrainingRun):
    """The fixed (pictures, timesteps, noise) of the validation loss: the same every time, so its
    curve is smooth."""
    cfg, device = run.cfg, run.device
    num_timesteps = run.noise_scheduler.config.num_train_timesteps
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    idx = torch.arange(cfg.num_validation) % len(run.latents)  # (V,)
    t = torch.linspace(0, num_timesteps - 1, cfg.num_validation).long().to(device)  # (V,)
    noise = torch.randn((cfg.num_validation, *run.latents.shape[1:]), generator=gen)
    return idx, t, noise.to(device)  # (V,), (V,), (V, 4, h, w)


@torch.no_grad()
def validation_loss(run: training_run.TrainingRun, fixed) -> float:
    """Step 7a: the loss on the fixed validation triples, without LoRA dropout."""
    unet, text_encoder = run.pipe.unet, run.pipe.text_encoder
    idx, t, noise = fixed
    unet.eval()  # no LoRA dropout: the same number for the same weights
    text_encoder.eval()
    try:
        with run.accelerator.autocast():
            return objective.epsilon_loss(
                unet,
                run.noise_scheduler,
                run.latents[idx],
                embed(run, run.rows[idx]),
                t,
                noise,
                run.cfg.min_snr_gamma,
                run.dtype,
            ).item()
    finally:
        unet.train()
        text_encoder.train(run.cfg.text_encoder)


def sample_during_training(run: training_run.TrainingRun, done: int) -> None:
    """Step 7b: pictures of ``cfg.sample_prompts`` after ``done`` steps (main process; saved with
    ``output_dir``)."""
    cfg, unet = run.cfg, run.pipe.unet
    unet.eval()
    run.pipe.text_encoder.eval()
    images = sample.generate(
        run.pipe,
        list(cfg.sample_prompts),
        seeds=list(range(len(cfg.sample_prompts))),
        resolution=run.resolution,
    )
    unet.train()
    run.pipe.text_encoder.train(cfg.text_encoder)
    run.samples.append((done, images))
    if run.out is not None:
        grid = sample.image_grid(images, labels=cfg.sample_prompts)
        files.write_atomically(
            run.out / f"samples_{done:06d}.png", lambda f: grid.save(f, format="PNG")
        )
