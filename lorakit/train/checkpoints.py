"""Checkpoint and resume: a run stopped and resumed ends with the same LoRA, bit for bit.

Introduced in notebooks/06_train_style_lora.ipynb.

Every step draws its randomness from a generator seeded by ``(seed, step)``, and a checkpoint
(the LoRA or, for a full fine-tune, the UNet; the optimizer, the schedule, the random state, the
history, the EMA) is written atomically (``lorakit.files``) every ``checkpoint_every`` steps and
at the end: a run stopped and resumed ends with the same weights as one that never stopped.
:func:`resume_state` refuses a checkpoint written with other settings (``RESUME_KEYS``), naming
each, before anything changes; only ``steps`` may grow (not under the cosine schedule).

Left out: keeping several checkpoints (each one overwrites the last).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from lorakit import files, inject
from lorakit.train import settings, trainable, training_run

__all__ = ["CHECKPOINT", "RESUME_KEYS", "checkpoint", "resume", "resume_state", "save_checkpoint"]

CHECKPOINT = "checkpoint.pt"
RESUME_KEYS = (  # the settings a resumed run must share with the run that wrote the checkpoint
    "method",
    "r",
    "alpha",
    "target_modules",
    "text_encoder",
    "batch_size",
    "grad_accum",
    "seed",
    "flip",
    "caption_dropout",
    "ema_decay",
    "lora_dropout",
    "lr",
    "lr_schedule",
    "warmup_steps",
    "min_snr_gamma",
    "max_grad_norm",
    "mixed_precision",
    "resolution",
)  # (steps may grow)


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save, written atomically: a crash or a full disk never leaves half a checkpoint."""
    files.write_atomically(path, lambda f: torch.save(state, f))


def _read(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # ours: no pickled code
    except Exception as error:  # a torn or foreign file: torch raises many kinds
        raise ValueError(
            f"{path} cannot be read ({type(error).__name__}): delete it to start "
            "again, or resume=False."
        ) from None


def resume_state(cfg: settings.TrainConfig) -> dict | None:
    """The checkpoint in ``cfg.output_dir`` that a run of ``cfg`` would resume from (None: a new
    run), checked: written with the same settings (``RESUME_KEYS``), at a step no later than
    ``cfg.steps``."""
    out = Path(cfg.output_dir) if cfg.output_dir else None
    if out is None or not cfg.resume or not (out / CHECKPOINT).exists():
        return None
    state = _read(out / CHECKPOINT)
    changed = [
        f"{k}: {state['config'][k]!r} -> {v!r}"
        for k, v in asdict(cfg).items()
        if k in RESUME_KEYS and _plain(state["config"].get(k)) != _plain(v)
    ]
    if state["step"] > cfg.steps or (
        cfg.lr_schedule == "cosine" and state["config"]["steps"] != cfg.steps
    ):
        changed.append(
            f"steps: {state['config']['steps']!r} -> {cfg.steps!r} (the checkpoint is at step "
            f"{state['step']}; steps may only grow, and not under the cosine schedule)"
        )
    if changed:
        raise ValueError(
            f"{out / CHECKPOINT} was trained with other settings ({'; '.join(changed)}): "
            "resume with the checkpoint's settings, use another output_dir, or resume=False to "
            "start again (the checkpoint is overwritten)."
        )
    return state


def resume(run: training_run.TrainingRun, state: dict | None) -> None:
    """Step 5: continue from ``state``, the checkpoint :func:`resume_state` read and checked (None:
    a new run).

    The LoRA (or, for a full fine-tune, the UNet), the optimizer, the schedule, the random state
    and the history continue exactly.
    """
    if state is None:
        return
    if run.cfg.method == "lora":
        inject.load_lora_state_dict(trainable.lora_holder(run.pipe, run.cfg), state["lora"])
    else:
        with torch.no_grad():
            run.pipe.unet.load_state_dict(state["unet"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.lr_scheduler.load_state_dict(state["lr_scheduler"])
    if run.accelerator.scaler is not None and "scaler" in state:
        run.accelerator.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    run.history, run.start = state["history"], state["step"]
    for e, saved in zip(run.ema, state.get("ema", []), strict=True):
        e.copy_(saved)
    run.val_history = [tuple(v) for v in state["val_history"]]


def checkpoint(run: training_run.TrainingRun, step: int) -> None:
    """Step 8: everything :func:`resume` needs, written atomically to
    ``output_dir/checkpoint.pt``."""
    lora = run.cfg.method == "lora"
    model = trainable.lora_holder(run.pipe, run.cfg) if lora else run.pipe.unet
    state = {
        "lora" if lora else "unet": trainable.trainable_state(model, run.cfg),
        "optimizer": run.optimizer.state_dict(),
        "lr_scheduler": run.lr_scheduler.state_dict(),
        "step": step,
        "history": run.history,
        "val_history": [list(v) for v in run.val_history],
        "rng": torch.get_rng_state(),
        "config": {k: _plain(v) for k, v in asdict(run.cfg).items()},
    }
    if run.accelerator.scaler is not None:
        state["scaler"] = run.accelerator.scaler.state_dict()
    if run.ema:
        state["ema"] = [e.cpu().clone() for e in run.ema]
    save_checkpoint(state, run.out / CHECKPOINT)
