"""Claims 2 and 3, a small file and less time and compute: LoRA against a full fine-tune.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`size_and_speed` trains the small preset's LoRA, or a full fine-tune of the UNet, for a few
steps and measures what each costs: trainable parameters, the file it saves, AdamW's state
(:func:`optimizer_bytes`, read from the run's checkpoint by :func:`saved_sizes`) and the median
step time. :func:`step_flops` counts a step's arithmetic on a UNet built on the meta device (no
weights, no download): the forward, the gradients of the activations, and those of the weights,
which only a full fine-tune computes; their ratio caps what LoRA can save.

Left out: the process's peak memory and the steps each needs to a style rate (the benchmark's,
``python -m benchmarks.claims --claim 2``, each run in its own process).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from lorakit import inject, models, train
from lorakit.claims import harness

__all__ = ["count_step", "optimizer_bytes", "saved_sizes", "size_and_speed", "step_flops"]


def optimizer_bytes(optimizer_state: dict) -> int:
    """Bytes of AdamW's moments in an optimizer ``state_dict()["state"]`` (the step counters left
    out)."""
    return sum(
        t.numel() * t.element_size()
        for s in optimizer_state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )


def size_and_speed(
    method: str = "lora", seed: int = 0, steps: int = 20, pipe=None, output_dir=None
) -> dict:
    """Claims 2 and 3 in small: train ``method`` ("lora": the small preset; "full") for ``steps``
    and measure its trainable parameters, the file it saves, AdamW's state and the median step
    time."""
    if method not in ("lora", "full"):
        raise ValueError(f"method is 'lora' or 'full', not {method!r}.")
    pipe = harness.load(pipe)
    with harness.restored(pipe), tempfile.TemporaryDirectory() as scratch:
        out = Path(output_dir or scratch)
        cfg = harness.config(method=method, seed=seed, steps=steps, output_dir=str(out))
        result = train.train_lora(pipe, harness.style_set(), cfg)
        return {
            "method": method,
            "seed": seed,
            "lr": cfg.lr,
            "settings": harness.settings_of(cfg, "full" if method == "full" else None),
            **saved_sizes(pipe, method, out),
            "step_seconds_median": float(np.median(result.step_seconds)),
        }


def saved_sizes(pipe, method: str, output_dir) -> dict:
    """What a finished run of ``method`` ("lora" or "full") left in ``output_dir``: its trainable
    parameters, the size of the file it saved (the LoRA, or the whole UNet) and of AdamW's state
    in its last checkpoint."""
    out = Path(output_dir)
    if method == "full":
        params = list(pipe.unet.parameters())
    else:
        params = harness.lora_weights(pipe.unet)
    saved = out / (train.FULL_FILE if method == "full" else "lora.safetensors")
    # our own checkpoint
    state = torch.load(out / train.CHECKPOINT, weights_only=True)["optimizer"]["state"]
    return {
        "trainable_params": sum(p.numel() for p in params),
        "file_bytes": saved.stat().st_size,
        "optimizer_bytes": optimizer_bytes(state),
    }


def _flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def count_step(module: torch.nn.Module, run) -> dict:
    """The floating-point operations of ``run()`` (a forward pass of ``module`` whose input needs a
    gradient) and of its backward pass, split: ``forward``, ``input_gradients`` (with ``module``'s
    weights frozen) and ``weight_gradients`` (what training them adds); ``full_over_lora``, the
    ratio of all three to the first two. An approximation on one point: with frozen weights, the
    gradients of what only weights feed (cross-attention's K and V of the text) are not needed, so
    they count as the weights'; a LoRA on ``to_k`` and ``to_v`` needs them (on SD 1.5, under 0.5 %
    of a step). ``module`` trains as it did before."""
    with inject.keep_requires_grad(module):
        forward = _flops_of(run)
        module.requires_grad_(False)  # frozen weights: the activations' gradients alone
        out = run()
        input_gradients = _flops_of(lambda: out.sum().backward())
        module.requires_grad_(True)
        out = run()
        both = _flops_of(lambda: out.sum().backward())
    flops = {
        "forward": forward,
        "input_gradients": input_gradients,
        "weight_gradients": both - input_gradients,
    }
    flops["full_over_lora"] = sum(flops.values()) / (forward + input_gradients)
    return flops


def step_flops(unet_config: dict, batch: int = 1, tokens: int = 77) -> dict:
    """:func:`count_step` of one training step of a UNet built from ``unet_config`` on the meta
    device (no weights, no download), for ``batch`` latents of its ``sample_size`` (SD 1.5: 64,
    512 pixels) and ``tokens`` text tokens. A LoRA step needs the forward and the activations'
    gradients (its own small matrices aside); a full fine-tune adds the weights' gradients."""
    with torch.device("meta"):
        unet = models.UNet2DConditionModel.from_config(unet_config)
        side = unet.config.sample_size
        latents = torch.empty(batch, unet.config.in_channels, side, side, requires_grad=True)
        text = torch.empty(batch, tokens, unet.config.cross_attention_dim)
        t = torch.full((batch,), 500)
    return count_step(unet, lambda: unet(latents, t, encoder_hidden_states=text).sample)
