"""The training steps ``benchmarks.gpu_train`` times: SD 1.5's UNet (or an SD-shaped tiny one) with
lorakit's LoRA, with PEFT's (``unet.add_adapter``), or fully trainable (:func:`build`); the same
epsilon step under autocast for each, timed after warm-up with its peak memory
(:func:`run_variant`); random latents and text embeddings made once (:func:`make_batches`); and
the card's measured matmul rate, for the model FLOP utilisation (:func:`matmul_rate`).

Left out: the command line and the table (``benchmarks.gpu_train``), the VAE and text encoder
(cached outputs), data loading.
"""

from __future__ import annotations

import gc
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from peft import LoraConfig

from benchmarks.lora_speed import saved_bytes, sync
from lorakit import inject, models

CONFIGS = {
    "sd15": dict(unet=models.SD15_UNET_CONFIG, resolution=512),
    "tiny": dict(
        unet=models.TINY_UNET_CONFIG, resolution=128
    ),  # SD's layout, narrow: for CPUs and tests
}
VARIANTS = ("lorakit", "peft", "full")
EXTRAS = ("lorakit+channels_last", "lorakit+compile")


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Measured FLOP/s of an n x n x n matrix product (mean of ``repeats`` after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def build(
    variant: str, unet_config: dict, rank: int, device: torch.device, dtype: torch.dtype, seed: int
):
    """A fresh UNet (same random weights for every variant) set up for ``variant``; returns (unet,
    params)."""
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config)
    if variant == "full":
        unet.float().requires_grad_(True)  # fp32 master weights, bf16 compute under autocast
        return unet.train(), list(unet.parameters())
    unet.to(dtype).requires_grad_(False)
    torch.manual_seed(seed + 1)
    if variant.startswith("lorakit"):
        inject.inject_lora(unet, r=rank, target_modules="attn2")
        if "channels_last" in variant:
            unet.to(memory_format=torch.channels_last)
    elif variant == "peft":
        targets = inject.find_targets(unet, "attn2")
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets))
        for p in (
            unet.parameters()
        ):  # PEFT's adapter follows the base dtype; train it in fp32 as lorakit does
            if p.requires_grad:
                p.data = p.data.float()
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS + EXTRAS}")
    params = [p for p in unet.parameters() if p.requires_grad]
    if variant.endswith("+compile"):
        unet = torch.compile(unet)
    return unet.train(), params


def time_steps(step, args, device: torch.device) -> tuple[list, list, int, float]:
    """``args.warmup`` untimed steps, then ``args.steps`` timed ones: their seconds, every loss,
    the bytes autograd saved in the first timed step (on the CPU) and the warm-up's seconds."""
    times, losses, saved = [], [], 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compile_start = time.perf_counter()
    for i in range(args.warmup):
        losses.append(step(i).item())
    sync(device)
    warmup_seconds = time.perf_counter() - compile_start
    for i in range(args.warmup, args.warmup + args.steps):
        sync(device)
        start = time.perf_counter()
        if device.type == "cpu" and i == args.warmup:
            loss, saved = saved_bytes(lambda i=i: step(i))
        else:
            loss = step(i)
        sync(device)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return times, losses, saved, warmup_seconds


def run_variant(variant: str, args, unet_config: dict, batches: list, device: torch.device) -> dict:
    """Warm up, then time ``args.steps`` training steps; returns times, peak memory and losses."""
    dtype = (
        {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        if device.type == "cuda"
        else torch.float32
    )
    unet, params = build(variant, unet_config, args.rank, device, dtype, args.seed)
    trainable = sum(p.numel() for p in params)
    held = dict(
        unet=unet,
        opt=torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2, fused=device.type == "cuda"),
    )
    del (
        unet,
        params,
    )  # only `held` keeps them, so that clearing it frees the memory for the next variant
    autocast = torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda")
    channels_last = "channels_last" in variant

    def step(i: int) -> float:
        noisy, t, ctx, noise = batches[i % len(batches)]
        if channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        with autocast:
            pred = held["unet"](noisy, t, ctx).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        held["opt"].step()
        held["opt"].zero_grad(set_to_none=True)
        return loss

    times, losses, saved, warmup_seconds = time_steps(step, args, device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else saved
    held.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(
        variant=variant,
        step_s=statistics.median(times),
        times=times,
        peak_bytes=peak,
        losses=losses,
        trainable=trainable,
        warmup_s=warmup_seconds,
    )


def make_batches(args, unet_config: dict, device: torch.device, count: int = 4) -> list:
    """``count`` fixed batches (noisy latents, timesteps, text embeddings, noise), as cached data
    gives."""
    gen = torch.Generator().manual_seed(args.seed)
    latent = (
        CONFIGS[args.config]["resolution"] // 8 if args.resolution is None else args.resolution // 8
    )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out = []
    for _ in range(count):
        x0 = torch.randn(args.batch, 4, latent, latent, generator=gen)  # (B, 4, h, w)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = (
            (1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
            .cumprod(0)[t]
            .view(-1, 1, 1, 1)
        )
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        ctx = torch.randn(
            args.batch, 77, unet_config["cross_attention_dim"], generator=gen
        )  # (B, 77, D)
        out.append((noisy.to(device, dtype), t.to(device), ctx.to(device, dtype), noise.to(device)))
    return out
