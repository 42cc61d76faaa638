"""The course's ipywidgets UIs: sliders that redraw a figure when released.

Introduced in notebooks/01_low_rank_intuition.ipynb (``svd_explorer``); notebooks/07_rank_alpha_lab.ipynb
adds the LoRA explorers.

Every UI here follows the same rules, so it works in JupyterLab with ipywidgets 8.x and in Colab
with ipywidgets 7.7, with the default inline matplotlib backend (no ipympl):

* sliders use ``continuous_update=False``: the expensive redraw runs once, on release;
* the UI is an ``ipywidgets.VBox`` subclass that also exposes its sliders and what it shows now
  (``.slider``, ``.shown``, ``.figure``, ``.updates``), so tests drive it headlessly with
  ``ui.slider.value = 5`` and read the result;
* heavy work (an SVD, a generation) is done once: an SVD when the UI is built, each picture the
  first time its setting is asked for (a cache keyed by the setting); a seen setting is instant;
* an error in a callback is printed into the UI's output area, recorded in ``.errors``, and raised:
  never swallowed.

UIs:

* :func:`svd_explorer`: rank-k reconstruction of an image or matrix (lesson 01).
* :func:`lora_scale_explorer`: one prompt and seed at LoRA scales 0 to 1.5 (lesson 07).
* :func:`rank_alpha_explorer`: LoRAs of several ranks, an alpha slider, pictures and the style
  figures of ``lorakit.metrics`` (lesson 07).
* :func:`alpha_ledger` and :func:`alpha_ledger_explorer`: what one (r, alpha) means in PEFT,
  rsLoRA and kohya (lesson 07).

The LoRA explorers put the LoRA into ``pipe.unet`` only while they draw (:func:`lora_applied`:
``formats.apply_lora``, then ``inject.remove_lora``), so the pipeline is left as it was given.

Left out: ipympl/interactive figures, layout theming, previews during generation, and training from a
widget (the LoRA explorers take LoRAs trained beforehand, e.g. by ``styles.train_or_load``).
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import clear_output, display
from matplotlib.figure import Figure
from PIL import Image

from lorakit import formats, inject, lowrank, metrics, sample, styles


def _show_figure(output: ipywidgets.Output, fig: Figure) -> None:
    """Replace what ``output`` shows with ``fig`` (inline backend), then free the figure."""
    with output:
        clear_output(wait=True)
        display(fig)
    plt.close(fig)


def _report_error(output: ipywidgets.Output, error: Exception) -> None:
    """Print the traceback where the student is looking; the caller re-raises it."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    output.append_stderr(text)


class _Explorer(ipywidgets.VBox):
    """What every explorer shares: a redraw counter, and callbacks whose errors are shown, kept and raised."""

    def _setup(self) -> None:
        self.updates = 0  # number of redraws: tests check one per widget change
        self.errors: list[Exception] = []  # every error raised inside a callback, in order
        self.output = ipywidgets.Output()

    def _callback(self, change) -> None:
        try:
            self.refresh()
        except Exception as error:
            self.errors.append(error)
            _report_error(self.output, error)
            raise

    def _watch(self, *controls: ipywidgets.Widget) -> None:
        for control in controls:
            control.observe(self._callback, names="value")

    def refresh(self) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- svd_explorer


@dataclass(frozen=True)
class SVDView:
    """What the SVD explorer shows for one rank (colour pictures are clipped to [0, 1] only when drawn)."""

    rank: int
    reconstruction: np.ndarray  # (m, n) or (m, n, 3), not clipped
    relative_error: float  # ||X - X_k||_F / ||X||_F over all channels
    energy_kept: float  # fraction of sum(S**2) kept, over all channels
    storage_ratio: float  # r(m + n) / (m n): numbers stored by rank r vs the full matrix


