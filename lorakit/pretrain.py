"""Pretraining the tiny Stable Diffusion on the shapes world: ``python -m lorakit.pretrain``.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb (the model it makes is used by every
later lesson; the committed weights in ``data/models/tiny-sd`` came from this file).

Two stages, both seeded and resumable from the last checkpoint in ``--work-dir``:

1. the VAE learns to squeeze 64x64 pictures into 16x16x4 latents and back (MSE + L1 + a tiny
   KL term, as SD's VAE); its ``scaling_factor`` is then measured so latents have unit variance;
2. the pictures are encoded once (cached latents), and the UNet and the text encoder learn
   SD's epsilon-prediction loss on them with 10% empty captions (for classifier-free guidance),
   AdamW with warm-up and a cosine schedule, and an EMA of the weights, which is what is saved.

Left out: perceptual/GAN losses for the VAE (the shapes world needs none), offset noise.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from lorakit import config, data, files, models
from lorakit.train import warmup_cosine


@dataclass
class PretrainConfig:
    out: str = str(config.TINY_SD_DIR)
    work_dir: str = "runs/pretrain"
    seed: int = 0
    num_images: int = 30_000  # pictures rendered, encoded and cached once
    vae_steps: int = 3_000
    vae_batch_size: int = 128
    vae_lr: float = 1e-3
    steps: int = 6_000
    batch_size: int = 256
    lr: float = 5e-4
    warmup_steps: int = 300
    ema_decay: float = 0.9995
    empty_caption_prob: float = 0.1
    checkpoint_every: int = 500
    stop_at: int = 0  # >0: stop after this many steps of the `steps`-long schedule (same weights as a run cut there)
    max_seconds: float = 0.0  # >0: a safety valve on a lent GPU; the UNet stage stops and saves there
    device: str = ""  # "" picks CUDA when present (config.get_device)


def render_all(num_images: int, seed: int, resolution: int = 64) -> torch.Tensor:
    """Pictures 0..num_images-1 of the stream ``seed`` as uint8 (N, 3, H, W), in parallel."""
    chunks = [(start, min(start + 1000, num_images), seed, resolution) for start in range(0, num_images, 1000)]
    with Pool(max(1, min(os.cpu_count() or 1, 16))) as pool:
        parts = pool.map(_render_chunk, chunks)
    return torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()


def _render_chunk(args: tuple[int, int, int, int]) -> np.ndarray:
    start, stop, seed, resolution = args
    return np.stack([np.asarray(data.render(data.sample_spec(i, seed), resolution)) for i in range(start, stop)])


def caption_table(num_images: int, seed: int, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of every distinct caption, and for each picture the rows of its short and long caption.

    Row 0 is the empty caption. Returns ``ids`` (C, 77) and ``rows`` (N, 2).
    """
    captions, rows = [""], []
    for i in range(num_images):
        spec = data.sample_spec(i, seed)
        pair = []
        for text in (spec.caption(with_size=False), spec.caption(with_size=True)):
            if text not in captions:
                captions.append(text)
            pair.append(captions.index(text))
        rows.append(pair)
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return ids, torch.tensor(rows)


def save_atomic(state: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    files.write_atomically(path, lambda tmp: torch.save(state, tmp))


def train_vae(vae, images: torch.Tensor, cfg: PretrainConfig, device, work: Path) -> None:
    path = work / "vae.pt"
    if path.exists():
        vae.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["vae"])
        print(f"VAE: resumed finished stage from {path}")
        return
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for step in (bar := tqdm(range(cfg.vae_steps), desc="VAE")):
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * warmup_cosine(step, cfg.warmup_steps, cfg.vae_steps)
        idx = torch.randint(len(images), (cfg.vae_batch_size,), generator=gen)
        x = images[idx].to(device).float() / 127.5 - 1  # (B, 3, 64, 64)
        with autocast:
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
        recon = recon.float()
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval().cpu()
    save_atomic({"vae": vae.state_dict()}, path)


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    """Latents (mode of the posterior, unscaled) of every picture, (N, 4, 16, 16) on the CPU."""
    vae.to(device).eval()
    out = [vae.encode(images[i:i + batch_size].to(device).float() / 127.5 - 1).latent_dist.mode().cpu()
           for i in range(0, len(images), batch_size)]
    vae.cpu()
    return torch.cat(out)


