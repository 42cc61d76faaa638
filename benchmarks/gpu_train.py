"""LoRA training speed and memory on SD 1.5's UNet: lorakit vs diffusers + PEFT vs full fine-tuning.

``python -m benchmarks.gpu_train`` (a CUDA GPU: SD 1.5's UNet at 512x512, batch 8) or
``python -m benchmarks.gpu_train --config tiny`` (any machine: the same code on an SD-shaped
tiny UNet, which is what the tests run on the CPU). Lesson: notebooks/08_stable_diffusion_gpu.ipynb.

No hub is needed: the UNet is built from SD 1.5's real config (``lorakit.models.SD15_UNET_CONFIG``)
with random weights. Latents (B, 4, 64, 64) and text embeddings (B, 77, 768) are random tensors
made once, as cached ones would be. Every variant takes the same training step as
``lorakit.train``: noise, timesteps, epsilon MSE under ``torch.autocast`` (bf16), backward,
AdamW. Variants, each on a fresh UNet, in one run:

* ``lorakit``: ``inject.inject_lora(unet, r, target_modules="attn2")`` on a bf16 UNet, fp32 LoRA;
* ``peft``: the reference, ``unet.add_adapter(LoraConfig(...))`` on the same 64 module paths;
* ``full``: full fine-tuning (fp32 master weights, AdamW on all 860M parameters);
* with ``--extras``: lorakit with channels_last memory format, and lorakit with ``torch.compile``.

Reported per variant: median step time over ``--steps`` timed steps after ``--warmup``, samples/s,
peak memory (``torch.cuda.max_memory_allocated`` over the timed steps; on the CPU the bytes autograd
saves for backward, as ``benchmarks.lora_speed`` explains), ratios against PEFT, and model FLOP
utilisation: samples/s x FLOPs per sample / the card's measured bf16 matmul rate. FLOPs per sample
are counted with ``torch.utils.flop_counter`` on the ``meta`` device (forward + the backward to the
input, the part every variant must compute: 1.73 TFLOP for SD 1.5 at 512x512); full fine-tuning
also computes weight gradients, which that count leaves out.

Left out: the VAE and text encoder (cached outputs), data loading, gradient checkpointing (see
``lorakit.memory``), several GPUs.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from peft import LoraConfig

from benchmarks import _common
from benchmarks.lora_speed import saved_bytes, sync
from lorakit import inject, models
from lorakit.memory import flops_per_sample

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
    times, losses, saved = [], [], 0

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


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument(
        "--config",
        choices=sorted(CONFIGS),
        default=None,
        help="sd15 (default on CUDA) or tiny (default on the CPU)",
    )
    parser.add_argument("--device", default=None, help="cuda when present, else cpu")
    parser.add_argument(
        "--resolution", type=int, default=None, help="pixels (default 512 for sd15, 128 for tiny)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed steps first (compilation, allocator)"
    )
    parser.add_argument(
        "--dtype", choices=("bf16", "fp16"), default="bf16", help="autocast dtype on CUDA"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS + EXTRAS)}",
    )
    parser.add_argument("--extras", action="store_true", help="also run " + " and ".join(EXTRAS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if min(args.batch, args.rank, args.steps) < 1 or args.warmup < 0:
        parser.error("--batch, --rank and --steps must be >= 1, --warmup >= 0")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.config = args.config or ("sd15" if device.type == "cuda" else "tiny")
    variants = [v for v in args.variants.split(",") if v] + (list(EXTRAS) if args.extras else [])
    unknown = sorted(set(variants) - set(VARIANTS + EXTRAS))
    if unknown or "peft" not in variants:
        parser.error(
            f"--variants must include peft (the reference) and only {VARIANTS + EXTRAS}; got "
            f"{unknown}"
        )
    unet_config = CONFIGS[args.config]["unet"]
    resolution = args.resolution or CONFIGS[args.config]["resolution"]
    latent = resolution // 8

    flops = flops_per_sample(unet_config, latent)
    per_sample = flops["forward"] + flops["backward_input"]
    dtype = (
        torch.bfloat16
        if (device.type == "cuda" and args.dtype == "bf16")
        else (torch.float16 if device.type == "cuda" else torch.float32)
    )
    rate = matmul_rate(device, dtype, 8192 if device.type == "cuda" else 1024)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {name}; torch {torch.__version__}; measured {str(dtype)[6:]} matmul rate "
        f"{rate / 1e12:.1f} TFLOP/s"
    )
    print(
        f"UNet: {args.config} config at {resolution}x{resolution} ({latent}x{latent} latents), "
        f"batch {args.batch}, "
        f"rank {args.rank} on attn2; FLOPs per sample (forward + input-gradient backward): "
        f"{flops['forward'] / 1e12:.3f} + {flops['backward_input'] / 1e12:.3f} = "
        f"{per_sample / 1e12:.3f} TFLOP"
    )

    batches = make_batches(args, unet_config, device)
    results = {}
    for variant in variants:
        try:
            results[variant] = run_variant(variant, args, unet_config, batches, device)
        except Exception as err:  # e.g. compilation unsupported: report it, keep the other rows
            print(f"{variant}: failed: {type(err).__name__}: {err}")
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if "peft" not in results:
        raise SystemExit("the reference (peft) failed: no ratios to report")
    ref = results["peft"]
    memory_label = "peak GiB" if device.type == "cuda" else "saved GiB"
    print(
        f"\nmedian of {args.steps} steps after {args.warmup} warm-up; ratios against peft in this "
        "run"
    )
    print(
        f"{'variant':<24}{'trainable':>12}{'step ms':>10}{'samples/s':>11}{'vs peft':>9}"
        f"{memory_label:>11}{'vs peft':>9}{'MFU':>8}{'warm-up s':>11}"
    )
    for variant, r in results.items():
        sps = args.batch / r["step_s"]
        r.update(
            samples_per_s=sps,
            mfu=sps * per_sample / rate,
            speed_vs_peft=sps / (args.batch / ref["step_s"]),
            memory_vs_peft=r["peak_bytes"] / ref["peak_bytes"],
        )
        print(
            f"{variant:<24}{r['trainable']:>12,}{r['step_s'] * 1e3:>10.1f}{sps:>11.2f}"
            f"{r['speed_vs_peft']:>9.3f}"
            f"{r['peak_bytes'] / 2**30:>11.2f}{r['memory_vs_peft']:>9.3f}{r['mfu']:>8.1%}"
            f"{r['warmup_s']:>11.1f}"
        )
    if "lorakit" in results:
        print(
            f"first-step loss: lorakit {results['lorakit']['losses'][0]:.6f}, peft "
            f"{ref['losses'][0]:.6f} "
            f"(same weights and batch; LoRA B = 0 at the start, so they must agree)"
        )
    if "full" in results and "lorakit" in results:
        print(
            "full fine-tuning / lorakit step time: "
            f"{results['full']['step_s'] / results['lorakit']['step_s']:.2f}x, "
            f"memory {results['full']['peak_bytes'] / results['lorakit']['peak_bytes']:.2f}x"
        )
    summary = dict(
        device=name,
        torch=torch.__version__,
        config=args.config,
        resolution=resolution,
        batch=args.batch,
        rank=args.rank,
        matmul_tflops=rate / 1e12,
        flops_per_sample=flops,
        results={k: {kk: vv for kk, vv in v.items() if kk != "times"} for k, v in results.items()},
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
