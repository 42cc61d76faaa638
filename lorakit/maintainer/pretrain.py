"""Pretraining the tiny Stable Diffusion on the shapes world: ``python -m lorakit.maintainer.pretrain``.

A maintainer's tool, not a lesson's concept: it made the weights committed in ``data/models/tiny-sd``
that every lesson from 03 on loads (docs/tiny-sd.md tells the three runs and their commands). A
student never needs to run it; a teacher may, to see that the model is reproducible.

Two stages, both seeded and resumable from the last checkpoint in ``--work-dir``:

1. the VAE learns to squeeze 64x64 pictures into 16x16x4 latents and back (MSE + L1 + a tiny
   KL term, as SD's VAE); its ``scaling_factor`` is then measured so latents have unit variance;
2. the pictures are encoded once (cached latents), and the UNet and the text encoder learn
   SD's epsilon-prediction loss on them with 10% empty captions (for classifier-free guidance),
   AdamW with warm-up and a cosine schedule, and an EMA of the weights, which is what is saved.

``--init-from DIR`` continues from a saved tiny SD (its VAE and latent scale are kept) and
``--pair-fraction F`` mixes in pictures of two shapes ("a red circle and a blue square"):
an experiment on whether word-by-word attention maps (Lesson 04) can be taught
(``python -m benchmarks.attention_maps`` measures them).

Left out: perceptual/GAN losses for the VAE (the shapes world needs none), offset noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
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

from lorakit import attention, config, files, metrics, models, shapes
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
    max_seconds: float = (
        0.0  # >0: a time limit; the UNet stage stops and saves there (resume from the checkpoint)
    )
    device: str = ""  # "" picks CUDA when present (config.get_device)
    pair_fraction: float = (
        0.0  # share of pictures with two shapes, "a red circle and a blue square"
    )
    init_from: str = (
        ""  # a saved tiny SD to continue from: its VAE is kept, the UNet and text encoder go on
    )
    token_loss_weight: float = (
        0.0  # >0: add TokenCompose's token loss on the attn2 maps (see token_loss)
    )
    decoder_steps: int = (
        0  # >0: then fine-tune the VAE's decoder alone on filled and outline pictures
    )


def is_pair(index: int, seed: int, pair_fraction: float) -> bool:
    """Whether picture ``index`` of the pretraining stream holds two shapes (``shapes.sample_pair``)."""
    return pair_fraction > 0 and np.random.default_rng([seed, index, 3]).random() < pair_fraction


def specs_of(index: int, seed: int, pair_fraction: float = 0.0) -> list[shapes.ShapeSpec]:
    """The shapes of picture ``index``: one (``shapes.sample_spec``) or two (``shapes.sample_pair``)."""
    if is_pair(index, seed, pair_fraction):
        return list(shapes.sample_pair(index, seed))
    return [shapes.sample_spec(index, seed)]


def render_all(
    num_images: int, seed: int, resolution: int = 64, pair_fraction: float = 0.0
) -> torch.Tensor:
    """Pictures 0..num_images-1 of the stream ``seed`` as uint8 (N, 3, H, W), in parallel."""
    return (
        _in_chunks(_render_chunk, num_images, seed, resolution, pair_fraction)
        .permute(0, 3, 1, 2)
        .contiguous()
    )


def _in_chunks(fn, num_images: int, *args) -> torch.Tensor:
    """``fn((start, stop, *args))`` over chunks of 1,000 pictures in a process pool, concatenated."""
    chunks = [(start, min(start + 1000, num_images), *args) for start in range(0, num_images, 1000)]
    with Pool(max(1, min(os.cpu_count() or 1, 16))) as pool:
        return torch.from_numpy(np.concatenate(pool.map(fn, chunks)))


def _render_chunk(args: tuple[int, int, int, int, float]) -> np.ndarray:
    start, stop, seed, resolution, pair_fraction = args
    return np.stack(
        [
            np.asarray(shapes.render_scene(specs_of(i, seed, pair_fraction), resolution))
            for i in range(start, stop)
        ]
    )


def render_masks(
    num_images: int, seed: int, pair_fraction: float = 0.0, latent: int = 16, resolution: int = 64
) -> torch.Tensor:
    """Where each shape of each picture is: (N, 2, latent, latent), the share of its pixels in each latent cell.

    Row 1 is all zeros for a one-shape picture. The token loss uses these as ground truth.
    """
    return _in_chunks(_mask_chunk, num_images, seed, pair_fraction, latent, resolution)


def _mask_chunk(args: tuple[int, int, int, float, int, int]) -> np.ndarray:
    start, stop, seed, pair_fraction, latent, resolution = args
    out = np.zeros((stop - start, 2, latent, latent), dtype=np.float32)
    cell = resolution // latent
    for row, i in enumerate(range(start, stop)):
        for k, spec in enumerate(specs_of(i, seed, pair_fraction)):
            ink = metrics.ink_mask(shapes.render(spec, resolution))  # (resolution, resolution)
            out[row, k] = ink.reshape(latent, cell, latent, cell).mean((1, 3))
    return out


def grounding_table(num_images: int, seed: int, pair_fraction: float = 0.0) -> torch.Tensor:
    """Token positions of each shape's colour and shape words: (N, 2 captions, 2 shapes, 2 words), -1: none.

    Columns follow :func:`caption_table`: 0 is "a red circle" (colour at 2, shape at 3; position 0
    is the start token), 1 is "a large red circle" (3, 4); a two-shape caption, "a red circle and
    a blue square", has (2, 3) and (6, 7) in both. The tiny SD's tokenizer gives one token a word.
    """
    out = torch.full((num_images, 2, 2, 2), -1, dtype=torch.long)
    for i in range(num_images):
        if is_pair(i, seed, pair_fraction):
            out[i, :, 0], out[i, :, 1] = torch.tensor([2, 3]), torch.tensor([6, 7])
        else:
            out[i, 0, 0], out[i, 1, 0] = torch.tensor([2, 3]), torch.tensor([3, 4])
    return out


def token_loss(
    records: dict[str, list[torch.Tensor]],
    masks: torch.Tensor,
    positions: torch.Tensor,
    min_side: int = 4,
) -> torch.Tensor:
    """TokenCompose's token loss (Wang et al., 2024) on the last maps of every ``attn2`` of at least ``min_side``.

    For each word that names a shape, the share of its attention (over the picture) that falls on
    that shape should be 1: the loss is the mean of (1 - share)^2 over words and layers.
    ``records``: maps (B, N, T) in the graph (``attention.capture_cross_attention(keep_graph=True)``);
    ``masks`` (B, 2, h, w) from :func:`render_masks`; ``positions`` (B, 2, 2), -1 where there is none.
    """
    terms = []
    for maps in records.values():
        probs = maps[-1]  # (B, N, T)
        side = math.isqrt(probs.shape[1])
        if side < min_side:
            continue
        cells = F.adaptive_avg_pool2d(masks, side).flatten(2).to(probs.dtype)  # (B, 2, N)
        for shape in range(2):
            for word in range(2):
                pos = positions[:, shape, word]  # (B,)
                rows = (pos >= 0).nonzero()[:, 0]
                if len(rows) == 0:
                    continue
                a = probs[rows, :, pos[rows]]  # (k, N): attention of every cell to that word
                share = (a * cells[rows, shape]).sum(-1) / a.sum(-1).clamp_min(1e-8)
                terms.append((1 - share) ** 2)
    if not terms:
        return masks.new_zeros(())
    return torch.cat(terms).mean()


def caption_table(
    num_images: int, seed: int, tokenizer, pair_fraction: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of every distinct caption, and for each picture the rows of its short and long caption.

    Row 0 is the empty caption. A two-shape picture has one caption ("a red circle and a blue
    square"), in both columns. Returns ``ids`` (C, 77) and ``rows`` (N, 2).
    """
    captions, rows, where = [""], [], {"": 0}
    for i in range(num_images):
        specs = specs_of(i, seed, pair_fraction)
        if len(specs) == 2:
            texts = (shapes.pair_caption(specs),) * 2
        else:
            texts = (specs[0].caption(with_size=False), specs[0].caption(with_size=True))
        pair = []
        for text in texts:
            if text not in where:
                where[text] = len(captions)
                captions.append(text)
            pair.append(where[text])
        rows.append(pair)
    ids = tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
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


