"""The second stage of the tiny SD's pretraining: the UNet and the text encoder, on cached latents.

Not a lesson's concept: a maintainer's tool (``python -m lorakit.maintainer.pretrain``).

:func:`train_unet` trains SD's epsilon-prediction loss on the latents ``vae_stage`` cached, with
10% empty captions (for classifier-free guidance), AdamW with warm-up and a cosine schedule,
gradient clipping and an EMA of the weights, which is what is kept; optionally TokenCompose's
token loss on the ``attn2`` maps (``grounding``). Everything random in a step comes from
``(seed, step)`` and a checkpoint (``work/unet.pt``) is written every ``checkpoint_every`` steps:
an interrupted run, run again, ends with the weights of an uninterrupted one. The steps share a
:class:`UNetStage`.

Left out: offset noise, min-SNR weighting, several processes (one GPU made the tiny SD).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from lorakit import attention, models, train
from lorakit.maintainer import grounding, pretrain_config

__all__ = ["UNetStage", "train_unet"]

SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "prediction_type",
)


@dataclass
class UNetStage:
    """What the steps of :func:`train_unet` share: the models, the data, the optimizer, the EMA."""

    cfg: pretrain_config.PretrainConfig
    device: torch.device
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    params: list[torch.Tensor]  # the UNet's, then the text encoder's
    opt: torch.optim.Optimizer
    ema: list[torch.Tensor]  # the moving average of params
    noise_scheduler: DDPMScheduler  # SD 1.5's schedule
    alphas: torch.Tensor  # (T,) its alphas_cumprod, on the device
    latents: torch.Tensor  # (N, 4, 16, 16), scaled, on the device
    ids: torch.Tensor  # (C, 77) token ids of the distinct captions
    rows: torch.Tensor  # (N, 2) each picture's short and long caption row
    checkpoint_path: Path
    history: list[float] = field(default_factory=list)  # the epsilon MSE every 10 steps
    start: int = 0  # the first step to train (after a resume, the checkpoint's)
    records: dict | None = None  # the attn2 maps, with the token loss
    masks: torch.Tensor | None = None  # (N, 2, 16, 16) where each shape is
    positions: torch.Tensor | None = None  # (N, 2, 2, 2) where its words are

    def autocast(self):
        enabled = self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)


def _start(parts: dict, latents, ids, rows, cfg, device, work: Path) -> UNetStage:
    """The stage's models and optimizer, resumed from ``work/unet.pt`` where it exists."""
    unet, text_encoder = parts["unet"].to(device).train(), parts["text_encoder"].to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    schedule = {k: v for k, v in models.SD15_SCHEDULER_CONFIG.items() if k in SCHEDULE_KEYS}
    noise_scheduler = DDPMScheduler(**schedule)
    stage = UNetStage(
        cfg=cfg,
        device=device,
        unet=unet,
        text_encoder=text_encoder,
        params=params,
        opt=opt,
        ema=[p.detach().clone() for p in params],
        noise_scheduler=noise_scheduler,
        alphas=noise_scheduler.alphas_cumprod.to(device),
        latents=latents.to(device),
        ids=ids.to(device),
        rows=rows.to(device),
        checkpoint_path=work / "unet.pt",
    )
    if stage.checkpoint_path.exists():
        state = torch.load(stage.checkpoint_path, map_location="cpu", weights_only=True)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        for e, saved in zip(stage.ema, state["ema"], strict=True):
            e.copy_(saved)
        stage.history, stage.start = state["history"], state["step"]
        print(f"UNet: resumed from step {stage.start} ({stage.checkpoint_path})")
    return stage


def _batch(stage: UNetStage, step: int) -> tuple[torch.Tensor, ...]:
    """The randomness of one step, all from ``(seed, step)`` (a resumed run draws the same):
    ``(idx, t, noise, long_caption, caption_rows)``."""
    cfg, device, size = stage.cfg, stage.device, stage.cfg.batch_size
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    num_timesteps = stage.noise_scheduler.config.num_train_timesteps
    idx = torch.randint(len(stage.latents), (size,), generator=gen)
    t = torch.randint(0, num_timesteps, (size,), generator=gen)
    noise = torch.randn((size, *stage.latents.shape[1:]), generator=gen).to(device)
    choice = torch.rand(size, generator=gen)
    long_caption = (torch.rand(size, generator=gen) < 0.5).long().to(device)  # (B,) 0 or 1
    idx, t = idx.to(device), t.to(device)
    caption_rows = stage.rows[idx].gather(1, long_caption[:, None])[:, 0]  # (B,)
    caption_rows = torch.where(choice.to(device) < cfg.empty_caption_prob, 0, caption_rows)
    return idx, t, noise, long_caption, caption_rows


