"""Lesson 07's rank/alpha explorer: LoRAs of several ranks, an alpha slider, pictures and scores.

Introduced in notebooks/07_rank_alpha_lab.ipynb.

:func:`rank_alpha_explorer` draws the same prompts with the LoRA of the chosen rank, its alpha
replaced by the slider's (so the update is multiplied by ``alpha / r``), scores the pictures with
``lorakit.metrics`` (style rate, colour and shape accuracy, beside the base model's) and shows the
LoRA's parameters and file size. Each (rank, alpha) is computed once and cached.

Left out: training from the widget (``outline_loras.train_or_load`` makes the LoRAs beforehand).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from lorakit import formats, metrics, sample, styles
from lorakit.language import say
from lorakit.widgets.applying import as_lora_weights, check_no_lora, lora_applied, scaling_text
from lorakit.widgets.base import Explorer, labelled, slider

__all__ = ["RankAlphaExplorer", "RankAlphaView", "rank_alpha_explorer"]


@dataclass(frozen=True)
class RankAlphaView:
    """What the rank/alpha explorer shows for one LoRA (rank) at one alpha."""

    rank: int
    alpha: float
    trained_alpha: float  # the alpha stored in the file
    scaling: float  # alpha / r (alpha / sqrt(r) with rsLoRA): what multiplies B @ A
    images: list[Image.Image]  # one per (prompt, seed) cell of the explorer
    grid: metrics.GridResult  # style rate, colour and shape accuracy of those pictures
    parameters: int  # numbers in every A and B
    file_bytes: int | None  # size of the LoRA file, when it was given as a file


def _by_rank(loras) -> tuple[dict[int, formats.LoRAWeights], dict[int, int | None]]:
    """The LoRAs given (files or weights, a list or a dict) by rank, and their file sizes."""
    by_rank: dict[int, formats.LoRAWeights] = {}
    file_bytes: dict[int, int | None] = {}
    for given in loras.values() if isinstance(loras, dict) else loras:
        weights = as_lora_weights(given)
        if weights.r in by_rank:
            raise ValueError(f"two LoRAs of rank {weights.r}: give one LoRA per rank.")
        by_rank[weights.r] = weights
        file_bytes[weights.r] = (
            None if isinstance(given, formats.LoRAWeights) else Path(given).stat().st_size
        )
    if not by_rank:
        raise ValueError(
            "rank_alpha_explorer needs at least one LoRA (a file or formats.LoRAWeights)."
        )
    return dict(sorted(by_rank.items())), file_bytes


class RankAlphaExplorer(Explorer):
    """A rank among trained LoRAs and an alpha slider; made by :func:`rank_alpha_explorer`."""

    def __init__(  # the arguments of rank_alpha_explorer, which documents them
        self,
        pipe,
        loras,
        combos: Sequence[tuple[str, str]] = styles.OUTLINE_HELD_OUT,
        seeds: Sequence[int] = (0,),
        template: str = styles.TEMPLATE,
        style: str = "outline",
        rank: int | None = None,
        alpha: float | None = None,
        max_alpha: float | None = None,
        **generate_kwargs,
    ):
        self._setup()
        check_no_lora(pipe)
        self.pipe, self.generate_kwargs = pipe, generate_kwargs
        self.loras, self.file_bytes = _by_rank(loras)
        rank = next(iter(self.loras)) if rank is None else rank
        if rank not in self.loras:
            raise ValueError(f"no LoRA of rank {rank}: the ranks given are {list(self.loras)}.")
        self.combos, self.seeds, self.template, self.style = (
            list(combos),
            list(seeds),
            template,
            style,
        )
        self.cells = [
            (template.format(colour=c, shape=s), seed)
            for c, s in self.combos
            for seed in self.seeds
        ]
        self.cache: dict[tuple[int, float], RankAlphaView] = {}
        self.generations = 0  # sample.generate calls: one a new setting, one for the base model
        self.shown: RankAlphaView | None = None
        self.figure: Figure | None = None
        max_alpha = max_alpha or 2.0 * max(max(self.loras), *(w.alpha for w in self.loras.values()))
        self.rank_buttons = labelled(
            ipywidgets.ToggleButtons,
            options=[(f"r = {r}", r) for r in self.loras],
            value=rank,
            description=say("rank"),
        )
        self.slider = slider(
            ipywidgets.FloatSlider,
            value=alpha or self.loras[rank].alpha,
            min=0.5,
            max=max_alpha,
            step=0.5,
            description="alpha",
        )
        self.summary = ipywidgets.HTML()
        self.base_images = self._generate(None)
        self.base_grid = self._score(self.base_images)
        super().__init__([self.rank_buttons, self.slider, self.summary, self.output])
        self._watch(self.rank_buttons, self.slider)
        self.refresh()

    def _generate(self, weights: formats.LoRAWeights | None) -> list[Image.Image]:
        prompts, seeds = [p for p, _ in self.cells], [s for _, s in self.cells]
        self.generations += 1
        if weights is None:
            return sample.generate(self.pipe, prompts, seeds, **self.generate_kwargs)
        with lora_applied(self.pipe, weights):
            return sample.generate(self.pipe, prompts, seeds, **self.generate_kwargs)

    def _score(self, images: list[Image.Image]) -> metrics.GridResult:
        """``metrics.evaluate_grid`` on each colour x shape of ``combos``, reading the pictures
        already drawn."""
        drawn = dict(zip(self.cells, images, strict=True))
        records = []
        for colour, shape in self.combos:
            records += metrics.evaluate_grid(
                lambda ps, ss: [drawn[p, s] for p, s in zip(ps, ss, strict=True)],
                colours=[colour],
                shapes=[shape],
                seeds=self.seeds,
                template=self.template,
                style=self.style,
            ).records
        return metrics.GridResult(records=records, style=self.style, images=list(images))

    def view(self, rank: int, alpha: float) -> RankAlphaView:
        """Pictures and scores of the rank-``rank`` LoRA with its alpha set to ``alpha``: computed
        once, then cached."""
        if rank not in self.loras:
            raise ValueError(f"no LoRA of rank {rank}: the ranks given are {list(self.loras)}.")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}.")
        key = (rank, round(float(alpha), 4))
        if key not in self.cache:
            weights = replace(self.loras[rank], alpha=key[1])
            images = self._generate(weights)
            self.cache[key] = RankAlphaView(
                rank=rank,
                alpha=key[1],
                trained_alpha=self.loras[rank].alpha,
                scaling=weights.scaling,
                images=images,
                grid=self._score(images),
                parameters=sum(
                    weights.A[m].numel() + weights.B[m].numel() for m in weights.modules
                ),
                file_bytes=self.file_bytes[rank],
            )
        return self.cache[key]

    def refresh(self) -> None:
        self.updates += 1
        shown = self.view(self.rank_buttons.value, self.slider.value)
        size = (
            ""
            if shown.file_bytes is None
            else say(" &nbsp;|&nbsp; file {kb} KB", kb=f"{shown.file_bytes / 1e3:,.0f}")
        )
        grid, base = shown.grid, self.base_grid
        self._present(
            shown,
            (
                say(
                    "<b>r = {rank}, alpha = {alpha}</b> (trained with {trained}): {formula} = "
                    "<b>{scaling}</b>, {ratio}x the trained update &nbsp;|&nbsp; {parameters} "
                    "parameters{size}<br>{style} {style_rate} (base {base_style}), colour "
                    "{colour} ({base_colour}), shape {shape} ({base_shape}) on {n} pictures",
                    rank=shown.rank,
                    alpha=f"{shown.alpha:g}",
                    trained=f"{shown.trained_alpha:g}",
                    formula=scaling_text(self.loras[shown.rank], shown.alpha),
                    scaling=f"{shown.scaling:.3g}",
                    ratio=f"{shown.alpha / shown.trained_alpha:.3g}",
                    parameters=f"{shown.parameters:,}",
                    size=size,
                    style=say(self.style),
                    style_rate=f"{grid.style_rate:.0%}",
                    base_style=f"{base.style_rate:.0%}",
                    colour=f"{grid.colour_accuracy:.0%}",
                    base_colour=f"{base.colour_accuracy:.0%}",
                    shape=f"{grid.shape_accuracy:.0%}",
                    base_shape=f"{base.shape_accuracy:.0%}",
                    n=len(self.cells),
                )
            ),
        )

    def _draw(self, shown: RankAlphaView) -> Figure:
        # Axes order (tests rely on it): the base row, the LoRA row, then the bar chart.
        n = len(self.cells)
        fig = plt.figure(figsize=(1.3 * n + 3.6, 3.2), layout="constrained")
        grid = fig.add_gridspec(2, n + 1, width_ratios=[1] * n + [max(2.5, 0.6 * n)])
        rows = [
            (self.base_images, say("base")),
            (shown.images, f"r={shown.rank}\nalpha={shown.alpha:g}"),
        ]
        for row, (images, label) in enumerate(rows):
            for col, image in enumerate(images):
                ax = fig.add_subplot(grid[row, col])
                ax.imshow(image)
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(label, fontsize=8)
                if row == 1:
                    prompt, seed = self.cells[col]
                    words = prompt.split()
                    ax.set_xlabel(f"{' '.join(words[1:3])}\nseed {seed}", fontsize=7)
        bars = fig.add_subplot(grid[:, n])
        names = [self.style, "colour", "shape"]
        x = np.arange(len(names))
        lora_scores = [shown.grid.style_rate, shown.grid.colour_accuracy, shown.grid.shape_accuracy]
        base_scores = [
            self.base_grid.style_rate,
            self.base_grid.colour_accuracy,
            self.base_grid.shape_accuracy,
        ]
        bars.bar(x + 0.2, lora_scores, width=0.4, color="tab:red", label="LoRA")
        bars.bar(x - 0.2, base_scores, width=0.4, color="0.7", label=say("base"))
        title = say("scaling {scaling}", scaling=f"{shown.scaling:.3g}")
        bars.set(xticks=x, xticklabels=[say(n) for n in names], ylim=(0, 1.05), title=title)
        bars.legend(fontsize=7, loc="lower right")
        return fig


def rank_alpha_explorer(
    pipe,
    loras,
    combos: Sequence[tuple[str, str]] = styles.OUTLINE_HELD_OUT,
    seeds: Sequence[int] = (0,),
    template: str = styles.TEMPLATE,
    style: str = "outline",
    rank: int | None = None,
    alpha: float | None = None,
    max_alpha: float | None = None,
    **generate_kwargs,
) -> RankAlphaExplorer:
    """Choose among LoRAs of several ranks and set their alpha: pictures, style figures, size.

    ``loras``: LoRA files (or ``formats.LoRAWeights``) of different ranks, a list or a dict by
    rank (``outline_loras.train_or_load`` makes them). For each (rank, alpha) the explorer draws the
    prompts ``template`` of ``combos`` x ``seeds`` with that LoRA, its alpha replaced (so the
    update is multiplied by ``alpha / r``), scores them with ``lorakit.metrics`` (style rate,
    colour and shape accuracy, beside the base model's) and shows the LoRA's parameters and file
    size. Each setting is computed once; ``generate_kwargs`` go to ``sample.generate``.
    """
    return RankAlphaExplorer(
        pipe, loras, combos, seeds, template, style, rank, alpha, max_alpha, **generate_kwargs
    )