def tune_decoder(vae, images: torch.Tensor, cfg: PretrainConfig, device) -> list[float]:
    """Fine-tune the VAE's decoder alone (as Stability's ``sd-vae-ft-mse`` did for SD's VAE).

    ``images`` (N, 3, H, W) uint8 is the pretraining stream; as many outline pictures are added,
    so the decoder also learns thin lines of the right colour. The encoder is frozen, so the
    latent space the UNet learned stays exactly the same. Returns the loss every 10 steps.
    """
    outlines = torch.from_numpy(
        np.stack(
            [
                np.asarray(
                    shapes.render(
                        shapes.sample_spec(i, cfg.seed + 7, style="outline"), images.shape[-1]
                    )
                )
                for i in range(len(images))
            ]
        )
    ).permute(0, 3, 1, 2)  # (N, 3, H, W)
    pictures = torch.cat([images, outlines])
    vae.to(device).requires_grad_(False).decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr * 0.2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    history = []
    for step in (bar := tqdm(range(cfg.decoder_steps), desc="VAE decoder")):
        for group in opt.param_groups:
            group["lr"] = (
                cfg.vae_lr * 0.2 * warmup_cosine(step, min(50, cfg.warmup_steps), cfg.decoder_steps)
            )
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


def train_unet(
    parts: dict,
    latents: torch.Tensor,
    ids: torch.Tensor,
    rows: torch.Tensor,
    cfg: PretrainConfig,
    device,
    work: Path,
    masks: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> dict:
    """SD's epsilon loss on cached latents (plus ``cfg.token_loss_weight`` x :func:`token_loss` given
    ``masks`` and ``positions``); returns the EMA state dicts and the loss history (epsilon MSE)."""
    unet, text_encoder = parts["unet"].to(device).train(), parts["text_encoder"].to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    noise_scheduler = DDPMScheduler(
        **{
            k: v
            for k, v in models.SD15_SCHEDULER_CONFIG.items()
            if k
            in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
        }
    )
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
    grounded = cfg.token_loss_weight > 0
    if grounded and (masks is None or positions is None):
        raise ValueError(
            "token_loss_weight > 0 needs the shapes' masks and word positions (render_masks, grounding_table)."
        )
    with contextlib.ExitStack() as stack:
        records = (
            stack.enter_context(attention.capture_cross_attention(unet, keep_graph=True))
            if grounded
            else None
        )
        if grounded:
            masks, positions = masks.to(device), positions.to(device)
        step = _unet_steps(
            unet,
            text_encoder,
            params,
            opt,
            ema,
            noise_scheduler,
            alphas,
            latents,
            ids,
            rows,
            cfg,
            device,
            bar,
            history,
            started,
            autocast,
            ckpt_path,
            records,
            masks,
            positions,
        )
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    unet.eval().cpu()
    text_encoder.eval().cpu()
    return {"history": history, "steps_done": step + 1}


def _unet_steps(
    unet,
    text_encoder,
    params,
    opt,
    ema,
    noise_scheduler,
    alphas,
    latents,
    ids,
    rows,
    cfg,
    device,
    bar,
    history,
    started,
    autocast,
    ckpt_path,
    records,
    masks,
    positions,
) -> int:
    """The loop of :func:`train_unet`; returns the index of the last step taken."""
    step = bar.n - 1
    for step in bar:
        # Everything random in a step comes from (seed, step): a resumed run draws the same batches.
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(len(latents), (cfg.batch_size,), generator=gen)
        t = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen
        )
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
        mse = F.mse_loss(pred.float(), noise)
        loss = mse
        if records is not None:
            pos = positions[idx].gather(
                1, long_caption.to(device).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
            )[:, 0]  # (B, 2, 2)
            pos = torch.where(
                (caption_rows != 0).view(-1, 1, 1), pos, -1
            )  # no words in an empty caption
            tokens = token_loss(records, masks[idx], pos)
            loss = mse + cfg.token_loss_weight * tokens
            records.clear()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step % 10 == 0:
            history.append(mse.item())
        if step % 50 == 0:
            bar.set_postfix(
                loss=f"{np.mean(history[-20:]):.4f}",
                **({"token_loss": f"{tokens.item():.3f}"} if records is not None else {}),
            )
        out_of_time = (
            cfg.max_seconds > 0 and time.time() - started > cfg.max_seconds
        ) or step + 1 == cfg.stop_at
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or out_of_time:
            save_atomic(
                {
                    "unet": unet.state_dict(),
                    "text_encoder": text_encoder.state_dict(),
                    "opt": opt.state_dict(),
                    "ema": [e.cpu() for e in ema],
                    "history": history,
                    "step": step + 1,
                },
                ckpt_path,
            )
        if out_of_time:
            print(
                f"UNet: stopped after {step + 1} of {cfg.steps} steps (--stop-at / --max-seconds)"
            )
            break
    return step


