"""Claim 5, many kinds of models: one ``inject_lora`` on CLIP's text encoder and on a classifier.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`text_encoder_lora` puts LoRA in CLIP's text encoder (attention and MLP, as kohya's
text-encoder LoRA), the UNet untouched, to teach "a red vex" = a red triangle, with the text
encoder in the loop (``claims.text_side``); its figures are claim 1's concept task.
:func:`classifier_study` adapts a toy text classifier (``claims.text_classifier``) to a shifted task
three ways: LoRA on its linear layers, a full fine-tune, and its head alone.

Left out: LoRA on convolutional layers, models other than these two.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from lorakit import inject, shapes, styles, targets
from lorakit.claims import harness, judging, text_classifier, text_side, where

__all__ = ["TEXT_TARGETS", "adapted_classifier", "classifier_study", "text_encoder_lora"]

TEXT_TARGETS = targets.TEXT_ENCODER  # CLIP's attention and MLP, as kohya trains them


def text_encoder_lora(
    seed: int = 0,
    steps: int = 300,
    r: int = 8,
    lr: float = 1e-3,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """Claim 5 (a): the same ``inject_lora`` on CLIP's text encoder (attention and MLP, as kohya's
    text-encoder LoRA), the UNet untouched, to teach "a red vex" = a red triangle. Figures as
    claim 1's concept task."""
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        pipe.unet.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject.inject_lora(pipe.text_encoder, r=r, target_modules=list(TEXT_TARGETS))
        groups = [{"params": harness.lora_weights(pipe.text_encoder), "lr": lr}]
        start = time.perf_counter()
        dataset = harness.pairs_set(styles.concept_examples())
        history = text_side.train_text_side(pipe, dataset, groups, steps, seed)
        seconds = time.perf_counter() - start
        images, asked = judging.draw(pipe, where.concept_prompts(), seeds)
        # as claim 1 reads it
        rates = judging.read_all(images, asked, shape=styles.CONCEPT_SHAPE, every=False)
        return {
            "where": "text encoder",
            "seed": seed,
            "steps": steps,
            "trainable_params": harness.count_lora_weights(pipe.text_encoder),
            "settings": {  # text_side's loop: no dropout of either kind, no weight decay
                "method": "lora",
                "r": r,
                "alpha": r,
                "scaling": 1.0,
                "lr": lr,
                "steps": steps,
                "targets": list(TEXT_TARGETS),
                "lora_dropout": 0.0,
                "caption_dropout": 0.0,
                "weight_decay": 0.0,
                "seed": seed,
            },
            "concept_shape": rates["shape"],
            "concept_colour": rates["colour"],
            **judging.kept(pipe, seeds),
            "final_loss": float(np.mean(history[-20:])),
            "train_seconds": seconds,
        }


def adapted_classifier(
    state: dict, words: list[str], how: str, r: int, steps: int, lr: float, seed: int
):
    """The classifier of ``state`` adapted to the "corners" task: ``how`` is "lora" (rank ``r`` on
    its linear layers), "full" or "head only"; its accuracies and trained parameters."""
    model = text_classifier.TextClassifier(words, len(shapes.SHAPES))
    model.load_state_dict(state)
    if how == "lora":
        torch.manual_seed(seed)
        inject.inject_lora(model, r=r, target_modules=["body.0", "body.2", "head"])
    elif how == "head only":
        model.requires_grad_(False)
        model.head.requires_grad_(True)
    text_classifier.fit_classifier(model, "corners", steps, lr, seed + 1)
    return {
        "names": text_classifier.accuracy(model, "names"),
        "corners": text_classifier.accuracy(model, "corners"),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def classifier_study(seed: int = 0, r: int = 2, steps: int = 150, lr: float = 1e-2) -> dict:
    """Claim 5 (b): a text classifier trained on the "names" task, then adapted to the shifted
    "corners" task three ways: LoRA of rank ``r`` on its linear layers (``inject.inject_lora``, the
    UNet's code), a full fine-tune, and the head alone. Accuracy on both tasks (held-out
    sentences) and the trained parameters."""
    said = {
        w
        for task in ("names", "corners")
        for s in text_classifier.sentences(task, 400, 0)[0]
        for w in s.split()
    }
    words = sorted(
        said
        | set(text_classifier.FILLERS)
        | set(text_classifier.CORNERS.values())
        | set(shapes.SHAPES)
        | set(shapes.COLOURS)
    )
    torch.manual_seed(seed)
    base = text_classifier.TextClassifier(words, len(shapes.SHAPES))
    text_classifier.fit_classifier(base, "names", steps, lr, seed)
    result = {
        "seed": seed,
        "r": r,
        "base": {
            "names": text_classifier.accuracy(base, "names"),
            "corners": text_classifier.accuracy(base, "corners"),
            "trainable_params": sum(p.numel() for p in base.parameters()),
        },
    }
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for how in ("lora", "full", "head only"):
        result[how] = adapted_classifier(state, words, how, r, steps, lr, seed)
    return result