def train_unet(parts: dict, latents: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor,
               cfg: PretrainConfig, device, work: Path) -> dict:
    """SD's epsilon loss on cached latents; returns the EMA state dicts and the loss history."""
    unet, text_encoder = parts["unet"].to(device).train(), parts["text_encoder"].to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    noise_scheduler = DDPMScheduler(**{k: v for k, v in models.SD15_SCHEDULER_CONFIG.items()
                                       if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")})
    alphas = noise_scheduler.alphas_cumprod.to(device)
    history, start = [], 0
    ckpt_path = work / "unet.pt"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        for e, saved in zip(ema, state["ema"], strict=True):
            e.copy_(saved)
        history, start = state["history"], state["step"]
        print(f"UNet: resumed from step {start} ({ckpt_path})")
    latents, ids, rows = latents.to(device), ids.to(device), rows.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(range(start, cfg.steps), desc="UNet", initial=start, total=cfg.steps)
    started = time.time()
    for step in bar:
        # Everything random in a step comes from (seed, step): a resumed run draws the same batches.
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(len(latents), (cfg.batch_size,), generator=gen)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn((cfg.batch_size, *latents.shape[1:]), generator=gen).to(device)
        choice = torch.rand(cfg.batch_size, generator=gen)
        long_caption = (torch.rand(cfg.batch_size, generator=gen) < 0.5).long()
        idx, t = idx.to(device), t.to(device)
        caption_rows = rows[idx].gather(1, long_caption.to(device)[:, None])[:, 0]
        caption_rows = torch.where(choice.to(device) < cfg.empty_caption_prob, 0, caption_rows)
        x0 = latents[idx]  # (B, 4, 16, 16), already scaled
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = cfg.lr * warmup_cosine(step, cfg.warmup_steps, cfg.steps)
        with autocast:
            context = text_encoder(ids[caption_rows])[0]  # (B, 77, width)
            pred = unet(noisy, t, context).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step % 10 == 0:
            history.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(history[-20:]):.4f}")
        out_of_time = (cfg.max_seconds > 0 and time.time() - started > cfg.max_seconds) or step + 1 == cfg.stop_at
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or out_of_time:
            save_atomic({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                         "opt": opt.state_dict(), "ema": [e.cpu() for e in ema],
                         "history": history, "step": step + 1}, ckpt_path)
        if out_of_time:
            print(f"UNet: stopped after {step + 1} of {cfg.steps} steps (--stop-at / --max-seconds)")
            break
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    unet.eval().cpu()
    text_encoder.eval().cpu()
    return {"history": history, "steps_done": step + 1}


def pretrain(cfg: PretrainConfig) -> Path:
    """Run both stages and save the pipeline (UNet and VAE in float16, text encoder in float32) to ``cfg.out``."""
    work, out = Path(cfg.work_dir), Path(cfg.out)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    images = render_all(cfg.num_images, cfg.seed)  # before CUDA starts: the pool forks
    device = config.get_device(cfg.device or None)
    torch.manual_seed(cfg.seed)
    parts = models.build_tiny_sd(cfg.seed)
    train_vae(parts["vae"], images, cfg, device, work)
    latents = encode_all(parts["vae"], images, device)
    scaling = 1.0 / latents.std().item()
    parts["vae"].register_to_config(scaling_factor=scaling)
    ids, rows = caption_table(cfg.num_images, cfg.seed, parts["tokenizer"])
    result = train_unet(parts, latents * scaling, ids, rows, cfg, device, work)
    parts["unet"].half()
    parts["vae"].half()
    pipe = models.make_pipeline(parts)
    tmp = out.with_name(out.name + ".tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)
    log = {"config": asdict(cfg), "vae_scaling_factor": scaling, "device": str(device),
           "steps_done": result["steps_done"], "torch": torch.__version__, "seconds": round(time.time() - started, 1),
           "loss_every_10_steps": [round(v, 5) for v in result["history"]]}
    (tmp / "pretrain_log.json").write_text(json.dumps(log, indent=1))
    if out.exists():
        import shutil
        shutil.rmtree(out)
    os.replace(tmp, out)
    print(f"saved the tiny SD to {out} in {log['seconds']} s")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for field, default in asdict(PretrainConfig()).items():
        kind = float if isinstance(default, float) else int if isinstance(default, int) else str
        parser.add_argument("--" + field.replace("_", "-"), type=kind, default=default)
    pretrain(PretrainConfig(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
