"""What a LoRA step can save on arithmetic, and what it saves on the tiny SD's CPU:
``python -m benchmarks.step_flops``.

A training step is a forward pass, the gradients of the activations (the backward pass through every
layer), and the gradients of the weights, which only a full fine-tune computes. The first table
counts each (``claims.step_flops``, a UNet built on the meta device: SD 1.5 at 512 pixels and the
tiny SD, nothing downloaded); full / (forward + activations) is the most a LoRA step can save. The
second table times, on the computer it runs on and the tiny SD (batch 8, the small preset), one
forward and backward pass three ways, taken in turn within each repeat, median of ``--repeats``:
frozen weights with the latents needing a gradient (a LoRA step with free LoRA layers: the cap), the
preset's LoRA (rank 8 on ``attn2+ff``, its dropout), and every weight trainable (a full fine-tune).
full / LoRA is what LoRA saves; LoRA - frozen is what its own small layers cost. ``--profile``
adds torch.profiler's time by operator for a LoRA pass and a full one: where the difference goes.

Left out: the optimizer's step (timed by ``benchmarks.train_step``), the GPU (``gpu_train``).
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks import _common
from lorakit import models


def flops_table() -> dict:
    from lorakit import claims

    rows = {
        "SD 1.5, 512 px, a sample": claims.step_flops(models.SD15_UNET_CONFIG),
        "tiny SD, 64 px, a batch of 8": claims.step_flops(models.TINY_UNET_CONFIG, batch=8),
    }
    print(f"{'':<30}{'forward':>10}{'activations':>13}{'weights':>10}{'full / LoRA at most':>22}")
    for name, f in rows.items():
        unit = 1e12 if f["forward"] > 1e11 else 1e9
        label = "TFLOP" if unit == 1e12 else "GFLOP"
        print(
            f"{name:<30}"
            + "".join(
                f"{f[k] / unit:>9.2f}{'':>1}"
                if k != "input_gradients"
                else f"{f[k] / unit:>12.2f} "
                for k in ("forward", "input_gradients", "weight_gradients")
            )
            + f"{f['full_over_lora']:>21.2f}x   ({label})"
        )
    return rows


def passes():
    """The three copies of the tiny SD's UNet (frozen, the preset's LoRA, every weight trainable)
    and ``one_pass(name)``: one forward and backward pass of a batch of 8 through one, its
    seconds."""
    import copy

    import torch

    from lorakit import inject, train

    torch.manual_seed(0)
    pipe = models.load_pipeline("tiny", dtype="float32")
    preset = train.TrainConfig.for_mode("small")
    unets = {name: copy.deepcopy(pipe.unet) for name in ("frozen", "LoRA", "full")}
    unets["frozen"].requires_grad_(False)
    inject.inject_lora(
        unets["LoRA"], r=preset.r, target_modules=preset.target_modules, dropout=preset.lora_dropout
    )  # wraps and freezes the base weights
    unet = unets["full"]
    side = unet.config.sample_size
    latents = torch.randn(preset.batch_size, unet.config.in_channels, side, side)
    text = torch.randn(preset.batch_size, 77, unet.config.cross_attention_dim)
    t = torch.randint(0, 1000, (preset.batch_size,))

    def one_pass(name: str) -> float:
        model = unets[name].train()
        x = latents.detach().requires_grad_(name == "frozen")  # frozen: the activations' pass
        start = time.perf_counter()
        model(x, t, encoder_hidden_states=text).sample.square().mean().backward()
        seconds = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        return seconds

    return unets, one_pass


def timed_passes(repeats: int, made=None) -> dict[str, list[float]]:
    """Each pass's seconds, the three kinds taken in turn within every repeat (three copies of the
    UNet), so that a change in the machine's load falls on all three alike (``made``: what
    :func:`passes` returned, or None to make them)."""
    unets, one_pass = made or passes()
    times = {name: [] for name in unets}
    for name in unets:
        one_pass(name)  # warm-up
    for _ in range(repeats):
        for name in unets:
            times[name].append(one_pass(name))
    return times


def profiled(count: int = 3, top: int = 12, made=None) -> dict[str, dict[str, float]]:
    """Where a LoRA pass and a full one spend their time: torch.profiler's self CPU time of each
    operator, milliseconds a pass (mean of ``count``), printed for the ``top`` operators."""
    from torch.profiler import ProfilerActivity, profile

    unets, one_pass = made or passes()
    spent = {}
    for name in ("LoRA", "full"):
        one_pass(name)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(count):
                one_pass(name)
        spent[name] = {e.key: e.self_cpu_time_total / 1000 / count for e in prof.key_averages()}
    ops = sorted(set(spent["LoRA"]) | set(spent["full"]), key=lambda k: -max(
        spent["LoRA"].get(k, 0.0), spent["full"].get(k, 0.0)))  # fmt: skip
    print(f"\nwhere a pass spends its time (torch.profiler, self CPU ms a pass, mean of {count}):")
    print(f"{'operator':<44}{'LoRA':>10}{'full':>10}")
    for op in ops[:top]:
        print(f"{op:<44}{spent['LoRA'].get(op, 0.0):>10.1f}{spent['full'].get(op, 0.0):>10.1f}")
    total = {name: sum(table.values()) for name, table in spent.items()}
    print(f"{'all operators':<44}{total['LoRA']:>10.1f}{total['full']:>10.1f}")
    return spent


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--profile", action="store_true", help="also profile a LoRA pass and a full one by operator"
    )
    args = parser.parse_args(argv)
    print("the arithmetic of one training step (a UNet on the meta device):")
    flops = flops_table()
    made = passes()
    times = timed_passes(args.repeats, made)
    med = {k: statistics.median(v) for k, v in times.items()}
    tiny = flops["tiny SD, 64 px, a batch of 8"]
    work = {
        "frozen": tiny["forward"] + tiny["input_gradients"],
        "LoRA": tiny["forward"] + tiny["input_gradients"],
        "full": tiny["forward"] + tiny["input_gradients"] + tiny["weight_gradients"],
    }
    print(
        f"\nforward and backward on the tiny SD, this CPU (median of {args.repeats}; load "
        f"{_common.load_average()}):"
    )
    print(f"{'':<36}{'ms':>8}{'GFLOP/s':>10}")
    for name, label in (
        ("frozen", "frozen weights (LoRA's floor)"),
        ("LoRA", "LoRA r 8 on attn2+ff"),
        ("full", "every weight trainable"),
    ):
        print(f"{label:<36}{med[name] * 1000:>8.1f}{work[name] / med[name] / 1e9:>10.1f}")
    print(
        f"full / LoRA {med['full'] / med['LoRA']:.2f}x (the arithmetic allows "
        f"{tiny['full_over_lora']:.2f}x; full / frozen {med['full'] / med['frozen']:.2f}x); "
        f"LoRA's own layers cost {(med['LoRA'] - med['frozen']) * 1000:.1f} ms a pass"
    )
    report = {"flops": flops, "median_seconds": med}
    if args.profile:
        report["profile_ms"] = profiled(made=made)
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
