"""Lesson 07's explorers: a LoRA's scale, its rank and alpha, and the alpha ledger of the tools.

Part of ``lorakit.widgets``; introduced in notebooks/07_rank_alpha_lab.ipynb.

* :func:`lora_scale_explorer`: one prompt and seed at LoRA scales 0 to 1.5;
* :func:`rank_alpha_explorer`: LoRAs of several ranks, an alpha slider, pictures and the style
  figures of ``lorakit.metrics``;
* :func:`alpha_ledger_explorer`: sliders over ``lora.alpha_ledger``.

They put the LoRA into ``pipe.unet`` only while they draw (:func:`lora_applied`), so the
pipeline is left as it was given.

Left out: training from a widget (the explorers take LoRAs trained beforehand, e.g. by
``styles.train_or_load``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from lorakit import formats, inject, lora, metrics, sample, styles
from lorakit.widgets._base import Explorer, labelled, show_figure, slider


def _as_weights(lora) -> formats.LoRAWeights:
    if isinstance(lora, formats.LoRAWeights):
        return lora
    if isinstance(lora, str | os.PathLike):
        return formats.load_lora(lora)
    raise TypeError(
        f"expected a LoRA file path or formats.LoRAWeights, got {type(lora).__name__}; "
        "for a LoRA trained in this notebook pass formats.from_model(pipe.unet), then "
        "inject.remove_lora(pipe.unet)."
    )


def _check_bare(pipe) -> None:
    """The explorers put their own LoRA into ``pipe.unet`` while they draw: it must hold none."""
    existing = next(inject.lora_layers(pipe), None)
    if existing is not None:
        raise RuntimeError(
            f"pipe.unet already has LoRA layers (e.g. {existing[0]}): keep them with "
            "weights = formats.from_model(pipe.unet), call inject.remove_lora(pipe.unet), "
            "and pass the weights to the explorer."
        )


@contextmanager
def lora_applied(pipe, weights: formats.LoRAWeights, scale: float = 1.0):
    """``weights`` in ``pipe`` (its UNet, and its text encoder if the LoRA has a part for it) at ``scale``
    inside the ``with`` block; removed (bit-exactly) after it."""
    _check_bare(pipe)
    formats.apply_lora(pipe, weights, scale)
    try:
        yield pipe
    finally:
        inject.remove_lora(pipe)


def _scaling_text(weights: formats.LoRAWeights, alpha: float | None = None) -> str:
    alpha = weights.alpha if alpha is None else alpha
    return (
        f"alpha/&radic;r = {alpha:g}/&radic;{weights.r}"
        if weights.use_rslora
        else f"alpha/r = {alpha:g}/{weights.r}"
    )


@dataclass(frozen=True)
class ScaleView:
    """What the scale explorer shows for one (prompt, seed, scale)."""

    prompt: str
    seed: int
    scale: float  # the runtime multiplier ("LoRA weight" in A1111 and ComfyUI)
    scaling: float  # alpha / r of the LoRA (alpha / sqrt(r) with rsLoRA)
    multiplier: float  # scale * scaling: what multiplies B @ A in every layer
    image: Image.Image


class LoRAScaleExplorer(Explorer):
    """A prompt, a seed and a scale slider over one LoRA; built by :func:`lora_scale_explorer`."""

    MAX_PANELS = 8

    def __init__(
        self, pipe, lora, prompt: str, seed: int = 0, scale: float = 1.0, **generate_kwargs
    ):
        self._setup()
        _check_bare(pipe)
        self.pipe, self.weights, self.generate_kwargs = pipe, _as_weights(lora), generate_kwargs
        self.cache: dict[
            tuple[str, int, float], Image.Image
        ] = {}  # (prompt, seed, scale) -> picture
        self.generations = 0  # pictures actually drawn (cache misses)
        self.shown: ScaleView | None = None
        self.figure: Figure | None = None
        self.strip: list[float] = []  # the scales of the figure's panels, left to right
        self._visited: list[float] = []
        self.prompt_box = labelled(
            ipywidgets.Text,
            value=prompt,
            description="prompt",
            continuous_update=False,
            layout=ipywidgets.Layout(width="60%", max_width="480px"),
        )
        self.seed_box = labelled(
            ipywidgets.BoundedIntText,
            value=seed,
            min=0,
            max=2**31 - 1,
            description="seed",
            layout=ipywidgets.Layout(width="14em"),
        )
        self.slider = slider(
            ipywidgets.FloatSlider,
            value=scale,
            min=0.0,
            max=1.5,
            step=0.05,
            description="LoRA scale",
            readout_format=".2f",
        )
        self.summary = ipywidgets.HTML()
        super().__init__(
            [
                ipywidgets.HBox([self.prompt_box, self.seed_box]),
                self.slider,
                self.summary,
                self.output,
            ]
        )
        self._watch(self.prompt_box, self.seed_box, self.slider)
        self.refresh()

    def image(self, prompt: str, seed: int, scale: float) -> Image.Image:
        """The picture of ``prompt`` and ``seed`` with the LoRA at ``scale``: drawn once, then cached."""
        key = (prompt, int(seed), round(float(scale), 4))
        if key not in self.cache:
            with lora_applied(self.pipe, self.weights, key[2]):
                self.cache[key] = sample.generate(
                    self.pipe, prompt, key[1], **self.generate_kwargs
                )[0]
            self.generations += 1
        return self.cache[key]

    def view(self, prompt: str, seed: int, scale: float) -> ScaleView:
        scale = round(float(scale), 4)
        return ScaleView(
            prompt=prompt,
            seed=int(seed),
            scale=scale,
            scaling=self.weights.scaling,
            multiplier=scale * self.weights.scaling,
            image=self.image(prompt, seed, scale),
        )

    def refresh(self) -> None:
        """Draw (or fetch) the picture for the widgets' prompt, seed and scale, and redraw the strip."""
        self.updates += 1
        prompt = self.prompt_box.value.strip()
        if not prompt:
            raise ValueError("the prompt is empty: type one, e.g. 'a blue circle in sks style'.")
        shown = self.view(prompt, self.seed_box.value, self.slider.value)
        self.image(prompt, shown.seed, 0.0)  # the base picture, for comparison
        self._visited = [s for s in self._visited if s != shown.scale] + [shown.scale]
        seen = [s for s in reversed(self._visited) if (prompt, shown.seed, s) in self.cache]
        self.strip = sorted({0.0, shown.scale} | set(seen[: self.MAX_PANELS - 2]))
        self._present(
            shown,
            f"effective multiplier of B&middot;A = scale &times; {_scaling_text(self.weights)} = "
            f"{shown.scale:.2f} &times; {shown.scaling:.3g} = <b>{shown.multiplier:.3g}</b> in each of "
            f"{len(self.weights.modules)} layers &nbsp;|&nbsp; {len(self.cache)} pictures cached, "
            f"{self.generations} drawn",
        )

    def _draw(self, shown: ScaleView) -> Figure:
        fig, axes = plt.subplots(
            1,
            len(self.strip),
            figsize=(1.9 * len(self.strip), 2.3),
            squeeze=False,
            layout="constrained",
        )
        for ax, scale in zip(axes[0], self.strip, strict=True):
            ax.imshow(self.cache[shown.prompt, shown.seed, scale])
            ax.set_xticks([])
            ax.set_yticks([])
            current = scale == shown.scale
            ax.set_title(
                f"scale {scale:.2f}\n(x{scale * shown.scaling:.3g})",
                fontsize=9,
                color="tab:red" if current else "black",
                fontweight="bold" if current else "normal",
            )
            for side in ax.spines.values():
                side.set(color="tab:red" if current else "0.8", linewidth=3 if current else 1)
        fig.suptitle(f"'{shown.prompt}', seed {shown.seed}", fontsize=10)
        return fig


