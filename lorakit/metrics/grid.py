"""Scoring a prompt grid: does a model draw what it is asked, and in which style?

Introduced in notebooks/06_train_style_lora.ipynb; lessons 07-10 score LoRAs with it too.

``evaluate_grid`` asks a generator for every colour x shape x seed of the shapes world and reads
each picture back with ``detectors.detect``; ``score_pictures`` does the same for pictures already
drawn. Both give a ``GridResult``: one record a picture (what was asked, what was found), colour,
shape and both-right accuracies, the rate of a style, and a colour x shape table.

Left out: statistics over several runs (the benchmarks' mean and standard error), prompts that are
not "a <colour> <shape> ...".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lorakit.metrics import detectors
from lorakit.shapes import world

__all__ = ["GenerateFn", "GridResult", "evaluate_grid", "score_pictures"]

GenerateFn = Callable[[list[str], list[int]], Sequence[Image.Image]]


@dataclass
class GridResult:
    """Scores of a prompt grid; ``records`` has one dict per (prompt, seed) picture."""

    records: list[dict]
    style: str  # the style whose rate ``style_rate`` reports
    images: list[Image.Image] = field(repr=False, default_factory=list)

    def _rate(self, key: str) -> float:
        return float(np.mean([record[key] for record in self.records]))

    @property
    def colour_accuracy(self) -> float:
        return self._rate("colour_ok")

    @property
    def shape_accuracy(self) -> float:
        return self._rate("shape_ok")

    @property
    def both_accuracy(self) -> float:
        return self._rate("both_ok")

    @property
    def style_rate(self) -> float:
        """The fraction of pictures detected in ``style`` (e.g. how often a style LoRA shows)."""
        return self._rate("style_ok")

    def to_dict(self) -> dict:
        return {
            "colour_accuracy": self.colour_accuracy,
            "shape_accuracy": self.shape_accuracy,
            "both_accuracy": self.both_accuracy,
            "style_rate": self.style_rate,
            "style": self.style,
            "records": self.records,
        }

    def table(self) -> str:
        """Colour x shape table of pictures with both right, then the four scores."""
        colours = list(dict.fromkeys(record["colour"] for record in self.records))
        shape_names = list(dict.fromkeys(record["shape"] for record in self.records))
        width = max(8, *(len(s) + 2 for s in shape_names))
        lines = [f"{'':<8}" + "".join(f"{s:>{width}}" for s in shape_names)]
        for colour in colours:
            cells = []
            for shape in shape_names:
                cell = [
                    r["both_ok"]
                    for r in self.records
                    if r["colour"] == colour and r["shape"] == shape
                ]
                cells.append(f"{sum(cell)}/{len(cell)}".rjust(width))
            lines.append(f"{colour:<8}" + "".join(cells))
        lines.append(
            f"colour {self.colour_accuracy:.1%}  shape {self.shape_accuracy:.1%}  "
            f"both {self.both_accuracy:.1%}  {self.style} {self.style_rate:.1%}  "
            f"({len(self.records)} pictures)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _check_grid(colours: Sequence[str], shapes: Sequence[str], style: str) -> None:
    for name in colours:
        if name not in world.COLOURS:
            raise ValueError(
                f"unknown colour {name!r}: the detectors know {', '.join(world.COLOURS)}."
            )
    for name in shapes:
        if name not in world.SHAPES:
            raise ValueError(
                f"unknown shape {name!r}: the detectors know {', '.join(world.SHAPES)}."
            )
    _check_style(style)


def _check_style(style: str) -> None:
    if style not in world.STYLES:
        raise ValueError(f"unknown style {style!r}: use one of {', '.join(world.STYLES)}.")


def evaluate_grid(
    generate_fn: GenerateFn,
    colours: Sequence[str] = tuple(world.COLOURS),
    shapes: Sequence[str] = world.SHAPES,
    seeds: Sequence[int] = (0, 1, 2, 3),
    template: str = "a {colour} {shape}",
    style: str = "outline",
    batch_size: int | None = None,
) -> GridResult:
    """Ask ``generate_fn`` for every colour x shape x seed and score the pictures with ``detect``.

    ``generate_fn(prompts, seeds)`` gets two lists of the same length and returns one picture per
    (prompt, seed) pair, in order; ``batch_size`` splits the grid into calls of at most that many.
    ``style_rate`` is the fraction of pictures detected in ``style``.
    """
    _check_grid(colours, shapes, style)
    cells = [(c, s, seed) for c in colours for s in shapes for seed in seeds]
    if not cells:
        raise ValueError("the grid is empty: give at least one colour, one shape and one seed.")
    step = batch_size or len(cells)
    images: list[Image.Image] = []
    for begin in range(0, len(cells), step):
        batch = cells[begin : begin + step]
        prompts = [template.format(colour=c, shape=s) for c, s, _ in batch]
        pictures = list(generate_fn(prompts, [seed for _, _, seed in batch]))
        if len(pictures) != len(batch):
            raise ValueError(
                f"generate_fn returned {len(pictures)} pictures for {len(batch)} prompts: "
                "it must return one picture per (prompt, seed) pair."
            )
        images.extend(pictures)
    records = [
        _record(image, template.format(colour=colour, shape=shape), colour, shape, seed, style)
        for (colour, shape, seed), image in zip(cells, images, strict=True)
    ]
    return GridResult(records=records, style=style, images=images)


def _record(image, prompt: str, colour: str, shape: str, seed: int | None, style: str) -> dict:
    """One picture's row of a :class:`GridResult`: what was asked, what ``detect`` found, and
    whether they agree."""
    found = detectors.detect(image)
    return {
        "prompt": prompt,
        "colour": colour,
        "shape": shape,
        "seed": seed,
        "detected_colour": found["colour"],
        "detected_shape": found["shape"],
        "detected_style": found["style"],
        "colour_ok": found["colour"] == colour,
        "shape_ok": found["shape"] == shape,
        "both_ok": found["colour"] == colour and found["shape"] == shape,
        "style_ok": found["style"] == style,
    }


def score_pictures(
    images: Sequence,
    prompts: Sequence[str],
    style: str = "outline",
    seeds: Sequence[int] | None = None,
) -> GridResult:
    """Score pictures already drawn: ``images[i]`` from ``prompts[i]``, which starts "a <colour>
    <shape>".

    The same rows as :func:`evaluate_grid`, for pictures that are not a full colour x shape grid
    (held-out combinations, say), or that were drawn once and are scored several ways.
    """
    if len(images) != len(prompts):
        raise ValueError(
            f"{len(images)} pictures for {len(prompts)} prompts: give one prompt per picture."
        )
    if not prompts:
        raise ValueError("no pictures to score.")
    _check_style(style)
    records = []
    for index, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        words = prompt.split()
        if (
            len(words) < 3
            or words[0] != "a"
            or words[1] not in world.COLOURS
            or words[2] not in world.SHAPES
        ):
            raise ValueError(
                f"prompt {index} ({prompt!r}) does not start 'a <colour> <shape>' with a colour "
                f"of {', '.join(world.COLOURS)} and a shape of {', '.join(world.SHAPES)}."
            )
        seed = None if seeds is None else seeds[index]
        records.append(_record(image, prompt, words[1], words[2], seed, style))
    return GridResult(records=records, style=style, images=list(images))
