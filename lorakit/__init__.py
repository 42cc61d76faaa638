"""lorakit: the package behind the LoRA-for-Stable-Diffusion course.

Introduced in notebooks/01_low_rank_intuition.ipynb, the first lesson that imports it.

Import modules, not names, so the reader knows which file to open::

    from lorakit import config, lowrank, lora

Each module's docstring names the lesson that introduces it. ``import lorakit`` alone stays light
(no torch, no diffusers); ``lorakit.estimate_memory`` is imported on first use.

Left out: re-exporting the modules' names here; each lives in its module.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "estimate_memory"]


def __getattr__(name: str):
    # lorakit.estimate_memory, imported on first use: `import lorakit` stays light.
    if name == "estimate_memory":
        from lorakit.memory import estimate_memory

        return estimate_memory
    raise AttributeError(f"module 'lorakit' has no attribute {name!r}")
