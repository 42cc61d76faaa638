"""Is ``lorakit.memory.estimate_memory`` right? ``python -m benchmarks.memory_table``.

For several training settings of the tiny SD (batch, gradient checkpointing on/off, rank), the
table puts the estimate next to a measured peak of one real training step: the step of
``lorakit.train`` (epsilon MSE on random latents, timesteps, noise and text embeddings, backward,
gradient clipping, AdamW on the LoRA parameters only, the first step, which also creates AdamW's
moments). Both sides count the UNet's parameters (frozen and LoRA) plus the growth of memory
during the step; the ratio column is estimate / measured.

How the peak is measured:

* **CUDA** (``--device cuda``): ``torch.cuda.max_memory_allocated`` during the step minus
  ``torch.cuda.memory_allocated`` just before it, plus the parameters' bytes.
* **CPU**: PyTorch's own allocator events. ``torch.profiler`` with ``profile_memory=True`` records
  every CPU allocation and free made by an operator (``self_cpu_memory_usage``); summed in time
  order they give the bytes live at each moment, and their maximum is the peak growth, the CPU's
  counterpart of ``max_memory_allocated``. (tracemalloc does not see torch's allocations, and the
  RSS of a process that holds a model hardly moves.) It is independent of the estimate, which
  never runs the real model: it counts saved tensors on the meta device.

Memory is the same from run to run; the step time is the median of ``--repeats`` runs (a
rough figure on a shared machine: the load average is printed).

Left out: SD 1.5 on the CPU (minutes a step; ``--model sd15`` is for a GPU) and the VAE and text
encoder (the loop never runs them: latents and text embeddings are cached before it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch.profiler import ProfilerActivity, profile

from benchmarks import _common
from lorakit import inject, memory, models, train

# (batch, checkpointing, rank): what the table tries by default.
SETTINGS = (
    (1, False, 4),
    (4, False, 4),
    (8, False, 4),
    (8, True, 4),
    (8, False, 32),
    (16, False, 4),
    (16, True, 4),
)


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def cpu_peak_growth(fn) -> int:
    """Bytes by which the CPU allocations live during ``fn()`` rise above those live before it, at
    most."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = sorted(
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


def measure_step(
    unet: torch.nn.Module, scheduler, cfg: train.TrainConfig, latent_side: int, device: torch.device
) -> tuple[int, float]:
    """(measured peak bytes, seconds) of the first training step of a fresh rank-``cfg.r`` LoRA on
    ``unet``.

    ``unet`` is left as it was (the LoRA is removed again).
    """
    torch.manual_seed(cfg.seed)
    inject.inject_lora(unet, r=cfg.r, target_modules=cfg.target_modules, dropout=cfg.lora_dropout)
    params = inject.lora_weights(unet)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    b, width = cfg.batch_size, unet.config.cross_attention_dim
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(b, unet.config.in_channels, latent_side, latent_side, generator=gen).to(
        device
    )
    noise = torch.randn(latents.shape, generator=gen).to(device)  # (B, 4, h, w)
    context = torch.randn(b, memory.TEXT_TOKENS, width, generator=gen).to(device)  # (B, 77, D)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen).to(
        device
    )  # (B,)
    half = memory.HALF.get(cfg.mixed_precision)

    def step():
        with torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None):
            loss = train.epsilon_loss(
                unet, scheduler, latents, context, t, noise, cfg.min_snr_gamma
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    try:
        start = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            step()
            torch.cuda.synchronize(device)
            growth = torch.cuda.max_memory_allocated(device) - before
        else:
            growth = cpu_peak_growth(step)
        seconds = time.perf_counter() - start
        return _param_bytes(unet) + growth, seconds
    finally:
        unet.eval()
        if cfg.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
        inject.remove_lora(unet)


def build_unet(
    model: str, device: torch.device, dtype: torch.dtype
) -> tuple[UNet2DConditionModel, int]:
    """(frozen UNet, VAE scale factor): the committed tiny SD, or SD 1.5's UNet with random
    weights."""
    if model == "tiny":
        pipe = models.load_pipeline("tiny", device=device, dtype=dtype)
        return pipe.unet.requires_grad_(False), pipe.vae_scale_factor
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**models.SD15_UNET_CONFIG).to(dtype)
    return unet.requires_grad_(False), 8


