"""Lesson 07's alpha ledger explorer: what one (r, alpha) means in PEFT, rsLoRA and kohya.

Introduced in notebooks/07_rank_alpha_lab.ipynb.

Sliders for r and alpha (or a box for each tool's default alpha) over ``lora.alpha_ledger``, the
arithmetic itself, which lives next to the scaling it describes (named here too): a table of the
four conventions' scalings at this r, and their curves over r.

Left out: the LoRAs themselves (the other explorers draw with them).
"""

from __future__ import annotations

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lorakit import lora
from lorakit.language import say
from lorakit.lora import KOHYA_DEFAULT_ALPHA, PEFT_DEFAULT_ALPHA, AlphaLedger, alpha_ledger
from lorakit.widgets.base import Explorer, show_figure, slider

__all__ = [
    "KOHYA_DEFAULT_ALPHA",
    "PEFT_DEFAULT_ALPHA",
    "AlphaLedger",
    "AlphaLedgerExplorer",
    "alpha_ledger",
    "alpha_ledger_explorer",
]


class AlphaLedgerExplorer(Explorer):
    """Sliders for r and alpha over :func:`alpha_ledger`; built by :func:`alpha_ledger_explorer`."""

    def __init__(self, r: int = 4, alpha: float | None = None, max_rank: int = 128):
        self._setup()
        self.shown: lora.AlphaLedger | None = None
        self.figure: Figure | None = None
        self.r_slider = slider(
            ipywidgets.IntSlider, value=r, min=1, max=max_rank, description=say("rank r")
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
            description=say("leave alpha out (each tool's default)"),
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
            f"<table><tr><th>{say('convention')}</th><th>alpha</th><th>{say('scaling')}</th>"
            f"<th>r = {shown.r}</th>"
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
        alpha = say("each tool's default") if shown.alpha is None else f"{shown.alpha:g}"
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=say("rank r"),
            ylabel=say("scaling of B A"),
            title=f"alpha = {alpha}",
        )
        ax.legend(fontsize=7)
        return fig


def alpha_ledger_explorer(
    r: int = 4, alpha: float | None = None, max_rank: int = 128
) -> AlphaLedgerExplorer:
    """Sliders for r and alpha (or each tool's default alpha), a table of :func:`alpha_ledger`."""
    return AlphaLedgerExplorer(r, alpha, max_rank)
