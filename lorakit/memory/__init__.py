"""How much memory (and arithmetic) a LoRA training run needs, known before it starts.

Introduced in notebooks/08_stable_diffusion_gpu.ipynb.

One file a question: ``estimation`` (:func:`estimate_memory`: weights, LoRA, gradients, AdamW's
moments and activations, in bytes), ``activations`` (what autograd saves for backward, measured on
the ``meta`` device), ``fit`` (:func:`check_fits`, the pre-flight check that refuses a run that
will not fit and names settings that would) and ``flops`` (:func:`flops_per_sample`, the
arithmetic of one picture's step). Import the package: ``from lorakit import memory;
memory.estimate_memory(cfg, "sd15")``.

Left out: the allocator's caching and fragmentation, the CUDA context, workspaces (``HEADROOM``
keeps a margin for them), and time measured on a real card (``benchmarks/gpu_train.py``).
"""

from lorakit.memory.activations import TEXT_TOKENS
from lorakit.memory.estimation import HALF, MemoryEstimate, estimate_memory, format_bytes
from lorakit.memory.fit import HEADROOM, WontFitError, check_fits, device_memory, suggestions
from lorakit.memory.flops import checkpointing_factor, flops_per_sample

__all__ = [
    "HALF",
    "HEADROOM",
    "TEXT_TOKENS",
    "MemoryEstimate",
    "WontFitError",
    "check_fits",
    "checkpointing_factor",
    "device_memory",
    "estimate_memory",
    "flops_per_sample",
    "format_bytes",
    "suggestions",
]
