"""Learning curves from checkpoints: claims 3 and 4 traced over training, not read at one point.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`learning_curve` trains LoRA (rank ``r`` on the small preset's modules) or a full fine-tune
and stops at each of its ``checkpoints``: ``lorakit.train`` writes a checkpoint there and goes on
from it bit for bit, so a curve is one run read at several points. At each point it judges the
style and content on the trigger prompts (learning), optionally the plain prompts still drawn right
(forgetting) and, for a small set, how much the pictures of its training captions copy it
(memorising); with the seconds its training steps took so far. ``split="validation"`` judges on
prompts and noise seeds the test leaves out (:func:`validation_prompts`): where learning rates are
chosen. :func:`first_reaching` reads when a curve reaches the style.

Left out: the studies that tune and compare (``python -m benchmarks.controls --study speed``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from contextlib import contextmanager

from torch import nn

from lorakit import styles
from lorakit.claims import harness, judging, overfitting

__all__ = [
    "VALIDATION_SEEDS",
    "first_reaching",
    "learning_curve",
    "unet_dropout",
    "validation_prompts",
]

VALIDATION_SEEDS = (4, 5, 6, 7)  # noise seeds for choosing; the judged figures use EVAL_SEEDS
VALIDATION_COMBOS = styles.OUTLINE_TRAIN[8:]  # shown by none of the first 8 pictures


def validation_prompts(size: int | None = None) -> list[str]:
    """Trigger prompts for choosing a learning rate: the trained combinations the first ``size``
    pictures do not show (the last three, for ``size`` up to 8); for larger sets, which show them
    all, the held-out prompts themselves (drawn at ``VALIDATION_SEEDS``, not the judged seeds)."""
    if size is not None and size <= 8:
        return [styles.style_caption("outline", c, s) for c, s in VALIDATION_COMBOS]
    return styles.style_prompts()


@contextmanager
def unet_dropout(unet: nn.Module, p: float | None):
    """Every ``nn.Dropout`` of the UNet (its ResNet blocks, attention outputs and feed-forward
    layers) at ``p`` while the block runs (None: as they are), then as they were."""
    layers = [m for m in unet.modules() if isinstance(m, nn.Dropout)]
    before = [m.p for m in layers]
    try:
        for m in layers:
            m.p = m.p if p is None else p
        yield
    finally:
        for m, old in zip(layers, before, strict=True):
            m.p = old


def _measure(pipe, split: str, size: int | None, forgetting: bool) -> dict:
    test = split == "test"
    seeds = judging.EVAL_SEEDS if test else VALIDATION_SEEDS
    found = judging.judge(pipe, styles.style_prompts() if test else validation_prompts(size), seeds)
    point = {"style_rate": found.style_rate, "content": found.both_accuracy}
    if forgetting:
        point |= judging.kept(pipe, seeds)
    if size is not None and size <= 8:
        images, _ = judging.draw(pipe, overfitting.training_captions(size), seeds)
        point["memorised"] = overfitting.memorisation(images, size)
    return point


def _settled(checkpoints: Sequence[int]) -> list[int]:
    steps = list(checkpoints)
    if not steps or steps[0] < 1 or steps != sorted(set(steps)):
        raise ValueError(
            f"checkpoints {steps} must be step counts from 1 up, each larger than the last."
        )
    return steps


def learning_curve(
    method: str = "lora",
    seed: int = 0,
    checkpoints: Sequence[int] = (50, 100, 150, 200),
    lr: float | None = None,
    r: int = 8,
    size: int | None = None,
    lora_dropout: float | None = None,
    unet_dropout_p: float | None = None,
    split: str = "test",
    forgetting: bool = True,
    stop_at: Sequence[float] | None = None,
    pipe=None,
) -> dict:
    """Train ``method`` ("lora" or "full") on the first ``size`` outline pictures (None: all),
    judging at each of ``checkpoints`` (``_measure``: style, content, plain prompts kept,
    memorisation); ``stop_at=(style, content)`` ends the run at the first point reaching both.
    ``lora_dropout`` and ``unet_dropout_p`` replace the preset's and the UNet's dropout."""
    if method not in ("lora", "full") or split not in ("test", "validation"):
        raise ValueError(f"method is 'lora' or 'full' ({method!r}); split 'test' or 'validation'.")
    steps = _settled(checkpoints)
    pipe = harness.load(pipe)
    overrides = {"seed": seed, "checkpoint_every": 0}
    overrides |= {"lr": lr} if lr else {}
    if method == "lora":
        overrides |= {"r": r} | ({} if lora_dropout is None else {"lora_dropout": lora_dropout})
    where, data = ("full" if method == "full" else "attn2+ff"), harness.style_set(size=size)
    curve, seconds = [], 0.0
    with harness.restored(pipe), unet_dropout(pipe.unet, unet_dropout_p):
        with tempfile.TemporaryDirectory() as out:
            for done in steps:
                fitted = harness.fit(pipe, data, where, steps=done, output_dir=out, **overrides)
                seconds += sum(fitted["step_seconds"])
                point = _measure(pipe, split, size, forgetting)
                curve.append({"steps": done, "train_seconds": seconds, **point})
                if stop_at and first_reaching(curve[-1:], *stop_at) is not None:
                    break
    return {
        "method": method,
        "seed": seed,
        "size": size,
        "split": split,
        "settings": fitted["settings"] | {"unet_dropout": unet_dropout_p},
        "trainable_params": fitted["trainable_params"],
        "curve": curve,
    }


def first_reaching(curve: Sequence[dict], style: float, content: float = 0.0) -> dict | None:
    """The first point of ``curve`` with a style rate of at least ``style`` and content of at
    least ``content`` (None: it never gets there)."""
    return next((p for p in curve if p["style_rate"] >= style and p["content"] >= content), None)