def _to_channels(image_or_matrix) -> tuple[torch.Tensor, bool]:
    """(C, m, n) float64 channels and whether the input is an image (shown in grey or colour)."""
    if hasattr(image_or_matrix, "convert") and hasattr(image_or_matrix, "size"):  # a PIL image
        image_or_matrix = np.array(image_or_matrix.convert("RGB" if image_or_matrix.mode != "L" else "L"))
    if not isinstance(image_or_matrix, torch.Tensor | np.ndarray):
        raise TypeError(
            f"svd_explorer needs a PIL image, a numpy array or a torch tensor, got {type(image_or_matrix).__name__}."
        )
    x = torch.as_tensor(image_or_matrix).detach().cpu()
    is_image = x.dtype == torch.uint8
    x = x.double() / 255.0 if is_image else x.double()
    if x.ndim == 2:
        return x.unsqueeze(0), is_image  # (1, m, n)
    if x.ndim == 3 and x.shape[-1] in (3, 4):
        return x[..., :3].permute(2, 0, 1), True  # (3, m, n): drop alpha, one SVD per channel
    raise ValueError(
        f"svd_explorer needs a matrix (m, n) or an RGB image (m, n, 3), got shape {tuple(x.shape)}; "
        "for a (3, m, n) tensor pass x.permute(1, 2, 0)."
    )


