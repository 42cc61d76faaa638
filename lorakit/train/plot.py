"""The loss plot a run leaves in its output folder: ``loss.png``.

Introduced in notebooks/06_train_style_lora.ipynb.

:func:`save_loss_plot` draws the loss of every training step and, if the run measured one, the
fixed-seed validation loss, on a log scale, and writes the PNG atomically (``lorakit.files``). It
draws on a bare matplotlib ``Figure``, not pyplot: it needs no display and leaves a notebook's
own figures alone. The lesson draws its own plot, with a running mean, from ``result.history``.

Left out: running means and other smoothing, logging to a tracker.
"""

from __future__ import annotations

from pathlib import Path

from lorakit import files
from lorakit.train import training_run

__all__ = ["save_loss_plot"]


def save_loss_plot(result: training_run.TrainResult, path: str | Path) -> Path:
    """A PNG of the training loss (and the validation loss, if any) per step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(range(1, len(result.history) + 1), result.history, lw=0.8, label="training loss")
    if result.val_history:
        ax.plot(*zip(*result.val_history, strict=True), "o-", label="validation loss (fixed seed)")
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend()
    fig.tight_layout()
    return files.write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))
