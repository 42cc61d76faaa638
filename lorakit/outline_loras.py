"""The outline LoRAs: trained once per setting, loaded after ("load if present, otherwise train").

Introduced in notebooks/07_rank_alpha_lab.ipynb.

:func:`train_or_load` returns the outline LoRA (``styles.OUTLINE_DIR``, the small preset) of a
rank, an alpha and a number of steps: from a cache folder, from the committed LoRAs, or trained
now. The folder a LoRA lives in (:func:`lora_folder_name`) holds a hash of every training setting
and of the set's files, so a LoRA trained otherwise is never taken for this one. Lesson 07's sweep
(``LAB_RANKS`` at ``LAB_STEPS`` steps) is committed in ``data/loras/outline``, trained by
``python -m lorakit.styles --loras`` (:func:`train_lab_loras`); a test keeps it in step with the
preset. ``lorakit.styles`` gives these names too (``styles.train_or_load``).

Left out: LoRAs of other data sets (``lorakit train`` trains those), sharing the files
(``lorakit.formats``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from lorakit import config, imagefolder, inject, styles, train

__all__ = [
    "ADDED_LATER",
    "LAB_RANKS",
    "LAB_STEPS",
    "TRAINED_DIR",
    "folder_fingerprint",
    "lora_folder_name",
    "outline_config",
    "train_lab_loras",
    "train_or_load",
]

TRAINED_DIR = config.DATA_DIR / "loras" / "outline"  # committed LoRAs, as train_or_load names them
LAB_RANKS = (1, 2, 4, 8)  # lesson 07's rank sweep
LAB_STEPS = 300  # the small preset's steps
# Settings added to TrainConfig after the committed LoRAs were trained, at the values that train
# exactly as before: left out of the hash, so that a new option does not make every committed LoRA
# stale.
ADDED_LATER = {"method": "lora", "text_encoder": False, "weight_decay": 1e-2}


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-1 of every file's name and bytes in ``folder`` (not its subfolders): changes with any
    picture or caption."""
    digest = hashlib.sha1()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def outline_config(r: int, steps: int, alpha: float | None = None, **overrides):
    """``train.TrainConfig.for_mode("small")`` at ``r``, ``alpha`` and ``steps``, quiet: the outline
    set is the tiny SD's, and the small preset was measured on it, on any device."""
    settings = {"r": r, "alpha": alpha, "steps": steps, "progress": False, **overrides}
    return train.TrainConfig.for_mode("small", **settings)


def lora_folder_name(r: int, steps: int, alpha: float | None = None, **overrides) -> str:
    """The folder :func:`train_or_load` keeps a LoRA in: rank, alpha, steps and a hash.

    The hash is that of every training setting (:func:`outline_config` with ``overrides``) and of
    the set's files (:func:`folder_fingerprint`), so a LoRA trained with fewer steps (a ``make
    test`` run), other defaults or an earlier version of the set is never taken for this one.
    """
    cfg = outline_config(r, steps, alpha, **overrides)
    settings = {
        k: v
        for k, v in asdict(cfg).items()
        if k not in ("output_dir", "progress", "resume")
        and not (k in ADDED_LATER and ADDED_LATER[k] == v)
    }
    settings["data"] = folder_fingerprint(styles.OUTLINE_DIR)
    tag = hashlib.sha1(repr(sorted(settings.items())).encode()).hexdigest()[:8]
    return f"outline_r{r}_alpha{'r' if alpha is None else f'{alpha:g}'}_steps{steps}_{tag}"


def train_or_load(
    pipe,
    r: int,
    steps: int,
    cache_dir: str | os.PathLike,
    alpha: float | None = None,
    committed: bool = True,
    **overrides,
) -> Path:
    """The outline LoRA file of rank ``r`` trained for ``steps``: from disk if there, else trained.

    Looks for ``<folder>/lora.safetensors`` (kohya format; :func:`lora_folder_name`) in
    ``cache_dir``, then (with ``committed``) among the committed LoRAs (``TRAINED_DIR``); trains it
    into ``cache_dir`` otherwise. ``overrides`` go to ``train.TrainConfig.for_mode("small")``.
    ``pipe.unet`` is left without LoRA layers.
    """
    name = lora_folder_name(r, steps, alpha, **overrides)
    for base in (Path(cache_dir), TRAINED_DIR) if committed else (Path(cache_dir),):
        if (base / name / "lora.safetensors").is_file():
            return base / name / "lora.safetensors"
    if next(inject.lora_layers(pipe.unet), None) is not None:
        raise RuntimeError(
            "pipe.unet already has LoRA layers: call inject.remove_lora(pipe.unet) before "
            "training another LoRA with train_or_load."
        )
    out = str(Path(cache_dir) / name)
    cfg = outline_config(r, steps, alpha, **{**overrides, "output_dir": out})
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    dataset = imagefolder.ImageFolderDataset(styles.OUTLINE_DIR, resolution=resolution)
    try:
        train.train_lora(pipe, dataset, cfg)
    finally:
        inject.remove_lora(pipe.unet)
    return Path(cfg.output_dir) / "lora.safetensors"


def train_lab_loras(pipe, ranks=LAB_RANKS, steps: int = LAB_STEPS) -> list[Path]:
    """Train lesson 07's LoRAs and keep only their ``lora.safetensors`` in ``TRAINED_DIR`` (no
    checkpoint)."""
    made = []
    with tempfile.TemporaryDirectory() as scratch:
        for r in ranks:
            trained = train_or_load(pipe, r, steps, scratch)
            if trained.is_relative_to(TRAINED_DIR):
                made.append(trained)  # already committed with these settings
                continue
            target = TRAINED_DIR / trained.parent.name / "lora.safetensors"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trained, target)
            made.append(target)
    return made
