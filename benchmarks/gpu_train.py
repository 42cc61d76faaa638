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

import torch

from benchmarks import _common
from benchmarks.gpu_variants import (
    CONFIGS,
    EXTRAS,
    VARIANTS,
    make_batches,
    matmul_rate,
    run_variant,
)
from lorakit.memory import flops_per_sample

__all__ = ["flops_per_sample", "main"]


def options(parser) -> None:
    """The command line's options."""
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


def run_all(variants: list[str], args, unet_config: dict, batches: list, device) -> dict:
    """Each variant's timed steps; a variant that fails (compilation unsupported, say) is reported
    and left out, the others kept."""
    results = {}
    for variant in variants:
        try:
            results[variant] = run_variant(variant, args, unet_config, batches, device)
        except Exception as err:  # e.g. compilation unsupported: report it, keep the other rows
            print(f"{variant}: failed: {type(err).__name__}: {err}")
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def print_table(results: dict, args, per_sample: float, rate: float, device) -> None:
    """The table: each variant's step time, samples/s, memory and MFU, with ratios against PEFT
    (added to ``results``); then the first-step losses and full fine-tuning against lorakit."""
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


def describe(args, device, flops: dict, resolution: int) -> tuple[float, str]:
    """The device, its measured matmul rate (FLOP/s, returned with the device's name) and the
    UNet's arithmetic a sample, printed above the table."""
    latent = resolution // 8
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
    return rate, name


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    options(parser)
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
    rate, name = describe(args, device, flops, resolution)

    batches = make_batches(args, unet_config, device)
    results = run_all(variants, args, unet_config, batches, device)
    if "peft" not in results:
        raise SystemExit("the reference (peft) failed: no ratios to report")
    print_table(results, args, per_sample, rate, device)
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
