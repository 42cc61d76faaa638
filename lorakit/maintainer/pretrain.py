"""Pretraining the tiny SD on the shapes world: ``python -m lorakit.maintainer.pretrain``.

Not a lesson's concept: a maintainer's tool. It made the weights committed in
``data/models/tiny-sd`` that every lesson from 03 on loads (docs/tiny-sd.md tells the three runs
and their commands). A student never needs to run it; a teacher may, to see that the model is
reproducible. Two stages, both seeded and resumable from the last checkpoint in ``--work-dir``:
the VAE (``vae_stage``; its ``scaling_factor`` is then measured so latents have unit variance),
then the UNet and the text encoder on the cached latents (``unet_stage``). ``--init-from DIR``
continues from a saved tiny SD (its VAE and latent scale are kept) and ``--pair-fraction F`` mixes
in pictures of two shapes, an experiment on whether word-by-word attention maps (Lesson 04) can be
taught (``grounding``). Every setting is a field of ``PretrainConfig`` and a ``--flag``.

Left out: perceptual/GAN losses for the VAE (the shapes world needs none), offset noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lorakit import config, models
from lorakit.maintainer import grounding, shape_stream, unet_stage, vae_stage
from lorakit.maintainer.grounding import grounding_table, render_masks, token_loss
from lorakit.maintainer.pretrain_config import PretrainConfig
from lorakit.maintainer.shape_stream import caption_table, is_pair, render_all, specs_of
from lorakit.maintainer.unet_stage import train_unet
from lorakit.maintainer.vae_stage import encode_all, train_vae, tune_decoder

__all__ = [
    "PretrainConfig",
    "caption_table",
    "encode_all",
    "grounding_table",
    "is_pair",
    "pretrain",
    "render_all",
    "render_masks",
    "run_from_command_line",
    "specs_of",
    "token_loss",
    "train_unet",
    "train_vae",
    "tune_decoder",
]

PARTS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")


def _first_stage(cfg: PretrainConfig, images: torch.Tensor, device, work: Path) -> tuple:
    """``(parts, latents, scaling)``: the pipeline's parts, every picture's latent (unscaled) and
    the latent scale, of a saved tiny SD (``init_from``) or of a VAE trained here."""
    if cfg.init_from:  # continue from a saved tiny SD: keep its tokenizer, VAE and latent scale
        pipe = models.load_pipeline(cfg.init_from, device="cpu", dtype="float32")
        parts = {k: getattr(pipe, k) for k in PARTS}
        latents = vae_stage.encode_all(parts["vae"], images, device)
        return parts, latents, parts["vae"].config.scaling_factor
    parts = models.build_tiny_sd(cfg.seed)
    vae_stage.train_vae(parts["vae"], images, cfg, device, work)
    latents = vae_stage.encode_all(parts["vae"], images, device)
    scaling = 1.0 / latents.std().item()
    parts["vae"].register_to_config(scaling_factor=scaling)
    return parts, latents, scaling


def _portable_paths(settings: dict) -> dict:
    """The settings with their folders relative to the repository (or as ``<elsewhere>/name``):
    no machine's paths in the log."""
    portable = dict(settings)
    for key in ("out", "work_dir", "init_from"):
        if portable.get(key):
            path = Path(portable[key]).resolve()
            try:
                portable[key] = str(path.relative_to(config.REPO_ROOT))
            except ValueError:
                portable[key] = f"<elsewhere>/{path.name}"
    return portable


def _log(cfg: PretrainConfig, scaling: float, device, result: dict, decoder_history, started):
    """What ``pretrain_log.json`` says of the run (and of the run it continued, if any)."""
    log = {
        "config": _portable_paths(asdict(cfg)),
        "vae_scaling_factor": scaling,
        "device": str(device),
        "steps_done": result["steps_done"],
        "torch": torch.__version__,
        "seconds": round(time.time() - started, 1),
        "loss_every_10_steps": [round(v, 5) for v in result["history"]],
    }
    if decoder_history:
        log["decoder_loss_every_10_steps"] = [round(v, 5) for v in decoder_history]
    earlier = Path(cfg.init_from) / "pretrain_log.json" if cfg.init_from else None
    if earlier is not None and earlier.exists():  # the run continued, without its loss curve
        log["continued_from"] = {
            k: v for k, v in json.loads(earlier.read_text()).items() if k != "loss_every_10_steps"
        }
    return log


def pretrain(cfg: PretrainConfig) -> Path:
    """Run both stages and save the pipeline (UNet and VAE in float16, text encoder in float32)
    to ``cfg.out``."""
    work, out = Path(cfg.work_dir), Path(cfg.out)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # before CUDA: the pool forks
    images = shape_stream.render_all(cfg.num_images, cfg.seed, pair_fraction=cfg.pair_fraction)
    device = config.get_device(cfg.device or None)
    torch.manual_seed(cfg.seed)
    parts, latents, scaling = _first_stage(cfg, images, device, work)
    ids, rows = shape_stream.caption_table(
        cfg.num_images, cfg.seed, parts["tokenizer"], cfg.pair_fraction
    )
    masks = positions = None
    if cfg.token_loss_weight > 0:
        masks = grounding.render_masks(
            cfg.num_images, cfg.seed, cfg.pair_fraction, latent=latents.shape[-1]
        )
        positions = grounding.grounding_table(cfg.num_images, cfg.seed, cfg.pair_fraction)
    result = unet_stage.train_unet(
        parts, latents * scaling, ids, rows, cfg, device, work, masks, positions
    )
    tuned = cfg.decoder_steps > 0
    decoder_history = vae_stage.tune_decoder(parts["vae"], images, cfg, device) if tuned else []
    parts["unet"].half()
    parts["vae"].half()
    tmp = out.with_name(out.name + ".tmp")
    models.make_pipeline(parts).save_pretrained(tmp, safe_serialization=True)
    log = _log(cfg, scaling, device, result, decoder_history, started)
    (tmp / "pretrain_log.json").write_text(json.dumps(log, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    print(f"saved the tiny SD to {out} in {log['seconds']} s")
    return out


def run_from_command_line(argv: list[str] | None = None) -> None:
    """``python -m lorakit.maintainer.pretrain --flag value ...``: one flag a ``PretrainConfig``
    field, with its default."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for field, default in asdict(PretrainConfig()).items():
        kind = type(default)
        parser.add_argument("--" + field.replace("_", "-"), type=kind, default=default)
    pretrain(PretrainConfig(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    run_from_command_line()
