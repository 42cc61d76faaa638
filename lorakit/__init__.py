"""lorakit: the package behind the LoRA-for-Stable-Diffusion course.

Import modules, not names, so the reader knows which file to open::

    from lorakit import config, lowrank, lora

Each module's docstring names the lesson that introduces it.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # lorakit.estimate_memory, imported on first use: `import lorakit` stays light (no torch, no diffusers).
    if name == "estimate_memory":
        from lorakit.memory import estimate_memory

        return estimate_memory
    raise AttributeError(f"module 'lorakit' has no attribute {name!r}")