class SVDExplorer(ipywidgets.VBox):
    """A rank slider over cached per-channel SVDs; built by :func:`svd_explorer`."""

    def __init__(self, image_or_matrix, max_rank: int | None = None, rank: int | None = None):
        channels, self.is_image = _to_channels(image_or_matrix)  # (C, m, n)
        _, self.m, self.n = channels.shape
        full_rank = min(self.m, self.n)
        max_rank = full_rank if max_rank is None else lowrank.check_rank(max_rank, full_rank, "max_rank")
        rank = max(1, max_rank // 10) if rank is None else lowrank.check_rank(rank, max_rank, "rank", "max_rank")

        self.original = channels.permute(1, 2, 0).squeeze(-1).numpy()  # (m, n) or (m, n, 3)
        self.factors = [lowrank.svd(c) for c in channels]  # the only SVDs: C x (U, S, Vh)
        squares = torch.stack([S.pow(2) for _, S, _ in self.factors])  # (C, p)
        self._energy = lowrank.energy(squares.sum(0).sqrt())  # (p,) pooled over channels
        if self.is_image:  # grey levels from black to white
            self._limits = (float(self.original.min()), float(self.original.max()))
        else:  # a weight: signed, so white is zero
            biggest = float(np.abs(self.original).max())
            self._limits = (-biggest, biggest)
        self.updates = 0  # number of redraws: tests check one per slider move
        self.errors: list[Exception] = []  # errors raised inside the callback
        self.shown: SVDView | None = None
        self.figure: Figure | None = None

        self.slider = ipywidgets.IntSlider(
            value=rank, min=1, max=max_rank, step=1, description="rank r", continuous_update=False
        )
        self.summary = ipywidgets.HTML()
        self.output = ipywidgets.Output()
        super().__init__([self.slider, self.summary, self.output])
        self.slider.observe(self._on_rank, names="value")
        self.show(rank)

    def view(self, rank: int) -> SVDView:
        """The figures for ``rank``, from the cached factors (no SVD)."""
        channels = [lowrank.reconstruct(U, S, Vh, rank) for U, S, Vh in self.factors]  # C x (m, n)
        reconstruction = torch.stack(channels, -1).squeeze(-1).numpy()  # (m, n) or (m, n, 3)
        energy_kept = self._energy[rank - 1].item()
        return SVDView(
            rank=rank,
            reconstruction=reconstruction,
            relative_error=float(np.sqrt(max(0.0, 1.0 - energy_kept))),  # Eckart-Young, relative
            energy_kept=energy_kept,
            storage_ratio=lowrank.storage_ratio(self.m, self.n, rank),
        )

    def show(self, rank: int) -> None:
        """Recompute the view for ``rank`` and redraw the summary and the figure."""
        self.updates += 1
        shown = self.view(rank)
        fig = self._draw(shown)
        self.shown, self.figure = shown, fig
        self.summary.value = (
            f"<b>rank {rank}</b> of {min(self.m, self.n)} &nbsp;|&nbsp; relative error "
            f"{shown.relative_error:.2%} &nbsp;|&nbsp; energy kept {shown.energy_kept:.2%} &nbsp;|&nbsp; "
            f"storage r(m+n)/mn = {shown.storage_ratio:.2%}"
        )
        _show_figure(self.output, fig)

    def _on_rank(self, change) -> None:
        try:
            self.show(change["new"])
        except Exception as error:
            self.errors.append(error)
            _report_error(self.output, error)
            raise

    def _draw(self, shown: SVDView) -> Figure:
        fig, (ax_in, ax_out, ax_energy) = plt.subplots(
            1, 3, figsize=(11, 3.6), width_ratios=[1, 1, 1.2], layout="constrained"
        )
        if self.original.ndim == 3:
            ax_in.imshow(np.clip(self.original, 0, 1))
            ax_out.imshow(np.clip(shown.reconstruction, 0, 1))
        else:
            style = {"cmap": "gray" if self.is_image else "RdBu_r", "vmin": self._limits[0], "vmax": self._limits[1]}
            ax_in.imshow(self.original, **style)
            ax_out.imshow(shown.reconstruction, **style)
        ax_in.set_title(f"original ({self.m} x {self.n})")
        ax_out.set_title(f"rank {shown.rank}: error {shown.relative_error:.1%}")
        for ax in (ax_in, ax_out):
            ax.set_axis_off()
        ranks = np.arange(1, len(self._energy) + 1)
        ax_energy.plot(ranks, self._energy.numpy(), color="tab:blue")
        ax_energy.axvline(shown.rank, color="tab:red", linestyle="--")
        ax_energy.plot([shown.rank], [shown.energy_kept], "o", color="tab:red")
        ax_energy.set(xscale="log", ylim=(0, 1.02), xlabel="rank r", ylabel="energy kept",
                      title=f"energy kept {shown.energy_kept:.1%}, storage {shown.storage_ratio:.1%}")
        return fig


def svd_explorer(image_or_matrix, max_rank: int | None = None, rank: int | None = None) -> SVDExplorer:
    """A rank slider that shows the rank-r reconstruction, its error, energy kept and storage.

    ``image_or_matrix``: a PIL image, an (m, n, 3) uint8 or float RGB array in [0, 1] (one SVD per
    channel), an (m, n) uint8 grey image, or an (m, n) float matrix (a weight, say: drawn with a
    red-blue colour map, white at zero). ``max_rank`` caps the slider (default min(m, n)),
    ``rank`` is where it starts (default max_rank // 10). Display the result to use it;
    ``ui.slider.value = 5`` moves it from code and ``ui.shown`` holds the figures now shown.
    """
    return SVDExplorer(image_or_matrix, max_rank=max_rank, rank=rank)


# --------------------------------------------------------------------------- LoRA explorers


def _as_weights(lora) -> formats.LoRAWeights:
    if isinstance(lora, formats.LoRAWeights):
        return lora
    if isinstance(lora, str | os.PathLike):
        return formats.load_lora(lora)
    raise TypeError(f"expected a LoRA file path or formats.LoRAWeights, got {type(lora).__name__}; "
                    "for a LoRA trained in this notebook pass formats.from_model(pipe.unet), then "
                    "inject.remove_lora(pipe.unet).")


def _check_bare(pipe) -> None:
    """The explorers put their own LoRA into ``pipe.unet`` while they draw: it must hold none."""
    existing = next(inject.lora_layers(pipe.unet), None)
    if existing is not None:
        raise RuntimeError(f"pipe.unet already has LoRA layers (e.g. {existing[0]}): keep them with "
                           "weights = formats.from_model(pipe.unet), call inject.remove_lora(pipe.unet), "
                           "and pass the weights to the explorer.")


@contextmanager
def lora_applied(pipe, weights: formats.LoRAWeights, scale: float = 1.0):
    """``weights`` in ``pipe.unet`` at ``scale`` inside the ``with`` block; removed (bit-exactly) after it."""
    _check_bare(pipe)
    formats.apply_lora(pipe.unet, weights, scale)
    try:
        yield pipe
    finally:
        inject.remove_lora(pipe.unet)


def _scaling_text(weights: formats.LoRAWeights, alpha: float | None = None) -> str:
    alpha = weights.alpha if alpha is None else alpha
    return f"alpha/&radic;r = {alpha:g}/&radic;{weights.r}" if weights.use_rslora else f"alpha/r = {alpha:g}/{weights.r}"


@dataclass(frozen=True)
class ScaleView:
    """What the scale explorer shows for one (prompt, seed, scale)."""

    prompt: str
    seed: int
    scale: float  # the runtime multiplier ("LoRA weight" in A1111 and ComfyUI)
    scaling: float  # alpha / r of the LoRA (alpha / sqrt(r) with rsLoRA)
    multiplier: float  # scale * scaling: what multiplies B @ A in every layer
    image: Image.Image


class LoRAScaleExplorer(_Explorer):
    """A prompt, a seed and a scale slider over one LoRA; built by :func:`lora_scale_explorer`."""

    MAX_PANELS = 8

    def __init__(self, pipe, lora, prompt: str, seed: int = 0, scale: float = 1.0, **generate_kwargs):
        self._setup()
        _check_bare(pipe)
        self.pipe, self.weights, self.generate_kwargs = pipe, _as_weights(lora), generate_kwargs
        self.cache: dict[tuple[str, int, float], Image.Image] = {}  # (prompt, seed, scale) -> picture
        self.generations = 0  # pictures actually drawn (cache misses)
        self.shown: ScaleView | None = None
        self.figure: Figure | None = None
        self.strip: list[float] = []  # the scales of the figure's panels, left to right
        self._visited: list[float] = []
        self.prompt_box = ipywidgets.Text(value=prompt, description="prompt", continuous_update=False)
        self.seed_box = ipywidgets.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed")
        self.slider = ipywidgets.FloatSlider(value=scale, min=0.0, max=1.5, step=0.05, description="LoRA scale",
                                             continuous_update=False, readout_format=".2f")
        self.summary = ipywidgets.HTML()
        super().__init__([ipywidgets.HBox([self.prompt_box, self.seed_box]), self.slider, self.summary, self.output])
        self._watch(self.prompt_box, self.seed_box, self.slider)
        self.refresh()

    def image(self, prompt: str, seed: int, scale: float) -> Image.Image:
        """The picture of ``prompt`` and ``seed`` with the LoRA at ``scale``: drawn once, then cached."""
        key = (prompt, int(seed), round(float(scale), 4))
        if key not in self.cache:
            with lora_applied(self.pipe, self.weights, key[2]):
                self.cache[key] = sample.generate(self.pipe, prompt, key[1], **self.generate_kwargs)[0]
            self.generations += 1
        return self.cache[key]

    def view(self, prompt: str, seed: int, scale: float) -> ScaleView:
        scale = round(float(scale), 4)
        return ScaleView(prompt=prompt, seed=int(seed), scale=scale, scaling=self.weights.scaling,
                         multiplier=scale * self.weights.scaling, image=self.image(prompt, seed, scale))

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
        fig = self._draw(shown)
        self.shown, self.figure = shown, fig
        self.summary.value = (
            f"effective multiplier of B&middot;A = scale &times; {_scaling_text(self.weights)} = "
            f"{shown.scale:.2f} &times; {shown.scaling:.3g} = <b>{shown.multiplier:.3g}</b> in each of "
            f"{len(self.weights.modules)} layers &nbsp;|&nbsp; {len(self.cache)} pictures cached, "
            f"{self.generations} drawn")
        _show_figure(self.output, fig)

    def _draw(self, shown: ScaleView) -> Figure:
        fig, axes = plt.subplots(1, len(self.strip), figsize=(1.9 * len(self.strip), 2.3), squeeze=False,
                                 layout="constrained")
        for ax, scale in zip(axes[0], self.strip, strict=True):
            ax.imshow(self.cache[shown.prompt, shown.seed, scale])
            ax.set_xticks([])
            ax.set_yticks([])
            current = scale == shown.scale
            ax.set_title(f"scale {scale:.2f}\n(x{scale * shown.scaling:.3g})", fontsize=9,
                         color="tab:red" if current else "black", fontweight="bold" if current else "normal")
            for side in ax.spines.values():
                side.set(color="tab:red" if current else "0.8", linewidth=3 if current else 1)
        fig.suptitle(f"'{shown.prompt}', seed {shown.seed}", fontsize=10)
        return fig


def lora_scale_explorer(pipe, lora, prompt: str = styles.caption("blue", "circle"), seed: int = 0,
                        scale: float = 1.0, **generate_kwargs) -> LoRAScaleExplorer:
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


class RankAlphaExplorer(_Explorer):
    """A rank choice among trained LoRAs and an alpha slider; built by :func:`rank_alpha_explorer`."""

    def __init__(self, pipe, loras, combos: Sequence[tuple[str, str]] = styles.OUTLINE_HELD_OUT,
                 seeds: Sequence[int] = (0,), template: str = styles.TEMPLATE, style: str = "outline",
                 rank: int | None = None, alpha: float | None = None, max_alpha: float | None = None,
                 **generate_kwargs):
        self._setup()
        _check_bare(pipe)
        self.pipe, self.generate_kwargs = pipe, generate_kwargs
        self.loras: dict[int, formats.LoRAWeights] = {}
        self.file_bytes: dict[int, int | None] = {}
        for lora in (loras.values() if isinstance(loras, dict) else loras):
            weights = _as_weights(lora)
            if weights.r in self.loras:
                raise ValueError(f"two LoRAs of rank {weights.r}: give one LoRA per rank.")
            self.loras[weights.r] = weights
            self.file_bytes[weights.r] = None if isinstance(lora, formats.LoRAWeights) else Path(lora).stat().st_size
        if not self.loras:
            raise ValueError("rank_alpha_explorer needs at least one LoRA (a file or formats.LoRAWeights).")
        self.loras = dict(sorted(self.loras.items()))
        rank = next(iter(self.loras)) if rank is None else rank
        if rank not in self.loras:
            raise ValueError(f"no LoRA of rank {rank}: the ranks given are {list(self.loras)}.")
        self.combos, self.seeds, self.template, self.style = list(combos), list(seeds), template, style
        self.cells = [(template.format(colour=c, shape=s), seed) for c, s in self.combos for seed in self.seeds]
        self.cache: dict[tuple[int, float], RankAlphaView] = {}
        self.generations = 0  # sample.generate calls (one per new setting, and one for the base model)
        self.shown: RankAlphaView | None = None
        self.figure: Figure | None = None
        max_alpha = max_alpha or 2.0 * max(max(self.loras), *(w.alpha for w in self.loras.values()))
        self.rank_buttons = ipywidgets.ToggleButtons(options=[(f"r = {r}", r) for r in self.loras], value=rank,
                                                     description="rank")
        self.slider = ipywidgets.FloatSlider(value=alpha or self.loras[rank].alpha, min=0.5, max=max_alpha,
                                             step=0.5, description="alpha", continuous_update=False)
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
            records += metrics.evaluate_grid(lambda ps, ss: [drawn[p, s] for p, s in zip(ps, ss, strict=True)],
                                             colours=[colour], shapes=[shape], seeds=self.seeds,
                                             template=self.template, style=self.style).records
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
                rank=rank, alpha=key[1], trained_alpha=self.loras[rank].alpha, scaling=weights.scaling,
                images=images, grid=self._score(images),
                parameters=sum(weights.A[m].numel() + weights.B[m].numel() for m in weights.modules),
                file_bytes=self.file_bytes[rank])
        return self.cache[key]

    def refresh(self) -> None:
        self.updates += 1
        shown = self.view(self.rank_buttons.value, self.slider.value)
        fig = self._draw(shown)
        self.shown, self.figure = shown, fig
        size = "" if shown.file_bytes is None else f" &nbsp;|&nbsp; file {shown.file_bytes / 1e3:,.0f} KB"
        grid, base = shown.grid, self.base_grid
        self.summary.value = (
            f"<b>r = {shown.rank}, alpha = {shown.alpha:g}</b> (trained with {shown.trained_alpha:g}): "
            f"{_scaling_text(self.loras[shown.rank], shown.alpha)} = <b>{shown.scaling:.3g}</b>, "
            f"{shown.alpha / shown.trained_alpha:.3g}x the trained update &nbsp;|&nbsp; "
            f"{shown.parameters:,} parameters{size}<br>{self.style} {grid.style_rate:.0%} (base "
            f"{base.style_rate:.0%}), colour {grid.colour_accuracy:.0%} ({base.colour_accuracy:.0%}), "
            f"shape {grid.shape_accuracy:.0%} ({base.shape_accuracy:.0%}) on {len(self.cells)} pictures")
        _show_figure(self.output, fig)

    def _draw(self, shown: RankAlphaView) -> Figure:
        # Axes order (tests rely on it): the base row, the LoRA row, then the bar chart.
        n = len(self.cells)
        fig = plt.figure(figsize=(1.3 * n + 3.6, 3.2), layout="constrained")
        grid = fig.add_gridspec(2, n + 1, width_ratios=[1] * n + [max(2.5, 0.6 * n)])
        rows = [(self.base_images, "base"), (shown.images, f"r={shown.rank}\nalpha={shown.alpha:g}")]
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
        base_scores = [self.base_grid.style_rate, self.base_grid.colour_accuracy, self.base_grid.shape_accuracy]
        bars.bar(x + 0.2, lora_scores, width=0.4, color="tab:red", label="LoRA")
        bars.bar(x - 0.2, base_scores, width=0.4, color="0.7", label="base")
        bars.set(xticks=x, xticklabels=names, ylim=(0, 1.05), title=f"scaling {shown.scaling:.3g}")
        bars.legend(fontsize=7, loc="lower right")
        return fig


