"""Claim 6, combining with other methods: two LoRAs at once, and LoRA with textual inversion.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`two_loras` trains two style LoRAs apart, then uses them together: applied at once with
their scales (one LoRA of rank r1 + r2, :func:`combined_state`) and merged into the UNet's weights.
:func:`inversion_and_lora` teaches "a red plim" = a red cross, a shape the tiny SD never saw, by
textual inversion (one row of the token embedding table), a UNet LoRA, or both trained together
(``claims.text_side``, the text encoder in the loop).

Left out: merging LoRA files of other ranks and formats (lesson 11's ``svd_tools.merge``),
DreamBooth.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from lorakit import inject, styles
from lorakit.claims import harness, judging, text_side, where

__all__ = [
    "INVERSION_WORD",
    "alone_at",
    "combined_state",
    "inversion_and_lora",
    "one_lora_each",
    "trainable_groups",
    "two_loras",
    "two_loras_at_scales",
]

INVERSION_WORD = "plim"  # the reserved word textual inversion gives a meaning to


def combined_state(first: dict, second: dict, scales: tuple[float, float] = (1.0, 1.0)) -> dict:
    """One LoRA state (``inject.lora_state_dict`` keys) that adds ``scales[0]`` x the first LoRA's
    update and ``scales[1]`` x the second's: A stacked, B side by side and scaled, rank r1 + r2
    (both with alpha = r)."""
    out = {}
    for key in first:
        if key.endswith("lora_A.weight"):
            out[key] = torch.cat([first[key], second[key]])  # (r1 + r2, in)
        else:  # (out, r1 + r2)
            out[key] = torch.cat([scales[0] * first[key], scales[1] * second[key]], dim=1)
    return out


def one_lora_each(pipe, pair: tuple[str, str], seed: int, steps: int, seeds: Sequence[int]):
    """Each style's LoRA (the small preset) trained alone: ``(states, rates)``, its LoRA state and
    both styles' rates under it ("outline alone": {...})."""
    states, rates = {}, {}
    for style in pair:
        with harness.restored(pipe):
            harness.fit(pipe, harness.style_set(style), seed=seed, steps=steps)
            states[style] = {k: v.clone() for k, v in inject.lora_state_dict(pipe.unet).items()}
            rates[f"{style} alone"] = judging.style_rates(pipe, pair, seeds)
    return states, rates


def two_loras(
    seed: int = 0,
    steps: int = 300,
    scales: tuple[float, float] = (1.0, 1.0),
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
    pair: tuple[str, str] = ("outline", "striped"),
) -> dict:
    """Claim 6 (a): two style LoRAs trained apart, then used at once: applied together with their
    scales (one rank r1 + r2 LoRA, :func:`combined_state`), and merged into the UNet's weights.
    Each style's rate under its own trigger, alone and together, and the largest pixel difference
    of applied against merged."""
    pipe = harness.load(pipe)
    result = {
        "seed": seed,
        "steps": steps,
        "scales": list(scales),
        "settings": harness.settings_of(harness.config(seed=seed, steps=steps)),  # each LoRA's
        "vae_ceiling": {style: judging.vae_ceiling(style, pipe)["style_rate"] for style in pair},
    }
    with harness.restored(pipe):
        states, rates = one_lora_each(pipe, pair, seed, steps, seeds)
        result |= rates
        r, targets = harness.config().r, harness.config().target_modules
        inject.inject_lora(pipe.unet, r=2 * r, alpha=2 * r, target_modules=targets)
        both = combined_state(states[pair[0]], states[pair[1]], scales)
        inject.load_lora_state_dict(pipe.unet, both)
        result["together"] = judging.style_rates(pipe, pair, seeds)
        result["together"] |= judging.kept(pipe, seeds)
        prompts = styles.style_prompts(style=pair[0])[:2]
        applied, _ = judging.draw(pipe, prompts, seeds[:2])
        # W0 + the sum of both updates, in the weights themselves: no LoRA path runs
        inject.merge_lora(pipe.unet)
        merged, _ = judging.draw(pipe, prompts, seeds[:2])
        result["merged_vs_applied_max_pixel"] = int(
            max(
                np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()
                for a, b in zip(applied, merged, strict=True)
            )
        )
    return result


def alone_at(pipe, states: dict, pair: tuple[str, str], scale: float, seeds) -> dict:
    """Each LoRA of ``pair`` alone at ``scale`` (the other's half of the rank r1 + r2 LoRA
    zeroed; ``pipe``'s UNet carries it): its own style's rate, and their mean."""
    rates = {}
    for i, style in enumerate(pair):
        inject.load_lora_state_dict(
            pipe.unet,
            combined_state(states[pair[0]], states[pair[1]], (scale * (i == 0), scale * (i == 1))),
        )
        rates[style] = judging.style_rates(pipe, [style], seeds)[style]["style"]
    return rates | {"mean": float(np.mean([rates[style] for style in pair]))}


