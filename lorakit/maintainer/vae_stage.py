"""The first stage of the tiny SD's pretraining: the VAE, and what it makes of the pictures.

Not a lesson's concept: a maintainer's tool (``python -m lorakit.maintainer.pretrain``).

:func:`train_vae` teaches the VAE to squeeze 64x64 pictures into 16x16x4 latents and back (MSE +
L1 + a tiny KL term, as SD's VAE), seeded, and keeps the finished stage in ``vae.pt`` (a second
run resumes past it). :func:`encode_all` then encodes every picture once: the UNet stage trains
on these cached latents. :func:`tune_decoder`, optional, fine-tunes the decoder alone on filled
and outline pictures (as Stability's ``sd-vae-ft-mse`` did for SD's VAE), leaving the latent space
the UNet learned exactly as it was.

Left out: perceptual and GAN losses (the shapes world needs none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lorakit import shapes, train
from lorakit.maintainer import pretrain_config

__all__ = ["encode_all", "train_vae", "tune_decoder"]


def train_vae(
    vae, images: torch.Tensor, cfg: pretrain_config.PretrainConfig, device, work: Path
) -> None:
    """Train ``vae`` on ``images`` (N, 3, H, W) uint8, or load the finished stage from
    ``work/vae.pt``."""
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
            group["lr"] = cfg.vae_lr * train.warmup_cosine(step, cfg.warmup_steps, cfg.vae_steps)
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
    train.save_checkpoint({"vae": vae.state_dict()}, path)


def _with_outlines(images: torch.Tensor, seed: int) -> torch.Tensor:
    """``images`` (N, 3, H, W) uint8, then as many outline pictures of the stream ``seed + 7``."""
    outlines = np.stack(
        [
            np.asarray(
                shapes.render(shapes.sample_spec(i, seed + 7, style="outline"), images.shape[-1])
            )
            for i in range(len(images))
        ]
    )
    return torch.cat([images, torch.from_numpy(outlines).permute(0, 3, 1, 2)])  # (2N, 3, H, W)


def tune_decoder(
    vae, images: torch.Tensor, cfg: pretrain_config.PretrainConfig, device
) -> list[float]:
    """Fine-tune the VAE's decoder alone (as Stability's ``sd-vae-ft-mse`` did for SD's VAE).

    ``images`` (N, 3, H, W) uint8 is the pretraining stream; as many outline pictures are added,
    so the decoder also learns thin lines of the right colour. The encoder is frozen, so the
    latent space the UNet learned stays exactly the same. Returns the loss every 10 steps.
    """
    pictures = _with_outlines(images, cfg.seed)
    vae.to(device).requires_grad_(False).decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr * 0.2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    history = []
    for step in (bar := tqdm(range(cfg.decoder_steps), desc="VAE decoder")):
        factor = train.warmup_cosine(step, min(50, cfg.warmup_steps), cfg.decoder_steps)
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * 0.2 * factor
        idx = torch.randint(len(pictures), (cfg.vae_batch_size,), generator=gen)
        x = pictures[idx].to(device).float() / 127.5 - 1  # (B, 3, H, W)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        recon = vae.decode(z).sample.float()
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            history.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(history[-5:]):.4f}")
    vae.eval().cpu().requires_grad_(False)
    return history


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    """Latents (mode of the posterior, unscaled) of every picture, (N, 4, 16, 16) on the CPU."""
    vae.to(device).eval()
    out = [
        vae.encode(images[i : i + batch_size].to(device).float() / 127.5 - 1)
        .latent_dist.mode()
        .cpu()
        for i in range(0, len(images), batch_size)
    ]
    vae.cpu()
    return torch.cat(out)