def options(parser) -> None:
    """The command line's options."""
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--model",
        default="tiny",
        choices=("tiny", "sd15"),
        help="tiny (default) or sd15 (SD 1.5's UNet, random weights: for a GPU)",
    )
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument(
        "--settings",
        default=None,
        help="batch:checkpointing:rank,... e.g. 1:0:4,8:1:4 (default: a built-in list)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting (median time)")


def settings_of(text: str | None) -> list[tuple[int, bool, int]]:
    """``--settings`` as (batch, checkpointing, rank) triples; the built-in list when not given."""
    if text is None:
        return list(SETTINGS)
    return [(int(b), bool(int(c)), int(r)) for b, c, r in (s.split(":") for s in text.split(","))]


def one_row(unet, scheduler, args, setting: tuple, resolution: int, factor: int, device) -> dict:
    """One setting: the estimate, the median measured peak and step time of ``--repeats`` steps,
    printed as a row of the table."""
    batch, ckpt, rank = setting
    cfg = train.TrainConfig(
        r=rank,
        batch_size=batch,
        gradient_checkpointing=ckpt,
        resolution=resolution,
        mixed_precision=args.mixed_precision,
        progress=False,
    )
    estimate = memory.estimate_memory(cfg, unet, vae_scale_factor=factor)
    runs = [
        measure_step(unet, scheduler, replace(cfg), resolution // factor, device)
        for _ in range(args.repeats)
    ]
    measured = int(statistics.median(peak for peak, _ in runs))
    seconds = statistics.median(s for _, s in runs)
    print(
        f"{batch:>5} {'on' if ckpt else 'off':>5} {rank:>3} "
        f"{memory.format_bytes(estimate.activations):>12} "
        f"{memory.format_bytes(estimate.total):>10} {memory.format_bytes(measured):>10} "
        f"{estimate.total / measured:6.2f} {seconds:7.2f}"
    )
    return dict(
        batch=batch,
        checkpointing=ckpt,
        r=rank,
        estimate=estimate.total,
        measured=measured,
        activations=estimate.activations,
        ratio=estimate.total / measured,
        seconds=seconds,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__)
    options(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    try:
        settings = settings_of(args.settings)
    except ValueError:
        parser.error(
            f"--settings {args.settings!r}: give batch:checkpointing:rank triples, e.g. "
            "8:1:4,16:0:4"
        )
    device = torch.device(args.device)
    dtype = (
        memory.HALF.get(args.mixed_precision, torch.float32)
        if device.type == "cuda"
        else torch.float32
    )
    unet, factor = build_unet(args.model, device, dtype)
    scheduler = DDPMScheduler.from_config(models.tiny_scheduler().config)
    resolution = unet.config.sample_size * factor
    how = (
        "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "torch.profiler CPU allocations"
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{args.model} UNet at {resolution}px on {name}, weights "
        f"{str(dtype).removeprefix('torch.')}, "
        f"mixed precision {args.mixed_precision}; measured = parameters + peak growth of one step "
        f"({how}); "
        f"load average {_common.load_average()}"
    )
    print(
        f"{'batch':>5} {'ckpt':>5} {'r':>3} {'activations':>12} {'estimate':>10} {'measured':>10} "
        f"{'ratio':>6} "
        f"{'step s':>7}"
    )
    rows = [one_row(unet, scheduler, args, s, resolution, factor, device) for s in settings]
    print(
        f"ratio = estimate / measured; step time: median of {args.repeats} (the first step, with "
        "the "
        f"profiler on for the CPU: not a speed figure); load average {_common.load_average()}"
    )
    return dict(device=name, rows=rows)


if __name__ == "__main__":
    main()
