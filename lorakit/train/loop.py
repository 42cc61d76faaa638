"""The loop: ``train_lora``, the function behind ``lorakit train``, as lesson 06 teaches it.

Introduced in notebooks/06_train_style_lora.ipynb.

:func:`train_lora` calls one named function a step: :func:`start_run` (1 ``prepare``,
2 ``cache_dataset``, 3 ``add_lora``, 4 ``make_optimizer``), 5 ``resume``, then for every step
6 ``training_step``, with 7 ``validation_loss`` and ``sample_during_training`` and
8 ``checkpoint`` when they are due (:func:`when_due`), and 9 :func:`finish`, which saves the LoRA
(or, for ``method="full"``, every UNet weight in ``unet.safetensors``) and the loss plot. The
steps share one ``TrainingRun``.

Left out: the steps' insides (``lorakit.train.steps`` and the modules beside it), callbacks and
logging to a tracker (the history is returned).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lorakit import files, formats
from lorakit.train import (
    caching,
    checkpoints,
    objective,
    plot,
    settings,
    steps,
    trainable,
    training_run,
)

__all__ = ["FULL_FILE", "finish", "start_run", "train_lora", "when_due"]

FULL_FILE = "unet.safetensors"  # what a full fine-tune saves: every UNet weight


def _output_folder(cfg: settings.TrainConfig) -> Path | None:
    out = Path(cfg.output_dir) if cfg.output_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files.remove_stale(out)  # what killed runs left half-written
    return out


def start_run(pipe, dataset, cfg: settings.TrainConfig) -> training_run.TrainingRun:
    """Steps 1 to 4: prepare, cache the data set, add the LoRA (or unfreeze the UNet), make the
    optimizer; returns the run they start."""
    accelerator, mine = steps.prepare(pipe, cfg)  # 1
    resolution = cfg.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    latents, embeddings, rows = caching.cache_dataset(  # 2
        pipe, dataset, resolution, flip=cfg.flip, empty_prompt=cfg.caption_dropout > 0
    )
    empty_prompt = cfg.caption_dropout > 0
    ids = caching.caption_ids(pipe, dataset, empty_prompt) if cfg.text_encoder else None
    if cfg.method == "lora":  # 3
        names = trainable.add_lora(pipe.unet, cfg)
        if cfg.text_encoder:
            names += trainable.add_text_lora(pipe.text_encoder, cfg)
        params = trainable.lora_parameters(pipe, cfg)
    else:  # a full fine-tune: the baseline LoRA is measured against
        names, params = [], trainable.unfreeze(pipe.unet)
    optimizer, lr_scheduler = steps.make_optimizer(params, cfg, accelerator)  # 4
    return training_run.TrainingRun(
        pipe=pipe,
        device=pipe.device,
        dtype=pipe.unet.dtype,
        cfg=cfg,
        accelerator=accelerator,
        mine=mine,
        resolution=resolution,
        latents=latents,
        embeddings=embeddings,
        rows=rows,
        names=names,
        params=params,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        noise_scheduler=objective.noise_scheduler(pipe),
        ema=[p.detach().clone() for p in params] if cfg.ema_decay else [],
        out=_output_folder(cfg),
        ids=ids,
    )


@contextlib.contextmanager
def _training_mode(run: training_run.TrainingRun):
    """Train mode (and gradient checkpointing, if set) while the loop runs; as they were after."""
    cfg, unet, text_encoder = run.cfg, run.pipe.unet, run.pipe.text_encoder
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    was_training, text_was_training = unet.training, text_encoder.training
    unet.train()  # diffusers' checkpointing and LoRA dropout act in train mode only
    text_encoder.train(cfg.text_encoder)
    try:
        yield
    finally:
        unet.train(was_training)
        text_encoder.train(text_was_training)
        if cfg.gradient_checkpointing:
            unet.disable_gradient_checkpointing()


def when_due(run: training_run.TrainingRun, done: int, fixed) -> None:
    """Steps 7 and 8 after ``done`` steps: the validation loss, sample pictures and a checkpoint,
    each when it is due."""
    cfg = run.cfg
    if cfg.validation_every and done % cfg.validation_every == 0:  # 7
        run.val_history.append((done, steps.validation_loss(run, fixed)))
    if cfg.sample_every and done % cfg.sample_every == 0 and run.main:
        steps.sample_during_training(run, done)
    every = cfg.checkpoint_every and done % cfg.checkpoint_every == 0
    if run.out is not None and run.main and (every or done == cfg.steps):
        checkpoints.checkpoint(run, done)  # 8


def finish(run: training_run.TrainingRun) -> training_run.TrainResult:
    """Step 9: the EMA into the LoRA (if any), and the LoRA file and loss plot (main process, with
    ``output_dir``)."""
    cfg = run.cfg
    if run.ema:  # the LoRA left in the UNet and saved is the average
        with torch.no_grad():
            torch._foreach_copy_(run.params, run.ema)
    result = training_run.TrainResult(
        history=run.history,
        val_history=run.val_history,
        samples=run.samples,
        lora_names=run.names,
        step_seconds=run.step_seconds,
    )
    if run.out is not None and run.main:
        if cfg.method == "lora":
            name = "lora" if cfg.save_format == "peft" else "lora.safetensors"
            holder = trainable.lora_holder(run.pipe, cfg)
            formats.save_lora(holder, run.out / name, cfg.save_format)
        else:
            state = trainable.trainable_state(run.pipe.unet, cfg)
            content = formats.safetensors_bytes(state, {"lorakit_method": "full"})
            files.write_atomically(run.out / FULL_FILE, content)
        plot.save_loss_plot(result, run.out / "loss.png")
    run.accelerator.wait_for_everyone()  # every process returns once the files are there
    return result


def train_lora(
    pipe, dataset, config: settings.TrainConfig | None = None
) -> training_run.TrainResult:
    """Inject LoRA into ``pipe.unet`` (unless it already has LoRA layers) and train it on
    ``dataset``.

    ``dataset`` yields ``(image (3, R, R) in [-1, 1], caption)``. The trained LoRA stays in
    ``pipe.unet``; with ``cfg.output_dir`` it is also saved (``lora.safetensors``, or ``lora/``
    for PEFT), with ``loss.png`` and a checkpoint to resume from. Under ``accelerate launch`` with
    several processes, every process calls it, with the pipeline on
    ``accelerate.PartialState().device``. One named function a step, in lesson 06's order.
    """
    cfg = config or settings.TrainConfig()  # (the parameter hides the lorakit.config module)
    state = checkpoints.resume_state(cfg)  # read once: other settings are refused before any work
    run = start_run(pipe, dataset, cfg)  # 1-4
    checkpoints.resume(run, state)  # 5
    fixed = steps.validation_indices(run)
    with _training_mode(run):
        if cfg.validation_every and run.start == 0:
            run.val_history.append((0, steps.validation_loss(run, fixed)))
        bar = tqdm(
            range(run.start, cfg.steps),
            desc="LoRA",
            initial=run.start,
            total=cfg.steps,
            disable=not (cfg.progress and run.main),
        )
        for step in bar:
            started = time.perf_counter()
            run.history.append(steps.training_step(run, step))  # 6
            run.step_seconds.append(time.perf_counter() - started)
            lr = run.lr_scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{run.history[-1]:.4f}", lr=f"{lr:.2g}")
            when_due(run, step + 1, fixed)  # 7, 8
    return finish(run)  # 9