def rank_alpha_explorer(pipe, loras, combos: Sequence[tuple[str, str]] = styles.OUTLINE_HELD_OUT,
                        seeds: Sequence[int] = (0,), template: str = styles.TEMPLATE, style: str = "outline",
                        rank: int | None = None, alpha: float | None = None, max_alpha: float | None = None,
                        **generate_kwargs) -> RankAlphaExplorer:
    """Choose among LoRAs of several ranks and set their alpha: pictures, style figures, size.

    ``loras``: LoRA files (or ``formats.LoRAWeights``) of different ranks, a list or a dict by
    rank (``styles.train_or_load`` makes them). For each (rank, alpha) the explorer draws the
    prompts ``template`` of ``combos`` x ``seeds`` with that LoRA, its alpha replaced (so the
    update is multiplied by ``alpha / r``), scores them with ``lorakit.metrics`` (style rate,
    colour and shape accuracy, beside the base model's) and shows the LoRA's parameters and file
    size. Each setting is computed once; ``generate_kwargs`` go to ``sample.generate``.
    """
    return RankAlphaExplorer(pipe, loras, combos, seeds, template, style, rank, alpha, max_alpha, **generate_kwargs)


# --------------------------------------------------------------------------- the alpha ledger

PEFT_DEFAULT_ALPHA = 8.0  # peft.LoraConfig(lora_alpha=8)
KOHYA_DEFAULT_ALPHA = 1.0  # kohya sd-scripts, train_network.py --network_alpha (default 1)


