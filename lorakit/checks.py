"""The visible PASS/FAIL checks of the lessons: each prints one line, and a FAIL stops the run.

Introduced in notebooks/01_low_rank_intuition.ipynb; every lesson after it uses the same checks.

A check compares what a lesson (or a student's exercise) computed with a reference computed
another way (PEFT, diffusers, numpy), prints ``PASS`` or ``FAIL`` with the largest difference,
and on ``FAIL`` raises :class:`CheckFailed`: a check that only prints cannot fail ``make test``.
:func:`close` compares arrays, :func:`same_pixels` pictures, :func:`equal` values, :func:`true` a
condition; a check returns nothing (nbgrader sees no partial credit). :func:`forbidden` makes the
lorakit functions an exercise asks a student to write raise while the student's code runs (a
rename or an alias cannot reach them); :func:`record_calls` counts a function's calls, so that an
assignment knows its figures were measured.

Left out: the answers. A check never re-implements the exercise it checks; the reference is
passed in by the cell that calls it.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from lorakit.language import say

__all__ = [
    "CheckFailed",
    "close",
    "equal",
    "forbidden",
    "max_difference",
    "record_calls",
    "same_pixels",
    "true",
]


class CheckFailed(AssertionError):
    """A lesson's check found a difference larger than its tolerance."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"\x1b[31m{self}\x1b[0m"]


def _report(ok: bool, line: str) -> None:
    word = say("PASS") if ok else say("FAIL")
    print(f"{word}  {line}")
    if not ok:
        raise CheckFailed(f"{word}  {line}")


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
    measured = say("max |diff| = {diff} (tolerance {tol})", diff=f"{diff:.2e}", tol=f"{tol:.0e}")
    _report(diff <= tol, f"{name}: {measured}")


def same_pixels(name: str, got, want, tol: float = 0) -> None:
    """PASS when no pixel channel of ``got`` differs from ``want`` by more than ``tol``.

    Pictures are PIL images or arrays (uint8 levels 0-255, or floats in [0, 1] from
    ``output_type="np"``); a list of them is one stack.
    """
    diff = max_difference(got, want)
    measured = say(
        "max |pixel diff| = {diff} (tolerance {tol})", diff=f"{diff:.3g}", tol=f"{tol:g}"
    )
    _report(diff <= tol, f"{name}: {measured}")


def equal(name: str, got, want) -> None:
    """PASS when ``got == want`` (lists, shapes, counts); the line shows both when they differ."""
    ok = bool(got == want)
    shown = f"{got!r}" if ok else say("got {got}, want {want}", got=repr(got), want=repr(want))
    if len(shown) > 200:
        shown = shown[:197] + "..."
    _report(ok, f"{name}: {shown}")


def true(name: str, ok: bool, detail: str = "") -> None:
    """PASS when ``ok``; ``detail`` says what was measured (``"rank 3 of 128"``)."""
    _report(bool(ok), f"{name}{': ' + detail if detail else ''}")


# A function is made to raise (or to count its calls) by swapping its code for a stand-in's, so that
# every way of reaching it (an alias, a re-export, a method of a subclass) reaches the stand-in.
# The stand-ins by id: (code, what to do with the call's arguments).
_STAND_INS: dict[int, tuple[types.CodeType, Callable]] = {}
_TEMPLATES: dict[tuple[str, ...], types.CodeType] = {}


def _template(free: tuple[str, ...]) -> types.CodeType:
    """The code of a stand-in that hands its arguments to :func:`_stand_in`, with the free
    variables ``free`` (Python swaps a function's code only for code with as many)."""
    if free not in _TEMPLATES:
        names = ", ".join(free)
        lines = ["def outer():", f"    {names}, = {(None,) * len(free)!r}" if free else ""]
        lines += [
            "    def stand_in(*args, **kwargs):",  # binds no name but its arguments
            "        return __import__('lorakit.checks', fromlist=['_stand_in'])"
            "._stand_in(args, kwargs)",
            f"        {names}" if free else "",  # never runs: it makes the names free
            "    return stand_in",
        ]
        namespace: dict = {}
        exec("\n".join(line for line in lines if line), namespace)
        _TEMPLATES[free] = namespace["outer"]().__code__
    return _TEMPLATES[free]


