"""Scoring a style LoRA's pictures for ``benchmarks.style_lora``: a held-out list of colour x shape
prompts drawn and read by lorakit's detectors (:func:`evaluate`), several LoRAs' results pooled
(:func:`pooled`) with their standard error (:func:`standard_error`), a table row (:func:`row`),
and ``--set FIELD=VALUE`` read as typed TrainConfig settings (:func:`parse_settings`).

Left out: training and the report (``benchmarks.style_lora``), the detectors themselves
(``lorakit.metrics``).
"""

from __future__ import annotations

import typing

import numpy as np

from benchmarks import _common
from lorakit import metrics, sample, train


def evaluate(pipe, combos, seeds, template: str) -> metrics.GridResult:
    """Score every (colour, shape) of ``combos`` x ``seeds`` on ``template`` (default sampler
    settings)."""

    def generate(prompts, seeds_):
        return sample.generate(pipe, prompts, seeds_, batch_size=32)

    cells = [(c, s, seed) for c, s in combos for seed in seeds]
    prompts = [template.format(colour=c, shape=s) for c, s, _ in cells]
    images = generate(prompts, [seed for *_, seed in cells])
    # evaluate_grid scores a full colour x shape grid; score held-out lists cell by cell with it.
    records, pictures = [], []
    for (colour, shape, seed), image in zip(cells, images, strict=True):
        one = metrics.evaluate_grid(
            lambda p, s, im=image: [im],
            colours=[colour],
            shapes=[shape],
            seeds=[seed],
            template=template,
            style="outline",
        )
        records += one.records
        pictures.append(image)
    return metrics.GridResult(records=records, style="outline", images=pictures)


def max_diff(a, b) -> float:
    """Largest pixel difference (0..255) between two lists of pictures."""
    return max(
        float(np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).max())
        for x, y in zip(a, b, strict=True)
    )


def row(name: str, result: metrics.GridResult) -> str:
    return (
        f"{name:<34}{result.style_rate:>8.1%}{result.colour_accuracy:>9.1%}"
        f"{result.shape_accuracy:>9.1%}"
        f"{result.both_accuracy:>9.1%}{len(result.records):>6}"
    )


GRID_NAMES = {"held-out": "held_out", "all 15": "all"}  # file names of the --out grids
# TrainConfig fields that take None, with the type of their other values (alpha: float, resolution:
# int, ...).
OPTIONAL = {
    name: next(a for a in typing.get_args(hint) if a is not type(None))
    for name, hint in typing.get_type_hints(train.TrainConfig).items()
    if type(None) in typing.get_args(hint)
}


def parse_settings(items: list[str]) -> dict:
    """``["r=8", "flip=false", "min_snr_gamma=none", "target_modules=attn2.to_k,attn2.to_v"]`` as
    TrainConfig overrides, typed."""
    defaults, overrides = train.TrainConfig(), {}
    for item in items:
        field, _, value = item.partition("=")
        if not hasattr(defaults, field) or not value:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field")
        current = getattr(defaults, field)
        if value.lower() == "none" and field in OPTIONAL:
            overrides[field] = None  # e.g. min_snr_gamma=none: the plain loss
        elif field == "target_modules" and "," in value:
            overrides[field] = value.split(",")  # explicit suffixes, e.g. attn2.to_k,attn2.to_v
        elif isinstance(current, bool):  # before int: bool("false") would be True
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--set {item!r}: {field} is true or false")
            overrides[field] = value.lower() == "true"
        elif isinstance(current, str):
            overrides[field] = value
        else:
            kind = type(current) if current is not None else OPTIONAL[field]
            overrides[field] = kind(value)
    return overrides


def pooled(results: list[metrics.GridResult]) -> metrics.GridResult:
    """One result of several LoRAs' pictures: its rates are the mean over the LoRAs (each scored the
    same pictures)."""
    return metrics.GridResult(
        records=[r for result in results for r in result.records],
        style=results[0].style,
        images=[im for result in results for im in result.images],
    )


def standard_error(results: list[metrics.GridResult]) -> dict[str, float]:
    """Standard error of the mean over the LoRAs (sample std / sqrt(n)) of style, colour and shape;
    0 for one LoRA.

    It holds both sources of spread: the training seed, and the sampling seeds each LoRA is scored
    on.
    """
    rates = {
        "style": [r.style_rate for r in results],
        "colour": [r.colour_accuracy for r in results],
        "shape": [r.shape_accuracy for r in results],
    }
    return {name: _common.mean_se(values)[1] for name, values in rates.items()}