def _losses(stage: UNetStage, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(loss, epsilon MSE, token loss or None)`` of one step's batch."""
    idx, t, noise, long_caption, caption_rows = batch
    x0 = stage.latents[idx]  # (B, 4, 16, 16), already scaled
    a = stage.alphas[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with stage.autocast():
        context = stage.text_encoder(stage.ids[caption_rows])[0]  # (B, 77, width)
        pred = stage.unet(noisy, t, context).sample
    mse = F.mse_loss(pred.float(), noise)
    if stage.records is None:
        return mse, mse, None
    which = long_caption.view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    pos = stage.positions[idx].gather(1, which)[:, 0]  # (B, 2, 2)
    pos = torch.where((caption_rows != 0).view(-1, 1, 1), pos, -1)  # no words in an empty caption
    tokens = grounding.token_loss(stage.records, stage.masks[idx], pos)
    stage.records.clear()
    return mse + stage.cfg.token_loss_weight * tokens, mse, tokens


def _step(stage: UNetStage, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step, then the EMA; returns ``(epsilon MSE, token loss or None)``."""
    cfg = stage.cfg
    batch = _batch(stage, step)
    for group in stage.opt.param_groups:
        group["lr"] = cfg.lr * train.warmup_cosine(step, cfg.warmup_steps, cfg.steps)
    loss, mse, tokens = _losses(stage, batch)
    stage.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(stage.params, 1.0)
    stage.opt.step()
    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(stage.ema, [p.detach() for p in stage.params], 1 - decay)
    return mse, tokens


def _checkpoint(stage: UNetStage, done: int) -> None:
    state = {
        "unet": stage.unet.state_dict(),
        "text_encoder": stage.text_encoder.state_dict(),
        "opt": stage.opt.state_dict(),
        "ema": [e.cpu() for e in stage.ema],
        "history": stage.history,
        "step": done,
    }
    train.save_checkpoint(state, stage.checkpoint_path)


def _unet_steps(stage: UNetStage, bar, started: float) -> int:
    """The loop of :func:`train_unet`; returns the index of the last step taken."""
    cfg = stage.cfg
    step = bar.n - 1
    for step in bar:
        mse, tokens = _step(stage, step)
        if step % 10 == 0:
            stage.history.append(mse.item())
        if step % 50 == 0:
            extra = {"token_loss": f"{tokens.item():.3f}"} if tokens is not None else {}
            bar.set_postfix(loss=f"{np.mean(stage.history[-20:]):.4f}", **extra)
        out_of_time = (
            cfg.max_seconds > 0 and time.time() - started > cfg.max_seconds
        ) or step + 1 == cfg.stop_at
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or out_of_time:
            _checkpoint(stage, step + 1)
        if out_of_time:
            print(
                f"UNet: stopped after {step + 1} of {cfg.steps} steps (--stop-at / --max-seconds)"
            )
            break
    return step


def train_unet(
    parts: dict,
    latents: torch.Tensor,
    ids: torch.Tensor,
    rows: torch.Tensor,
    cfg: pretrain_config.PretrainConfig,
    device,
    work: Path,
    masks: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> dict:
    """SD's epsilon loss on cached latents (plus ``cfg.token_loss_weight`` x the token loss given
    ``masks`` and ``positions``); returns the EMA state dicts and the loss history (epsilon MSE).
    """
    stage = _start(parts, latents, ids, rows, cfg, device, work)
    bar = tqdm(range(stage.start, cfg.steps), desc="UNet", initial=stage.start, total=cfg.steps)
    started = time.time()
    grounded = cfg.token_loss_weight > 0
    if grounded and (masks is None or positions is None):
        raise ValueError(
            "token_loss_weight > 0 needs the shapes' masks and word positions (render_masks, "
            "grounding_table)."
        )
    with contextlib.ExitStack() as stack:
        if grounded:
            capture = attention.capture_cross_attention(stage.unet, keep_graph=True)
            stage.records = stack.enter_context(capture)
            stage.masks, stage.positions = masks.to(device), positions.to(device)
        step = _unet_steps(stage, bar, started)
    with torch.no_grad():
        for p, e in zip(stage.params, stage.ema, strict=True):
            p.copy_(e)
    stage.unet.eval().cpu()
    stage.text_encoder.eval().cpu()
    return {"history": stage.history, "steps_done": step + 1}