@dataclass(frozen=True)
class AlphaLedger:
    """What multiplies B @ A for one (r, alpha) under each convention; ``alpha=None``: each tool's default."""

    r: int
    alpha: float | None
    peft: float  # alpha / r; PEFT's LoraConfig leaves alpha at 8
    rslora: float  # alpha / sqrt(r) (PEFT with use_rslora=True), alpha at 8 by default
    kohya: float  # stored alpha / r; kohya's trainer stores alpha = 1 unless told otherwise
    lorakit: float  # alpha / r with alpha = r by default (lorakit, diffusers' training scripts): 1

    def rows(self) -> list[tuple[str, float, str, float]]:
        """(convention, alpha used, formula, scaling) for a table."""
        given = self.alpha
        return [
            ("PEFT LoraConfig", PEFT_DEFAULT_ALPHA if given is None else given, "alpha / r", self.peft),
            ("rsLoRA (PEFT use_rslora=True)", PEFT_DEFAULT_ALPHA if given is None else given,
             "alpha / sqrt(r)", self.rslora),
            ("kohya sd-scripts (alpha in the file)", KOHYA_DEFAULT_ALPHA if given is None else given,
             "alpha / r", self.kohya),
            ("lorakit, diffusers' scripts", float(self.r) if given is None else given, "alpha / r", self.lorakit),
        ]


