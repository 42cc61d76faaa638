"""The visible PASS/FAIL checks of the lessons: each prints one line, and a FAIL stops the run.

Introduced in notebooks/01_low_rank_intuition.ipynb; every lesson after it uses the same checks.

A check compares what a lesson (or a student's exercise) computed with a reference computed
another way (PEFT, diffusers, numpy, a brute-force search), prints ``PASS`` or ``FAIL`` with the
largest difference, and on ``FAIL`` raises :class:`CheckFailed`. Raising is the point: a check
that only prints cannot fail ``make test`` (nbval passes a cell that prints FAIL), and a student
who runs all cells should stop at the first thing that is wrong, not scroll past it. In a notebook
the error shows as its one FAIL line, without a traceback.

* :func:`close`: two arrays (tensors, numbers, lists) agree within ``tol``;
* :func:`same_pixels`: two pictures or stacks of pictures agree within ``tol`` levels;
* :func:`equal`: two values are equal (lists of names, counts, shapes);
* :func:`true`: a condition holds, with a line that says what was measured.

A check returns nothing: a check on a cell's last line shows no ``Out[]``, and nbgrader, which reads a
number in a graded cell's result as partial credit, sees none. :func:`max_difference` gives the figure.

Left out: the answers. A check never re-implements the exercise it checks; the reference is
passed in by the cell that calls it.
"""

from __future__ import annotations

import numpy as np


class CheckFailed(AssertionError):
    """A lesson's check found a difference larger than its tolerance."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"\x1b[31m{self}\x1b[0m"]


def _report(ok: bool, line: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {line}")
    if not ok:
        raise CheckFailed(f"FAIL  {line}")


def max_difference(got, want) -> float:
    """The largest absolute difference of two array-likes (``inf`` when their shapes differ)."""
    got = _as_array(got)
    want = _as_array(want)
    if got.shape != want.shape:
        return float("inf")
    if got.size == 0:
        return 0.0
    return float(np.abs(got - want).max())


def _as_array(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device and dtype
        value = value.detach().cpu().double().numpy()
    elif isinstance(value, (list, tuple)) and value and hasattr(value[0], "detach"):
        value = np.stack([v.detach().cpu().double().numpy() for v in value])
    elif isinstance(value, (list, tuple)) and value and hasattr(value[0], "getpixel"):  # PIL images
        value = np.stack([np.asarray(v) for v in value])
    elif hasattr(value, "getpixel"):
        value = np.asarray(value)
    return np.asarray(value, dtype=np.float64)


def close(name: str, got, want, tol: float = 0.0) -> None:
    """PASS when no value of ``got`` differs from ``want`` by more than ``tol``."""
    diff = max_difference(got, want)
    _report(diff <= tol, f"{name}: max |diff| = {diff:.2e} (tolerance {tol:.0e})")


def same_pixels(name: str, got, want, tol: float = 0) -> None:
    """PASS when no pixel channel of ``got`` differs from ``want`` by more than ``tol``.

    Pictures are PIL images or arrays (uint8 levels 0-255, or floats in [0, 1] from
    ``output_type="np"``); a list of them is one stack.
    """
    diff = max_difference(got, want)
    _report(diff <= tol, f"{name}: max |pixel diff| = {diff:.3g} (tolerance {tol:g})")


def equal(name: str, got, want) -> None:
    """PASS when ``got == want`` (for lists, shapes, counts); the line shows both when they differ."""
    ok = bool(got == want)
    shown = f"{got!r}" if ok else f"got {got!r}, want {want!r}"
    if len(shown) > 200:
        shown = shown[:197] + "..."
    _report(ok, f"{name}: {shown}")


def true(name: str, ok: bool, detail: str = "") -> None:
    """PASS when ``ok``; ``detail`` says what was measured (``"rank 3 of 128"``)."""
    _report(bool(ok), f"{name}{': ' + detail if detail else ''}")
