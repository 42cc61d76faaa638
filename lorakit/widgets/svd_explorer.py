"""Lesson 01's explorer: a rank slider over the SVD of an image or a matrix.

Introduced in notebooks/01_low_rank_intuition.ipynb.

The SVDs (one per colour channel) are computed once, when the UI is built; each slider release
only multiplies the cached factors (``lowrank.reconstruct``). What it shows is what
``lorakit.lowrank`` computes: the relative error (Eckart-Young), the energy kept and the storage
ratio r(m+n)/mn.

Left out: interactive zoom, more than three channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from lorakit import lowrank
from lorakit.language import say
from lorakit.widgets.base import Explorer, slider

__all__ = ["SVDExplorer", "SVDView", "svd_explorer"]


@dataclass(frozen=True)
class SVDView:
    """What the SVD explorer shows for one rank (colour pictures are clipped to [0, 1] only when
    drawn)."""

    rank: int
    reconstruction: np.ndarray  # (m, n) or (m, n, 3), not clipped
    relative_error: float  # ||X - X_k||_F / ||X||_F over all channels
    energy_kept: float  # fraction of sum(S**2) kept, over all channels
    storage_ratio: float  # r(m + n) / (m n): numbers stored by rank r vs the full matrix


def _to_channels(image_or_matrix) -> tuple[torch.Tensor, bool]:
    """(C, m, n) float64 channels and whether the input is an image (shown in grey or colour)."""
    if hasattr(image_or_matrix, "convert") and hasattr(image_or_matrix, "size"):  # a PIL image
        image_or_matrix = np.array(
            image_or_matrix.convert("RGB" if image_or_matrix.mode != "L" else "L")
        )
    if not isinstance(image_or_matrix, torch.Tensor | np.ndarray):
        raise TypeError(
            "svd_explorer needs a PIL image, a numpy array or a torch tensor, got "
            f"{type(image_or_matrix).__name__}."
        )
    x = torch.as_tensor(image_or_matrix).detach().cpu()
    is_image = x.dtype == torch.uint8
    x = x.double() / 255.0 if is_image else x.double()
    if x.ndim == 2:
        return x.unsqueeze(0), is_image  # (1, m, n)
    if x.ndim == 3 and x.shape[-1] in (3, 4):
        return x[..., :3].permute(2, 0, 1), True  # (3, m, n): drop alpha, one SVD per channel
    raise ValueError(
        "svd_explorer needs a matrix (m, n) or an RGB image (m, n, 3), got shape "
        f"{tuple(x.shape)}; for a (3, m, n) tensor pass x.permute(1, 2, 0)."
    )


class SVDExplorer(Explorer):
    """A rank slider over cached per-channel SVDs; built by :func:`svd_explorer`."""

    def __init__(self, image_or_matrix, max_rank: int | None = None, rank: int | None = None):
        self._setup()
        channels, self.is_image = _to_channels(image_or_matrix)  # (C, m, n)
        _, self.m, self.n = channels.shape
        full_rank = min(self.m, self.n)
        max_rank = (
            full_rank if max_rank is None else lowrank.check_rank(max_rank, full_rank, "max_rank")
        )
        rank = (
            max(1, max_rank // 10)
            if rank is None
            else lowrank.check_rank(rank, max_rank, "rank", "max_rank")
        )

        self.original = channels.permute(1, 2, 0).squeeze(-1).numpy()  # (m, n) or (m, n, 3)
        self.factors = [lowrank.svd(c) for c in channels]  # the only SVDs: C x (U, S, Vh)
        squares = torch.stack([S.pow(2) for _, S, _ in self.factors])  # (C, p)
        self._energy = lowrank.energy(squares.sum(0).sqrt())  # (p,) pooled over channels
        if self.is_image:  # grey levels from black to white
            self._limits = (float(self.original.min()), float(self.original.max()))
        else:  # a weight: signed, so white is zero
            biggest = float(np.abs(self.original).max())
            self._limits = (-biggest, biggest)
        self.shown: SVDView | None = None
        self.figure: Figure | None = None

        self.slider = slider(
            ipywidgets.IntSlider, value=rank, min=1, max=max_rank, step=1, description=say("rank r")
        )
        self.summary = ipywidgets.HTML()
        super().__init__([self.slider, self.summary, self.output])
        self._watch(self.slider)
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
        self._present(
            shown,
            say(
                "<b>rank {rank}</b> of {full} &nbsp;|&nbsp; relative error {error} &nbsp;|&nbsp; "
                "energy kept {energy} &nbsp;|&nbsp; storage r(m+n)/mn = {storage}",
                rank=rank,
                full=min(self.m, self.n),
                error=f"{shown.relative_error:.2%}",
                energy=f"{shown.energy_kept:.2%}",
                storage=f"{shown.storage_ratio:.2%}",
            ),
        )

    def refresh(self) -> None:
        self.show(self.slider.value)

    def _draw(self, shown: SVDView) -> Figure:
        fig, (ax_in, ax_out, ax_energy) = plt.subplots(
            1, 3, figsize=(11, 3.6), width_ratios=[1, 1, 1.2], layout="constrained"
        )
        if self.original.ndim == 3:
            ax_in.imshow(np.clip(self.original, 0, 1))
            ax_out.imshow(np.clip(shown.reconstruction, 0, 1))
        else:
            style = {
                "cmap": "gray" if self.is_image else "RdBu_r",
                "vmin": self._limits[0],
                "vmax": self._limits[1],
            }
            ax_in.imshow(self.original, **style)
            ax_out.imshow(shown.reconstruction, **style)
        ax_in.set_title(say("original ({m} x {n})", m=self.m, n=self.n))
        ax_out.set_title(
            say("rank {rank}: error {error}", rank=shown.rank, error=f"{shown.relative_error:.1%}")
        )
        for ax in (ax_in, ax_out):
            ax.set_axis_off()
        ranks = np.arange(1, len(self._energy) + 1)
        ax_energy.plot(ranks, self._energy.numpy(), color="tab:blue")
        ax_energy.axvline(shown.rank, color="tab:red", linestyle="--")
        ax_energy.plot([shown.rank], [shown.energy_kept], "o", color="tab:red")
        ax_energy.set(
            xscale="log",
            ylim=(0, 1.02),
            xlabel=say("rank r"),
            ylabel=say("energy kept"),
            title=say(
                "energy kept {energy}, storage {storage}",
                energy=f"{shown.energy_kept:.1%}",
                storage=f"{shown.storage_ratio:.1%}",
            ),
        )
        return fig


def svd_explorer(
    image_or_matrix, max_rank: int | None = None, rank: int | None = None
) -> SVDExplorer:
    """A rank slider that shows the rank-r reconstruction, its error, energy kept and storage.

    ``image_or_matrix``: a PIL image, an (m, n, 3) uint8 or float RGB array in [0, 1] (one SVD per
    channel), an (m, n) uint8 grey image, or an (m, n) float matrix (a weight, say: drawn with a
    red-blue colour map, white at zero). ``max_rank`` caps the slider (default min(m, n)),
    ``rank`` is where it starts (default max_rank // 10). Display the result to use it;
    ``ui.slider.value = 5`` moves it from code and ``ui.shown`` holds the figures now shown.
    """
    return SVDExplorer(image_or_matrix, max_rank=max_rank, rank=rank)