def alpha_ledger(r: int, alpha: float | None = None) -> AlphaLedger:
    """The scaling of B @ A for rank ``r`` and ``alpha`` in PEFT, rsLoRA, kohya and lorakit.

    With ``alpha`` given, PEFT, kohya and lorakit agree (alpha / r) and rsLoRA differs
    (alpha / sqrt(r)); with ``alpha=None`` each tool uses its own default alpha (PEFT 8,
    kohya 1, lorakit r), and the same r gives different strengths.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"r must be a positive integer, got {r!r}.")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be positive (or None for each tool's default), got {alpha!r}.")
    peft_alpha = PEFT_DEFAULT_ALPHA if alpha is None else float(alpha)
    return AlphaLedger(r=r, alpha=alpha, peft=peft_alpha / r, rslora=peft_alpha / math.sqrt(r),
                       kohya=(KOHYA_DEFAULT_ALPHA if alpha is None else float(alpha)) / r,
                       lorakit=1.0 if alpha is None else float(alpha) / r)


class AlphaLedgerExplorer(_Explorer):
    """Sliders for r and alpha over :func:`alpha_ledger`; built by :func:`alpha_ledger_explorer`."""

    def __init__(self, r: int = 4, alpha: float | None = None, max_rank: int = 128):
        self._setup()
        self.shown: AlphaLedger | None = None
        self.figure: Figure | None = None
        self.r_slider = ipywidgets.IntSlider(value=r, min=1, max=max_rank, description="rank r",
                                             continuous_update=False)
        self.slider = ipywidgets.FloatSlider(value=alpha or r, min=0.5, max=float(max_rank), step=0.5,
                                             description="alpha", continuous_update=False)
        self.defaults = ipywidgets.Checkbox(value=alpha is None, description="leave alpha out (tool defaults)")
        self.table = ipywidgets.HTML()
        super().__init__([ipywidgets.HBox([self.r_slider, self.slider, self.defaults]), self.table, self.output])
        self._watch(self.r_slider, self.slider, self.defaults)
        self.refresh()

    def refresh(self) -> None:
        self.updates += 1
        alpha = None if self.defaults.value else self.slider.value
        shown = alpha_ledger(self.r_slider.value, alpha)
        fig = self._draw(shown)
        self.shown, self.figure = shown, fig
        cells = "".join(f"<tr><td>{name}</td><td>{a:g}</td><td>{formula}</td><td><b>{s:.4g}</b></td></tr>"
                        for name, a, formula, s in shown.rows())
        self.table.value = (f"<table><tr><th>convention</th><th>alpha</th><th>scaling</th><th>r = {shown.r}</th>"
                            f"</tr>{cells}</table>")
        _show_figure(self.output, fig)

    def _draw(self, shown: AlphaLedger) -> Figure:
        ranks = np.unique(np.geomspace(1, max(self.r_slider.max, 2), 60).round().astype(int))
        curves = [alpha_ledger(int(k), shown.alpha) for k in ranks]
        fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
        for (name, *_), field in zip(shown.rows(), ("peft", "rslora", "kohya", "lorakit"), strict=True):
            line, = ax.plot(ranks, [getattr(c, field) for c in curves], label=name)
            ax.plot([shown.r], [getattr(shown, field)], "o", color=line.get_color())
        ax.axvline(shown.r, color="0.6", linestyle="--")
        alpha = "each tool's default" if shown.alpha is None else f"{shown.alpha:g}"
        ax.set(xscale="log", yscale="log", xlabel="rank r", ylabel="scaling of B A", title=f"alpha = {alpha}")
        ax.legend(fontsize=7)
        return fig


def alpha_ledger_explorer(r: int = 4, alpha: float | None = None, max_rank: int = 128) -> AlphaLedgerExplorer:
    """Sliders for r and alpha (or each tool's default alpha) and a table of :func:`alpha_ledger`."""
    return AlphaLedgerExplorer(r, alpha, max_rank)