def pretrain(cfg: PretrainConfig) -> Path:
    """Run both stages and save the pipeline (UNet and VAE in float16, text encoder in float32) to ``cfg.out``."""
    work, out = Path(cfg.work_dir), Path(cfg.out)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    images = render_all(
        cfg.num_images, cfg.seed, pair_fraction=cfg.pair_fraction
    )  # before CUDA: the pool forks
    device = config.get_device(cfg.device or None)
    torch.manual_seed(cfg.seed)
    if cfg.init_from:  # continue from a saved tiny SD: keep its tokenizer, VAE and latent scale
        pipe = models.load_pipeline(cfg.init_from, device="cpu", dtype="float32")
        parts = {
            k: getattr(pipe, k) for k in ("tokenizer", "text_encoder", "vae", "unet", "scheduler")
        }
        latents = encode_all(parts["vae"], images, device)
        scaling = parts["vae"].config.scaling_factor
    else:
        parts = models.build_tiny_sd(cfg.seed)
        train_vae(parts["vae"], images, cfg, device, work)
        latents = encode_all(parts["vae"], images, device)
        scaling = 1.0 / latents.std().item()
        parts["vae"].register_to_config(scaling_factor=scaling)
    ids, rows = caption_table(cfg.num_images, cfg.seed, parts["tokenizer"], cfg.pair_fraction)
    masks = positions = None
    if cfg.token_loss_weight > 0:
        masks = render_masks(cfg.num_images, cfg.seed, cfg.pair_fraction, latent=latents.shape[-1])
        positions = grounding_table(cfg.num_images, cfg.seed, cfg.pair_fraction)
    result = train_unet(parts, latents * scaling, ids, rows, cfg, device, work, masks, positions)
    decoder_history = (
        tune_decoder(parts["vae"], images, cfg, device) if cfg.decoder_steps > 0 else []
    )
    parts["unet"].half()
    parts["vae"].half()
    pipe = models.make_pipeline(parts)
    tmp = out.with_name(out.name + ".tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)
    log = {
        "config": _portable_paths(asdict(cfg)),
        "vae_scaling_factor": scaling,
        "device": str(device),
        "steps_done": result["steps_done"],
        "torch": torch.__version__,
        "seconds": round(time.time() - started, 1),
        "loss_every_10_steps": [round(v, 5) for v in result["history"]],
        **(
            {"decoder_loss_every_10_steps": [round(v, 5) for v in decoder_history]}
            if decoder_history
            else {}
        ),
    }
    earlier = Path(cfg.init_from) / "pretrain_log.json" if cfg.init_from else None
    if (
        earlier is not None and earlier.exists()
    ):  # the run this one continued, without its loss curve
        log["continued_from"] = {
            k: v for k, v in json.loads(earlier.read_text()).items() if k != "loss_every_10_steps"
        }
    (tmp / "pretrain_log.json").write_text(json.dumps(log, indent=1))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    print(f"saved the tiny SD to {out} in {log['seconds']} s")
    return out


def _portable_paths(settings: dict) -> dict:
    """The settings with their folders relative to the repository (or as ``<elsewhere>/name``): no machine's paths in the log."""
    portable = dict(settings)
    for key in ("out", "work_dir", "init_from"):
        if portable.get(key):
            path = Path(portable[key]).resolve()
            try:
                portable[key] = str(path.relative_to(config.REPO_ROOT))
            except ValueError:
                portable[key] = f"<elsewhere>/{path.name}"
    return portable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for field, default in asdict(PretrainConfig()).items():
        kind = type(default)
        parser.add_argument("--" + field.replace("_", "-"), type=kind, default=default)
    pretrain(PretrainConfig(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
