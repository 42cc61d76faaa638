"""The settings of the tiny SD's pretraining: one dataclass, one command-line flag a field.

Not a lesson's concept: a maintainer's tool (``python -m lorakit.maintainer.pretrain``).

:class:`PretrainConfig` holds every setting of both stages (the VAE, then the UNet and the text
encoder), the experiments on top (``pair_fraction``, ``token_loss_weight``, ``decoder_steps``),
and where the run writes. ``lorakit.maintainer.pretrain`` turns each field into a ``--flag`` of
the same name, with the field's default; docs/tiny-sd.md gives the settings of the three runs
that made ``data/models/tiny-sd``.

Left out: validation of the settings (a maintainer's tool, run by people who read its code).
"""

from __future__ import annotations

from dataclasses import dataclass

from lorakit import config

__all__ = ["PretrainConfig"]


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; the defaults are those of the base model's run."""

    out: str = str(config.TINY_SD_DIR)
    work_dir: str = "runs/pretrain"
    seed: int = 0
    num_images: int = 30_000  # pictures rendered, encoded and cached once
    vae_steps: int = 3_000
    vae_batch_size: int = 128
    vae_lr: float = 1e-3
    steps: int = 6_000
    batch_size: int = 256
    lr: float = 5e-4
    warmup_steps: int = 300
    ema_decay: float = 0.9995
    empty_caption_prob: float = 0.1
    checkpoint_every: int = 500
    # >0: stop after this many steps of the `steps`-long schedule (same weights as a run cut there)
    stop_at: int = 0
    # >0: a time limit; the UNet stage stops and saves there (resume from the checkpoint)
    max_seconds: float = 0.0
    device: str = ""  # "" picks CUDA when present (config.get_device)
    pair_fraction: float = (
        0.0  # share of pictures with two shapes, "a red circle and a blue square"
    )
    # a saved tiny SD to continue from: its VAE is kept, the UNet and text encoder go on
    init_from: str = ""
    token_loss_weight: float = 0.0  # >0: add TokenCompose's token loss on the attn2 maps
    decoder_steps: int = 0  # >0: then fine-tune the VAE's decoder alone on filled and outlines
