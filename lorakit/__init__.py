"""lorakit: the package behind the LoRA-for-Stable-Diffusion course.

Import modules, not names, so the reader knows which file to open::

    from lorakit import config, lowrank, lora

Each module's docstring names the lesson that introduces it.
"""

__version__ = "0.1.0"
