"""The visible PASS/FAIL checks of the lessons: each prints one line, and a FAIL stops the run.

Introduced in notebooks/01_low_rank_intuition.ipynb; every lesson after it uses the same checks.

A check compares what a lesson (or a student's exercise) computed with a reference computed
another way (PEFT, diffusers, numpy), prints ``PASS`` or ``FAIL`` with the largest difference,
and on ``FAIL`` raises :class:`CheckFailed`, shown in a notebook as its one FAIL line: a check that
only prints cannot fail ``make test`` (nbval passes a cell that prints FAIL). :func:`close`
compares arrays within ``tol``, :func:`same_pixels` pictures, :func:`equal` values, :func:`true`
a condition with what was measured. A check returns nothing (no ``Out[]``, and nbgrader sees no
partial credit); :func:`max_difference` gives the figure.

Left out: the answers. A check never re-implements the exercise it checks; the reference is
passed in by the cell that calls it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CheckFailed", "close", "equal", "max_difference", "same_pixels", "true"]


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
    """PASS when ``got == want`` (lists, shapes, counts); the line shows both when they differ."""
    ok = bool(got == want)
    shown = f"{got!r}" if ok else f"got {got!r}, want {want!r}"
    if len(shown) > 200:
        shown = shown[:197] + "..."
    _report(ok, f"{name}: {shown}")


def true(name: str, ok: bool, detail: str = "") -> None:
    """PASS when ``ok``; ``detail`` says what was measured (``"rank 3 of 128"``)."""
    _report(bool(ok), f"{name}{': ' + detail if detail else ''}")