def _stand_in(args: tuple, kwargs: dict):
    code = sys._getframe(1).f_code  # the stand-in's code says which function was called
    return _STAND_INS[id(code)][1](args, kwargs)


def _swap(function: types.FunctionType, action: Callable) -> Callable[[], None]:
    """Make every call of ``function`` call ``action(args, kwargs)``; returns what undoes it."""
    original = function.__code__
    code = _template(original.co_freevars).replace(
        co_name=original.co_name, co_qualname=original.co_qualname
    )
    _STAND_INS[id(code)] = (code, action)
    function.__code__ = code

    def undo() -> None:
        function.__code__ = original
        del _STAND_INS[id(code)]

    return undo


def _functions(what) -> dict[int, tuple[str, types.FunctionType]]:
    """The Python functions ``what`` stands for, by id: a module's (the functions and classes its
    ``__all__`` names, else those it defines), a class's (its own methods and properties), a
    function itself or the one a ``functools.partial`` calls; with the name a FAIL line gives
    each."""
    if isinstance(what, functools.partial):  # ``models.count_parameters``: the function it calls
        return _functions(what.func)
    if isinstance(what, types.FunctionType):
        return {id(what): (f"{what.__module__}.{what.__qualname__}", what)}
    found: dict[int, tuple[str, types.FunctionType]] = {}
    if isinstance(what, types.ModuleType):
        names = getattr(what, "__all__", None) or [
            n for n, v in vars(what).items() if getattr(v, "__module__", None) == what.__name__
        ]
        for value in (getattr(what, name) for name in names):
            if isinstance(value, type | types.FunctionType):
                found.update(_functions(value))
        return found
    if not isinstance(what, type):
        raise TypeError(
            f"checks.forbidden takes modules, classes and Python functions, not {what!r}."
        )
    for value in vars(what).values():
        for part in (value, *(getattr(value, a, None) for a in ("__func__", "fget", "fset"))):
            if isinstance(part, types.FunctionType):
                found[id(part)] = (f"{what.__module__}.{part.__qualname__}", part)
    return found


@contextmanager
def forbidden(*what, why: str = "this exercise asks you to write it yourself") -> Iterator[None]:
    """While the block runs, every function of ``what`` (modules, classes, functions) raises
    :class:`CheckFailed` with a FAIL line that names it, however it is reached.

    An assignment's hidden test calls the student's code in this block, with the lorakit
    functions the exercise asks for: ``with checks.forbidden(lowrank): got = best_rank_k(W, 2)``.
    A call that the student's code catches fails the block all the same when it ends.
    """
    called: list[str] = []

    def refuse(name: str) -> Callable:
        def action(args: tuple, kwargs: dict):
            called.append(name)
            _report(False, say("{name} was called: {why}", name=name, why=say(why)))

        return action

    functions = {key: found for w in what for key, found in _functions(w).items()}
    undo = [_swap(f, refuse(name)) for name, f in functions.values()]
    try:
        yield
    finally:
        for step in reversed(undo):
            step()
    if called:
        names = ", ".join(dict.fromkeys(called))
        _report(False, say("{name} was called: {why}", name=names, why=say(why)))


def record_calls(function: types.FunctionType) -> list:
    """From now on, each call of ``function``, however it is reached, appends what it returned to
    the list this returns (an assignment's setup cell counts the pictures the detectors judge)."""
    calls: list = []
    original = types.FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    original.__kwdefaults__ = function.__kwdefaults__

    def action(args: tuple, kwargs: dict):
        calls.append(original(*args, **kwargs))
        return calls[-1]

    _swap(function, action)
    return calls
