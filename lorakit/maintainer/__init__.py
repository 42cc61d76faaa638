"""Tools for the course's maintainers, not concepts of a lesson.

Not a lesson's concept: how the tiny Stable Diffusion in ``data/models/tiny-sd`` was made
(``python -m lorakit.maintainer.pretrain``; docs/tiny-sd.md tells the runs). Students use the
committed model and never need to run it. ``pretrain`` is the command and the function;
``pretrain_config`` its settings; ``shape_stream`` the pictures and captions; ``vae_stage`` and
``unet_stage`` the two stages; ``grounding`` the token-loss experiment.

Left out: anything a lesson needs (it lives in ``lorakit`` itself).
"""

__all__: list[str] = []
