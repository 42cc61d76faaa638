"""What every explorer shares: the redraw, the error report, and controls sized to be used.

Introduced in notebooks/01_low_rank_intuition.ipynb, with the first explorer.

An ``Explorer`` is an ``ipywidgets.VBox`` that counts its redraws (``.updates``), and whose
callbacks show an error in its output area, keep it (``.errors``) and raise it. ``slider`` and
``labelled`` make controls that redraw on release, wide enough to aim, their labels in full.

Left out: theming. Sizes are set in pixels and em, which JupyterLab 4 (ipywidgets 8) and Colab
(ipywidgets 7.7) both honour.
"""

from __future__ import annotations

import traceback

import ipywidgets
import matplotlib.pyplot as plt
from IPython.display import clear_output, display
from matplotlib.figure import Figure

__all__ = [
    "LABEL_STYLE",
    "SLIDER_LAYOUT",
    "Explorer",
    "labelled",
    "report_error",
    "show_figure",
    "slider",
]

# The default slider is about 120 px of track: one pixel is more than one rank in 200. These are
# wide enough to aim at a single step, with labels of up to about 12 characters in full.
SLIDER_LAYOUT = {"width": "95%", "max_width": "640px"}
LABEL_STYLE = {"description_width": "7em"}


def slider(kind: type[ipywidgets.Widget], **kwargs) -> ipywidgets.Widget:
    """An ``IntSlider`` or ``FloatSlider`` that redraws on release, wide enough to aim, its label
    in full."""
    return kind(
        continuous_update=False,
        layout=ipywidgets.Layout(**SLIDER_LAYOUT),
        style=dict(LABEL_STYLE),
        **kwargs,
    )


def labelled(kind: type[ipywidgets.Widget], **kwargs) -> ipywidgets.Widget:
    """Any other control (a text box, a checkbox, toggle buttons) with its label in full."""
    return kind(style=dict(LABEL_STYLE), **kwargs)


def show_figure(output: ipywidgets.Output, fig: Figure) -> None:
    """Replace what ``output`` shows with ``fig`` (inline backend), then free the figure."""
    with output:
        clear_output(wait=True)
        display(fig)
    plt.close(fig)


def report_error(output: ipywidgets.Output, error: Exception) -> None:
    """Print the traceback where the student is looking; the caller re-raises it."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    output.append_stderr(text)


class Explorer(ipywidgets.VBox):
    """What every explorer shares: a redraw counter, and callbacks whose errors are shown, kept and
    raised."""

    def _setup(self) -> None:
        self.updates = 0  # number of redraws: tests check one per widget change
        self.errors: list[Exception] = []  # every error raised inside a callback, in order
        self.output = ipywidgets.Output()

    def _callback(self, change) -> None:
        try:
            self.refresh()
        except Exception as error:
            self.errors.append(error)
            report_error(self.output, error)
            raise

    def _watch(self, *controls: ipywidgets.Widget) -> None:
        for control in controls:
            control.observe(self._callback, names="value")

    def refresh(self) -> None:
        raise NotImplementedError

    def _present(self, shown, summary: str) -> None:
        """Draw ``shown`` (the subclass's ``_draw``), keep it and its figure, and show both with
        ``summary``."""
        fig = self._draw(shown)
        self.shown, self.figure = shown, fig
        self.summary.value = summary
        show_figure(self.output, fig)