def lora_scale_explorer(
    pipe,
    lora,
    prompt: str = styles.caption("blue", "circle"),
    seed: int = 0,
    scale: float = 1.0,
    **generate_kwargs,
) -> LoRAScaleExplorer:
    """A prompt box, a seed and a LoRA scale slider (0 to 1.5): the same seed at every scale.

    ``lora``: a LoRA file or ``formats.LoRAWeights``. The summary shows the effective multiplier
    ``scale * alpha / r`` of B A; the figure shows the picture at scale 0 (the base model), at the
    slider's scale and at the other scales already seen. Pictures are cached by (prompt, seed,
    scale); ``generate_kwargs`` (e.g. ``num_inference_steps``) go to ``sample.generate``.
    """
    return LoRAScaleExplorer(pipe, lora, prompt, seed, scale, **generate_kwargs)


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


class RankAlphaExplorer(Explorer):
    """A rank choice among trained LoRAs and an alpha slider; built by :func:`rank_alpha_explorer`."""

    def __init__(
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
        _check_bare(pipe)
        self.pipe, self.generate_kwargs = pipe, generate_kwargs
        self.loras: dict[int, formats.LoRAWeights] = {}
        self.file_bytes: dict[int, int | None] = {}
        for given in loras.values() if isinstance(loras, dict) else loras:
            weights = _as_weights(given)
            if weights.r in self.loras:
                raise ValueError(f"two LoRAs of rank {weights.r}: give one LoRA per rank.")
            self.loras[weights.r] = weights
            self.file_bytes[weights.r] = (
                None if isinstance(given, formats.LoRAWeights) else Path(given).stat().st_size
            )
        if not self.loras:
            raise ValueError(
                "rank_alpha_explorer needs at least one LoRA (a file or formats.LoRAWeights)."
            )
        self.loras = dict(sorted(self.loras.items()))
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
        self.generations = (
            0  # sample.generate calls (one per new setting, and one for the base model)
        )
        self.shown: RankAlphaView | None = None
        self.figure: Figure | None = None
        max_alpha = max_alpha or 2.0 * max(max(self.loras), *(w.alpha for w in self.loras.values()))
        self.rank_buttons = labelled(
            ipywidgets.ToggleButtons,
            options=[(f"r = {r}", r) for r in self.loras],
            value=rank,
            description="rank",
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
        """``metrics.evaluate_grid`` on each colour x shape of ``combos``, reading the pictures already drawn."""
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
        """Pictures and scores of the rank-``rank`` LoRA with its alpha set to ``alpha``: computed once, then cached."""
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
            else f" &nbsp;|&nbsp; file {shown.file_bytes / 1e3:,.0f} KB"
        )
        grid, base = shown.grid, self.base_grid
        self._present(
            shown,
            (
                f"<b>r = {shown.rank}, alpha = {shown.alpha:g}</b> (trained with {shown.trained_alpha:g}): "
                f"{_scaling_text(self.loras[shown.rank], shown.alpha)} = <b>{shown.scaling:.3g}</b>, "
                f"{shown.alpha / shown.trained_alpha:.3g}x the trained update &nbsp;|&nbsp; "
                f"{shown.parameters:,} parameters{size}<br>{self.style} {grid.style_rate:.0%} (base "
                f"{base.style_rate:.0%}), colour {grid.colour_accuracy:.0%} ({base.colour_accuracy:.0%}), "
                f"shape {grid.shape_accuracy:.0%} ({base.shape_accuracy:.0%}) on {len(self.cells)} pictures"
            ),
        )

    def _draw(self, shown: RankAlphaView) -> Figure:
        # Axes order (tests rely on it): the base row, the LoRA row, then the bar chart.
        n = len(self.cells)
        fig = plt.figure(figsize=(1.3 * n + 3.6, 3.2), layout="constrained")
        grid = fig.add_gridspec(2, n + 1, width_ratios=[1] * n + [max(2.5, 0.6 * n)])
        rows = [
            (self.base_images, "base"),
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
        bars.bar(x - 0.2, base_scores, width=0.4, color="0.7", label="base")
        bars.set(xticks=x, xticklabels=names, ylim=(0, 1.05), title=f"scaling {shown.scaling:.3g}")
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
    rank (``styles.train_or_load`` makes them). For each (rank, alpha) the explorer draws the
    prompts ``template`` of ``combos`` x ``seeds`` with that LoRA, its alpha replaced (so the
    update is multiplied by ``alpha / r``), scores them with ``lorakit.metrics`` (style rate,
    colour and shape accuracy, beside the base model's) and shows the LoRA's parameters and file
    size. Each setting is computed once; ``generate_kwargs`` go to ``sample.generate``.
    """
    return RankAlphaExplorer(
        pipe, loras, combos, seeds, template, style, rank, alpha, max_alpha, **generate_kwargs
    )


# --------------------------------------------------------------------------- the alpha ledger


class AlphaLedgerExplorer(Explorer):
    """Sliders for r and alpha over :func:`alpha_ledger`; built by :func:`alpha_ledger_explorer`."""

    def __init__(self, r: int = 4, alpha: float | None = None, max_rank: int = 128):
        self._setup()
        self.shown: lora.AlphaLedger | None = None
        self.figure: Figure | None = None
        self.r_slider = slider(
            ipywidgets.IntSlider, value=r, min=1, max=max_rank, description="rank r"
        )
        self.slider = slider(
            ipywidgets.FloatSlider,
            value=alpha or r,
            min=0.5,
            max=float(max_rank),
            step=0.5,
            description="alpha",
        )
        # indent=False and an automatic width: the label is never cut short.
        self.defaults = ipywidgets.Checkbox(
            value=alpha is None,
            description="leave alpha out (each tool's default)",
            indent=False,
            layout=ipywidgets.Layout(width="auto"),
        )
        self.table = ipywidgets.HTML()
        super().__init__([self.r_slider, self.slider, self.defaults, self.table, self.output])
        self._watch(self.r_slider, self.slider, self.defaults)
        self.refresh()

    def refresh(self) -> None:
        self.updates += 1
        alpha = None if self.defaults.value else self.slider.value
        shown = lora.alpha_ledger(self.r_slider.value, alpha)
        fig = self._draw(shown)
        self.shown, self.figure = shown, fig
        cells = "".join(
            f"<tr><td>{name}</td><td>{a:g}</td><td>{formula}</td><td><b>{s:.4g}</b></td></tr>"
            for name, a, formula, s in shown.rows()
        )
        self.table.value = (
            f"<table><tr><th>convention</th><th>alpha</th><th>scaling</th><th>r = {shown.r}</th>"
            f"</tr>{cells}</table>"
        )
        show_figure(self.output, fig)

    def _draw(self, shown: lora.AlphaLedger) -> Figure:
        ranks = np.unique(np.geomspace(1, max(self.r_slider.max, 2), 60).round().astype(int))
        curves = [lora.alpha_ledger(int(k), shown.alpha) for k in ranks]
        fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
        for (name, *_), field in zip(
            shown.rows(), ("peft", "rslora", "kohya", "lorakit"), strict=True
        ):
            (line,) = ax.plot(ranks, [getattr(c, field) for c in curves], label=name)
            ax.plot([shown.r], [getattr(shown, field)], "o", color=line.get_color())
        ax.axvline(shown.r, color="0.6", linestyle="--")
        alpha = "each tool's default" if shown.alpha is None else f"{shown.alpha:g}"
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="rank r",
            ylabel="scaling of B A",
            title=f"alpha = {alpha}",
        )
        ax.legend(fontsize=7)
        return fig


def alpha_ledger_explorer(
    r: int = 4, alpha: float | None = None, max_rank: int = 128
) -> AlphaLedgerExplorer:
    """Sliders for r and alpha (or each tool's default alpha) and a table of :func:`alpha_ledger`."""
    return AlphaLedgerExplorer(r, alpha, max_rank)
