"""Several processes training one LoRA: ``accelerate launch --multi_gpu --num_processes N``.

Introduced in notebooks/06_train_style_lora.ipynb.

One process per GPU (or CPU processes talking over gloo where no GPU is visible) trains the same
LoRA as one process, up to float rounding: each draws the same global batch from ``(seed, step)``
and takes its own contiguous slice of every micro-batch (:func:`process_rows`; ``batch_size``
stays the global batch), and the LoRA gradients and the loss are summed over the processes in one
all-reduce before clipping (:func:`all_reduce_grads`), as DDP would do, but for the few LoRA
tensors only (the frozen UNet needs no wrapper). Only the main process writes files, samples
images and shows the progress bar.

Left out: sharding the model or the optimizer over the processes (FSDP, DeepSpeed ZeRO): every
process holds the whole UNet.
"""

from __future__ import annotations

import torch

from lorakit.train import settings

__all__ = ["all_reduce_grads", "make_accelerator", "process_rows"]


def make_accelerator(cfg: settings.TrainConfig, device: torch.device):
    """A fresh ``accelerate.Accelerator`` for ``cfg``'s mixed precision and accumulation."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # accelerate keeps one global state per process; a notebook trains several times with
    # different settings.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=device.type == "cpu",
    )


def process_rows(batch_size: int, num_processes: int, index: int) -> slice:
    """The contiguous rows of a ``batch_size`` micro-batch that process ``index`` of
    ``num_processes`` trains on."""
    if batch_size < num_processes:
        raise ValueError(
            f"batch_size {batch_size} is smaller than the number of processes ({num_processes}): "
            f"every process needs at least one image per micro-batch; use batch_size >= "
            f"{num_processes}."
        )
    return slice(index * batch_size // num_processes, (index + 1) * batch_size // num_processes)


def all_reduce_grads(accelerator, params: list[torch.Tensor], step_loss: float) -> float:
    """Sum the LoRA gradients and this step's loss over all processes (one all-reduce of a flat
    buffer, as DDP).

    Each process's loss was already weighted by its share of the batch, so the sums are the
    gradient and the loss of the whole batch. Returns the summed loss; a no-op with one process.
    """
    if accelerator.num_processes == 1:
        return step_loss
    with_grad = [p for p in params if p.grad is not None]  # the same parameters in every process
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # (sum of numel,)
    loss = torch.tensor([step_loss], dtype=torch.float64, device=flat.device)  # (1,)
    flat, loss = accelerator.reduce([flat, loss], reduction="sum")
    for p, g in zip(with_grad, flat.split([p.numel() for p in with_grad]), strict=True):
        p.grad.copy_(g.view_as(p.grad))
    return loss.item()