def two_loras_at_scales(
    seed: int = 0,
    steps: int = 300,
    scales: Sequence[float] = (0.5, 0.7, 1.0),
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
    pair: tuple[str, str] = ("outline", "striped"),
) -> dict:
    """Claim 6 at the scales people use: the two style LoRAs trained apart once, then applied
    together with both at each scale in ``scales``. Each style's rate alone (at 1, and at each
    scale: :func:`alone_at`) and together, their mean, content under the triggers, and the plain
    prompts kept."""
    pipe = harness.load(pipe)
    settings = harness.settings_of(harness.config(seed=seed, steps=steps))  # each LoRA's
    result = {"seed": seed, "steps": steps, "scales": list(scales), "settings": settings}
    result["together"], result["alone_at"] = {}, {}
    with harness.restored(pipe):
        states, rates = one_lora_each(pipe, pair, seed, steps, seeds)
        result["alone"] = {style: rates[f"{style} alone"][style]["style"] for style in pair}
        result["alone_mean"] = float(np.mean(list(result["alone"].values())))
        r, targets = harness.config().r, harness.config().target_modules
        inject.inject_lora(pipe.unet, r=2 * r, alpha=2 * r, target_modules=targets)
        for scale in scales:
            result["alone_at"][str(scale)] = alone_at(pipe, states, pair, scale, seeds)
            inject.load_lora_state_dict(
                pipe.unet, combined_state(states[pair[0]], states[pair[1]], (scale, scale))
            )
            found = judging.style_rates(pipe, pair, seeds)
            result["together"][str(scale)] = {
                **{style: found[style]["style"] for style in pair},
                "mean": float(np.mean([found[style]["style"] for style in pair])),
                "content": float(np.mean([found[style]["content"] for style in pair])),
                **judging.kept(pipe, seeds),
            }
    return result


def trainable_groups(pipe, method: str, seed: int, lr_embedding: float):
    """What claim 6 (b) trains, everything else frozen: ``(groups, grad_mask)`` for
    :func:`text_side.train_text_side`. "lora": the small preset's LoRA in the UNet; "inversion":
    the token embedding table, masked to ``INVERSION_WORD``'s row; "both": the two."""
    pipe.unet.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    groups, grad_mask = [], None
    if method in ("lora", "both"):
        cfg = harness.config(seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject.inject_lora(pipe.unet, r=cfg.r, target_modules=cfg.target_modules)
        groups.append({"params": harness.lora_weights(pipe.unet), "lr": cfg.lr})
    if method in ("inversion", "both"):
        table = pipe.text_encoder.get_input_embeddings().weight
        table.requires_grad_(True)
        row = pipe.tokenizer.convert_tokens_to_ids(INVERSION_WORD + "</w>")
        mask = torch.zeros_like(table)
        mask[row] = 1.0
        groups.append({"params": [table], "lr": lr_embedding})
        grad_mask = {table: mask}
    return groups, grad_mask


def inversion_and_lora(
    method: str = "both",
    seed: int = 0,
    steps: int = 300,
    lr_embedding: float = 5e-3,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """Claim 6 (b): teach "a red plim" = a red cross (a shape the tiny SD never saw) by textual
    inversion (the word's token embedding alone), a UNet LoRA (the small preset) or both trained
    together. How often "a <colour> plim" draws a cross, and of its colour."""
    if method not in ("inversion", "lora", "both"):
        raise ValueError(f"method is 'inversion', 'lora' or 'both', not {method!r}.")
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        groups, grad_mask = trainable_groups(pipe, method, seed, lr_embedding)
        pairs = styles.concept_examples(
            INVERSION_WORD, "cross", styles.CROSS_SIZE, styles.CROSS_SEED
        )
        start = time.perf_counter()
        history = text_side.train_text_side(
            pipe, harness.pairs_set(pairs), groups, steps, seed, grad_mask=grad_mask
        )
        seconds = time.perf_counter() - start
        images, asked = judging.draw(pipe, where.concept_prompts(INVERSION_WORD), seeds)
        rates = judging.read_all(images, asked, shape="cross")
        row = pipe.text_encoder.config.hidden_size if grad_mask is not None else 0  # one row
        return {
            "method": method,
            "seed": seed,
            "steps": steps,
            "trainable_params": harness.count_lora_weights(pipe.unet) + row,
            "cross": rates["shape"],
            "colour": rates["colour"],
            **judging.kept(pipe, seeds),
            "final_loss": float(np.mean(history[-20:])),
            "train_seconds": seconds,
        }
