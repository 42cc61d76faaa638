"""How much memory a LoRA training run needs on its device, estimated before it starts.

Introduced in notebooks/08_stable_diffusion_gpu.ipynb.

:func:`estimate_memory` adds up what ``train.train_lora`` keeps on the device in its loop: the
frozen UNet's **weights** in their own dtype (the VAE and the text encoder are only needed to
cache the data set, before the loop: ``MemoryEstimate.not_in_loop`` says how many bytes they
are); the **LoRA** parameters, their gradients and AdamW's two moments, all float32 (16 bytes a
parameter); and the **activations** autograd keeps for backward (``memory.activations``, measured
at batch 1 and multiplied: they grow linearly with the batch).

Left out: the allocator's caching and fragmentation, the CUDA context, cuBLAS/cuDNN workspaces,
the cached latents and text embeddings (kilobytes to a few MB), and float32 weights run under
autocast (which saves half-precision copies; lorakit loads half-precision weights on a GPU).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import torch

from lorakit import config, inject, models
from lorakit.memory import activations

__all__ = ["HALF", "MemoryEstimate", "describe_model", "estimate_memory", "format_bytes"]

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class MemoryEstimate:
    """Bytes a training run holds on its device, by part; ``total`` is their sum."""

    weights: int  # the frozen UNet
    lora_params: int  # float32
    lora_grads: int  # float32
    optimizer: int  # AdamW's exp_avg and exp_avg_sq, float32
    activations: int  # saved for backward, at this batch, resolution and checkpointing
    lora_count: int  # LoRA parameters (numbers, not bytes)
    settings: dict = field(default_factory=dict)  # what was estimated: model, batch, ...
    not_in_loop: int = 0  # VAE + text encoder bytes, needed only to cache the data set (0: unknown)

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
            f"{s.get('dtype')}, checkpointing "
            f"{'on' if s.get('gradient_checkpointing') else 'off'}, "
            f"r={s.get('r')} ({self.lora_count:,} LoRA parameters)"
        )
        lines = [head] + [f"  {name:<24}{format_bytes(n):>12}" for name, n in self.rows()]
        if self.not_in_loop:
            lines.append(
                f"  (VAE + text encoder, {format_bytes(self.not_in_loop)}, are only needed to "
                "cache the dataset: not counted)"
            )
        return "\n".join(lines)

    __str__ = table


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: binary units, as ``nvidia-smi`` and PyTorch report memory."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


@functools.lru_cache(maxsize=64)
def _parameter_counts(unet_config_json: str, r: int, targets_json: str) -> tuple[int, int]:
    """(UNet parameters, LoRA parameters), from a UNet built on the meta device."""
    with torch.device("meta"):
        unet = models.UNet2DConditionModel.from_config(json.loads(unet_config_json))
    return models.count_parameters(unet), inject.lora_parameter_count(
        unet, r, json.loads(targets_json)
    )


def _named_model(model: str) -> tuple:
    """:func:`describe_model` of a name: the real configs of ``"tiny"`` or ``"sd15"``."""
    key = "sd15" if model in ("sd15", config.SD15_HUB_ID) else model
    known = {
        "tiny": ("tiny SD", models.TINY_UNET_CONFIG, models.TINY_VAE_CONFIG),
        "sd15": ("SD 1.5", models.SD15_UNET_CONFIG, models.SD15_VAE_CONFIG),
    }
    if key not in known:
        raise ValueError(
            f"unknown model {model!r}: give 'tiny', 'sd15' (or {config.SD15_HUB_ID!r}), "
            "a StableDiffusionPipeline or a UNet2DConditionModel."
        )
    name, unet_config, vae_config = known[key]
    factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    return dict(unet_config), name, factor, None, None, 0


def describe_model(
    model,
) -> tuple[dict, str, int, torch.dtype | None, torch.nn.Module | None, int]:
    """(UNet config, name, VAE scale factor, weight dtype or None, the UNet object or None,
    VAE+text bytes) of a model name, a pipeline or a UNet."""
    if isinstance(model, str):
        return _named_model(model)
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


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _check_precision_and_batch(cfg) -> None:
    if cfg.mixed_precision not in ("no", *HALF):
        raise ValueError(
            f"mixed_precision must be 'no', 'fp16' or 'bf16', got {cfg.mixed_precision!r}."
        )
    if not isinstance(cfg.batch_size, int) or cfg.batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {cfg.batch_size!r}.")


def _checked_resolution(cfg, unet_config: dict, factor: int) -> int:
    """The run's resolution, refused where it is not a whole number of latent pixels."""
    resolution = cfg.resolution or unet_config["sample_size"] * factor
    if resolution <= 0 or resolution % factor:
        raise ValueError(
            f"resolution {resolution} is not a whole number of latent pixels: use a positive "
            f"multiple of {factor} (the VAE's scale factor), e.g. "
            f"{max(1, resolution // factor) * factor}."
        )
    return resolution


def _frozen_bytes(unet) -> int:
    """The bytes of a UNet's own weights, without any LoRA already in it."""
    return sum(
        p.numel() * p.element_size() for n, p in unet.named_parameters() if ".lora_" not in n
    )


def estimate_memory(config, model="tiny", vae_scale_factor: int | None = None) -> MemoryEstimate:
    """Bytes a ``train.train_lora`` run with ``config`` (a ``TrainConfig``) needs on its device.

    ``model``: ``"tiny"``, ``"sd15"`` (SD 1.5's real configs), a ``StableDiffusionPipeline`` or a
    ``UNet2DConditionModel`` (its weights are counted in their own dtype; by name, in half
    precision when ``config.mixed_precision`` is ``"fp16"``/``"bf16"``, as
    ``models.load_pipeline`` loads them on a GPU, else float32). ``vae_scale_factor`` (pixels per
    latent) defaults to the pipeline's, or 8 (SD's) for a bare UNet.
    """
    cfg = config  # (the parameter hides the lorakit.config module, as in train.train_lora)
    _check_precision_and_batch(cfg)
    unet_config, name, factor, weight_dtype, unet, others = describe_model(model)
    factor = vae_scale_factor or factor
    resolution = _checked_resolution(cfg, unet_config, factor)
    weight_dtype = weight_dtype or HALF.get(cfg.mixed_precision, torch.float32)
    dtype = str(HALF.get(cfg.mixed_precision, weight_dtype)).removeprefix("torch.")
    targets = cfg.target_modules
    targets = targets if isinstance(targets, str) else list(targets)
    config_json = json.dumps(_jsonable(unet_config), sort_keys=True)
    targets_json = json.dumps(targets)
    unet_count, lora_count = _parameter_counts(config_json, cfg.r, targets_json)
    weights = _frozen_bytes(unet) if unet is not None else unet_count * weight_dtype.itemsize
    checkpointing = bool(cfg.gradient_checkpointing)
    latent = resolution // factor
    per_image = activations.activations_per_image(
        config_json, latent, dtype, cfg.r, targets_json, checkpointing, float(cfg.lora_dropout)
    )
    settings = dict(
        model=name,
        batch_size=cfg.batch_size,
        resolution=resolution,
        r=cfg.r,
        dtype=dtype,
        mixed_precision=cfg.mixed_precision,
        gradient_checkpointing=checkpointing,
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
