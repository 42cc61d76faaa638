"""How much memory (and arithmetic) a LoRA training run needs, estimated before it starts.

Introduced in notebooks/08_stable_diffusion_gpu.ipynb.

:func:`estimate_memory` adds up what ``train.train_lora`` keeps on the device during its loop:

* **weights**: the frozen UNet, in its own dtype (parameters x bytes each). The VAE and the text
  encoder are not needed in the loop: ``train.cache_dataset`` encodes every latent and caption
  once, before it, so they can be moved off the device (a pipeline that keeps them there
  needs their bytes too: ``MemoryEstimate.not_in_loop`` says how many).
* **LoRA**: the parameters, their gradients and AdamW's two moments, all float32: 16 bytes per
  LoRA parameter (``inject.lora_parameter_count``).
* **activations**: what autograd keeps for backward. *Measured, not guessed*: the UNet is built
  again from its config on the ``meta`` device (shapes only, no memory, no arithmetic), given the
  same LoRA, and run forward at the real batch, resolution and dtype under
  ``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor saved for backward; each
  distinct storage that is not a parameter is counted once. On the meta device PyTorch would take
  the *math* attention path (which saves the whole N x N attention matrix); the fused kernels that
  SDPA uses on a GPU, and on the CPU, save only q, k, v, the output and a float32 log-sum-exp, so
  the estimate runs attention through a stand-in that saves exactly those.
  With gradient checkpointing, diffusers re-runs each ResNet and transformer block during
  backward instead of keeping its insides. The estimate finds those blocks by handing the UNet a
  recording ``gradient_checkpointing_func``, and counts what non-reentrant checkpointing keeps:
  the tensors saved outside the blocks, every block's inputs, and the insides of the largest
  block (re-computed, one at a time, during backward).

Activations grow linearly with the batch (a test checks it), so they are measured at batch 1
and multiplied; the measurement is cached per model config, resolution, dtype and LoRA.

:func:`check_fits` is the pre-flight check: it raises :class:`WontFitError` when the estimate
exceeds the device's memory, naming settings that would fit (gradient checkpointing, half
precision, a smaller batch with gradient accumulation, a lower resolution), each found by
estimating it again, not by a rule of thumb.

:func:`flops_per_sample` counts the arithmetic of one picture's step, also on the ``meta`` device
(``torch.utils.flop_counter``): the forward and the backward to the UNet's input, which is what a
LoRA step runs (the frozen weights get no gradient). Gradient checkpointing adds one more forward
(:func:`checkpointing_factor`).

Left out: the allocator's caching and fragmentation, the CUDA context (a few hundred MB that
``torch.cuda.max_memory_allocated`` does not see either; :func:`check_fits` keeps
``HEADROOM`` of the card free for them), cuBLAS/cuDNN workspaces, transient buffers of the
backward pass (gradients of activations, freed as it goes), the cached latents and text
embeddings (kilobytes to a few MB), and float32 weights run under autocast (which saves
half-precision copies of the weights; lorakit loads half-precision weights on a GPU instead).
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from lorakit import config, inject, models

config_module = (
    config  # (check_fits's parameter ``config`` hides the module, as in train.train_lora)
)

# check_fits keeps 20% of the device free: CUDA context, allocator cache, workspaces, and what the
# estimate leaves out (on an H100 it measured 7-14% below the real peak: benchmarks/RESULTS.md).
HEADROOM = 0.8
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
TEXT_TOKENS = 77  # CLIP's context length: the text embeddings the UNet attends to


@dataclass
class MemoryEstimate:
    """Bytes a training run holds on its device, by part; ``total`` is their sum."""

    weights: int  # the frozen UNet
    lora_params: int  # float32
    lora_grads: int  # float32
    optimizer: int  # AdamW's exp_avg and exp_avg_sq, float32
    activations: int  # saved for backward, at this batch, resolution and checkpointing
    lora_count: int  # LoRA parameters (numbers, not bytes)
    settings: dict = field(
        default_factory=dict
    )  # what was estimated: model, batch, resolution, ...
    not_in_loop: int = (
        0  # VAE + text encoder bytes, needed only to cache the dataset (0 if unknown)
    )

    @property
    def total(self) -> int:
        return self.weights + self.lora_params + self.lora_grads + self.optimizer + self.activations

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("UNet weights (frozen)", self.weights),
            ("LoRA parameters (fp32)", self.lora_params),
            ("LoRA gradients (fp32)", self.lora_grads),
            ("AdamW moments (fp32)", self.optimizer),
            ("activations", self.activations),
            ("total", self.total),
        ]

    def table(self) -> str:
        s = self.settings
        head = (
            f"{s.get('model', '?')}: batch {s.get('batch_size')}, {s.get('resolution')}px, "
            f"{s.get('dtype')}, checkpointing {'on' if s.get('gradient_checkpointing') else 'off'}, "
            f"r={s.get('r')} ({self.lora_count:,} LoRA parameters)"
        )
        lines = [head] + [f"  {name:<24}{format_bytes(n):>12}" for name, n in self.rows()]
        if self.not_in_loop:
            lines.append(
                f"  (VAE + text encoder, {format_bytes(self.not_in_loop)}, are only needed to cache the "
                "dataset: not counted)"
            )
        return "\n".join(lines)

    __str__ = table


class WontFitError(MemoryError):
    """A run that would run out of memory; ``suggestions`` are settings (TrainConfig fields) that fit."""

    def __init__(
        self, message: str, estimate: MemoryEstimate, budget: int, suggestions: list[dict]
    ):
        super().__init__(message)
        self.estimate, self.budget, self.suggestions = estimate, budget, suggestions


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: binary units, as ``nvidia-smi`` and PyTorch report memory."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


class _FusedAttention(torch.autograd.Function):
    """Stands in for SDPA on the meta device, saving what the fused kernels save for backward."""

    @staticmethod
    def forward(ctx, q, k, v):  # (B, H, N, d), (B, H, M, d), (B, H, M, d)
        out = torch.empty_like(q)  # (B, H, N, d)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)  # (B, H, N) log-sum-exp per query
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _fused_sdpa(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs
):
    return _FusedAttention.apply(query, key, value)


def _saved_bytes(unet, latents, timesteps, context, checkpointing: bool) -> int:
    """Bytes autograd keeps from one forward + loss of ``unet`` (on the meta device)."""
    frozen = {t.untyped_storage()._cdata for t in [*unet.parameters(), *unet.buffers()]}
    outside: dict[int, int] = {}  # storage -> bytes, saved outside any checkpointed block
    inputs: dict[int, int] = {}  # storage -> bytes, inputs of checkpointed blocks
    blocks: list[dict[int, int]] = []  # per checkpointed block: what it saves inside
    stack: list[dict[int, int]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in frozen:
            (stack[-1] if stack else outside)[storage._cdata] = storage.nbytes()
        return t

    def record_block(block, *args):  # diffusers calls this where it would checkpoint ``block``
        for a in args:
            if isinstance(a, torch.Tensor) and a.untyped_storage()._cdata not in frozen:
                inputs[a.untyped_storage()._cdata] = a.untyped_storage().nbytes()
        stack.append({})
        try:
            return block(*args)
        finally:
            blocks.append(stack.pop())

    unet.enable_gradient_checkpointing(gradient_checkpointing_func=record_block)
    unet.train()
    real_sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = (
        _fused_sdpa  # diffusers' AttnProcessor2_0 looks it up at call time
    )
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            pred = unet(latents.to(unet.dtype), timesteps, context.to(unet.dtype)).sample.float()
            F.mse_loss(pred, torch.empty_like(pred))  # (its saved tensors count too)
    finally:
        F.scaled_dot_product_attention = real_sdpa
    every_block = {k: v for block in blocks for k, v in block.items()}
    if not checkpointing:
        return sum(
            {**outside, **every_block}.values()
        )  # (block inputs count only where autograd saved them)
    kept = {**outside, **inputs}
    largest = max(
        (sum(v for k, v in block.items() if k not in kept) for block in blocks), default=0
    )
    return sum(kept.values()) + largest


@functools.lru_cache(maxsize=64)
def _parameter_counts(unet_config_json: str, r: int, targets_json: str) -> tuple[int, int]:
    """(UNet parameters, LoRA parameters), from a UNet built on the meta device."""
    with torch.device("meta"):
        unet = models.UNet2DConditionModel.from_config(json.loads(unet_config_json))
    return models.count_parameters(unet), inject.lora_parameter_count(
        unet, r, json.loads(targets_json)
    )


@functools.lru_cache(maxsize=64)
def _activations_per_image(
    unet_config_json: str,
    latent_side: int,
    dtype_name: str,
    r: int,
    targets_json: str,
    checkpointing: bool,
    dropout: float = 0.0,
) -> int:
    unet_config = json.loads(unet_config_json)
    dtype = getattr(torch, dtype_name)
    with torch.device("meta"):
        unet = models.UNet2DConditionModel.from_config(unet_config)
        torch.nn.Module.to(
            unet, dtype
        )  # (diffusers' own .to warns about casting; nothing to keep in float32 here)
        unet.requires_grad_(False)
        inject.inject_lora(unet, r=r, target_modules=json.loads(targets_json), dropout=dropout)
        unet.train()  # LoRA dropout saves its mask and dropped input in training mode only
        side, width = latent_side, unet.config.cross_attention_dim
        latents = torch.empty(
            1, unet.config.in_channels, side, side
        )  # (1, 4, h, w) float32, as cached
        context = torch.empty(1, TEXT_TOKENS, width)  # (1, 77, D)
        timesteps = torch.zeros(1, dtype=torch.long)
    return _saved_bytes(unet, latents, timesteps, context, checkpointing)


def _describe(model) -> tuple[dict, str, int, torch.dtype | None, torch.nn.Module | None, int]:
    """(UNet config, name, VAE scale factor, weight dtype or None, the UNet object or None, VAE+text bytes)."""
    if isinstance(model, str):
        key = "sd15" if model in ("sd15", config.SD15_HUB_ID) else model
        if key == "tiny":
            return (
                dict(models.TINY_UNET_CONFIG),
                "tiny SD",
                2 ** (len(models.TINY_VAE_CONFIG["block_out_channels"]) - 1),
                None,
                None,
                0,
            )
        if key == "sd15":
            return (
                dict(models.SD15_UNET_CONFIG),
                "SD 1.5",
                2 ** (len(models.SD15_VAE_CONFIG["block_out_channels"]) - 1),
                None,
                None,
                0,
            )
        raise ValueError(
            f"unknown model {model!r}: give 'tiny', 'sd15' (or {config.SD15_HUB_ID!r}), "
            "a StableDiffusionPipeline or a UNet2DConditionModel."
        )
    unet, factor, others = model, 8, 0
    if hasattr(model, "unet") and hasattr(model, "vae_scale_factor"):  # a pipeline
        unet, factor = model.unet, model.vae_scale_factor
        others = sum(
            _param_bytes(getattr(model, part))
            for part in ("vae", "text_encoder")
            if getattr(model, part, None) is not None
        )
    if not isinstance(unet, torch.nn.Module) or not hasattr(unet, "config"):
        raise TypeError(
            f"model must be 'tiny', 'sd15', a pipeline or a UNet, got a {type(model).__name__}."
        )
    return dict(unet.config), type(unet).__name__, factor, unet.dtype, unet, others


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def estimate_memory(config, model="tiny", vae_scale_factor: int | None = None) -> MemoryEstimate:
    """Bytes a ``train.train_lora`` run with ``config`` (a ``TrainConfig``) needs on its device.

    ``model``: ``"tiny"``, ``"sd15"`` (SD 1.5's real configs), a ``StableDiffusionPipeline`` or a
    ``UNet2DConditionModel`` (its weights are counted in their own dtype; by name, in half precision
    when ``config.mixed_precision`` is ``"fp16"``/``"bf16"``, as ``models.load_pipeline`` loads them
    on a GPU, else float32). ``vae_scale_factor`` (pixels per latent) defaults to the pipeline's,
    or 8 (SD's) for a bare UNet.
    """
    cfg = config  # (the parameter hides the lorakit.config module, as in train.train_lora)
    if cfg.mixed_precision not in ("no", *HALF):
        raise ValueError(
            f"mixed_precision must be 'no', 'fp16' or 'bf16', got {cfg.mixed_precision!r}."
        )
    if not isinstance(cfg.batch_size, int) or cfg.batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {cfg.batch_size!r}.")
    unet_config, name, factor, weight_dtype, unet, others = _describe(model)
    factor = vae_scale_factor or factor
    resolution = cfg.resolution or unet_config["sample_size"] * factor
    if resolution <= 0 or resolution % factor:
        raise ValueError(
            f"resolution {resolution} is not a whole number of latent pixels: use a positive "
            f"multiple of {factor} (the VAE's scale factor), e.g. {max(1, resolution // factor) * factor}."
        )
    weight_dtype = weight_dtype or HALF.get(cfg.mixed_precision, torch.float32)
    compute_dtype = HALF.get(cfg.mixed_precision, weight_dtype)
    targets = (
        cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    )
    config_json, targets_json = (
        json.dumps(_jsonable(unet_config), sort_keys=True),
        json.dumps(targets),
    )
    unet_count, lora_count = _parameter_counts(config_json, cfg.r, targets_json)
    if unet is not None:  # its real weights, without any LoRA already in it
        weights = sum(
            p.numel() * p.element_size() for n, p in unet.named_parameters() if ".lora_" not in n
        )
    else:
        weights = unet_count * weight_dtype.itemsize
    per_image = _activations_per_image(
        config_json,
        resolution // factor,
        str(compute_dtype).removeprefix("torch."),
        cfg.r,
        targets_json,
        bool(cfg.gradient_checkpointing),
        float(cfg.lora_dropout),
    )
    settings = dict(
        model=name,
        batch_size=cfg.batch_size,
        resolution=resolution,
        r=cfg.r,
        dtype=str(compute_dtype).removeprefix("torch."),
        mixed_precision=cfg.mixed_precision,
        gradient_checkpointing=bool(cfg.gradient_checkpointing),
        target_modules=targets,
    )
    return MemoryEstimate(
        weights=weights,
        lora_params=4 * lora_count,
        lora_grads=4 * lora_count,
        optimizer=8 * lora_count,
        activations=per_image * cfg.batch_size,
        lora_count=lora_count,
        settings=settings,
        not_in_loop=others,
    )


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def device_memory(device: str | torch.device | None = None) -> int | None:
    """Total memory of ``device`` in bytes: the GPU's, or the machine's RAM for the CPU (None if unknown)."""
    device = config_module.get_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None


def suggestions(
    cfg, model, budget: int, limit: int = 3, half: str = "bf16"
) -> list[tuple[dict, MemoryEstimate]]:
    """Up to ``limit`` changes of ``cfg`` (dicts of TrainConfig fields) whose estimate fits in ``budget``.

    Tried in order of what they cost the result: checkpointing (time only), half precision
    (``half``: "bf16", or "fp16" on GPUs without bfloat16), a smaller batch with gradient
    accumulation (the same images per step), then a lower resolution.
    """
    trials: list[dict] = []
    if not cfg.gradient_checkpointing:
        trials.append(dict(gradient_checkpointing=True))
    if cfg.mixed_precision == "no":
        trials += [
            dict(mixed_precision=half),
            dict(mixed_precision=half, gradient_checkpointing=True),
        ]
    batch = cfg.batch_size
    while batch > 1:
        batch //= 2
        accum = cfg.grad_accum * math.ceil(cfg.batch_size / batch)
        trials += [
            dict(batch_size=batch, grad_accum=accum),
            dict(batch_size=batch, grad_accum=accum, gradient_checkpointing=True),
        ]
    unet_config, _, factor, *_ = _describe(model)
    step = factor * 2 ** (len(unet_config["block_out_channels"]) - 1)
    resolution = cfg.resolution or unet_config["sample_size"] * factor
    for smaller in (resolution * 3 // 4, resolution // 2):
        smaller -= smaller % step
        if smaller >= step:
            trials.append(dict(resolution=smaller, gradient_checkpointing=True))
    found, seen = [], set()
    for change in trials:
        change = {k: v for k, v in change.items() if getattr(cfg, k) != v}
        key = tuple(sorted(change.items()))
        if not change or key in seen:
            continue
        seen.add(key)
        estimate = estimate_memory(replace(cfg, **change), model)
        if estimate.total <= budget:
            found.append((change, estimate))
            if len(found) == limit:
                break
    return found


def check_fits(
    config, model, device: str | torch.device | None = None, budget_bytes: int | None = None
) -> MemoryEstimate:
    """The estimate of ``config`` on ``model``; raises :class:`WontFitError` if it would not fit.

    The budget is ``budget_bytes`` if given, else ``HEADROOM`` of the total memory of ``device``
    (default: the model's own device; see ``device_memory``; no check where it is unknown).
    The error names settings that fit.
    """
    cfg = config
    estimate = estimate_memory(cfg, model)
    device = config_module.get_device(
        device if device is not None else getattr(model, "device", None)
    )
    if budget_bytes is None:
        total = device_memory(device)
        if total is None:
            return estimate
        budget_bytes = int(total * HEADROOM)
        where = f"{_device_name(device)} ({format_bytes(total)}, {HEADROOM:.0%} of it usable)"
    else:
        where = f"the budget of {format_bytes(budget_bytes)}"
    if estimate.total <= budget_bytes:
        return estimate
    half = "fp16" if config_module.get_dtype(device) == torch.float16 else "bf16"
    fits = suggestions(cfg, model, budget_bytes, half=half)
    parts = ", ".join(f"{name} {format_bytes(n)}" for name, n in estimate.rows()[:-1])
    message = f"this run needs about {format_bytes(estimate.total)} ({parts}), more than {where}. "
    if fits:
        message += (
            "Settings that would fit: "
            + "; ".join(
                f"{', '.join(f'{k}={v!r}' for k, v in change.items())} (about {format_bytes(e.total)})"
                for change, e in fits
            )
            + "."
        )
    else:
        message += (
            "No smaller batch, checkpointing, precision or resolution fits: use a GPU with more "
            "memory, or a smaller model."
        )
    raise WontFitError(message, estimate, budget_bytes, [change for change, _ in fits])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@functools.lru_cache(maxsize=8)
def _flops(config_json: str, latent: int, tokens: int) -> tuple[float, float]:
    unet_config = json.loads(config_json)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config).requires_grad_(False)
        x = torch.randn(
            1, unet_config["in_channels"], latent, latent, requires_grad=True
        )  # (1, 4, h, w)
        ctx = torch.randn(1, tokens, unet_config["cross_attention_dim"])  # (1, 77, D)
        t = torch.tensor([500])
    with FlopCounterMode(display=False) as forward:
        out = unet(x, t, ctx).sample
    with FlopCounterMode(display=False) as backward:
        out.sum().backward()
    return float(forward.get_total_flops()), float(backward.get_total_flops())


def flops_per_sample(unet_config: dict, latent: int, tokens: int = TEXT_TOKENS) -> dict[str, float]:
    """Forward and input-gradient backward FLOPs of one picture through the UNet, counted on the ``meta`` device.

    ``latent`` is the latent side (64 for SD 1.5 at 512x512). A LoRA step runs both: the frozen
    weights need no gradient, the activations (and so the LoRA, which sits among them) do.
    """
    forward, backward = _flops(json.dumps(unet_config, sort_keys=True), latent, tokens)
    return {"forward": forward, "backward_input": backward}


def checkpointing_factor(flops: dict[str, float]) -> float:
    """How much more arithmetic a step costs with gradient checkpointing: the forward runs twice."""
    step = flops["forward"] + flops["backward_input"]
    return (step + flops["forward"]) / step
