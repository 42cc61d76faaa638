"""Trying the mistakes of tests/exercise_mistakes/ in a lesson's own kernel, after the lesson ran.

``MISTAKES[lesson][solution cell id]`` maps a mistake's name to new code for the solution
cell, or to ``(old, new)`` replacements in the solved code: the mistakes students make (zeros,
a transpose, a missing scale, an off-by-one rank, the lorakit function the exercise asks them
to write, a typed figure), each of which the exercise's check must stop.
``tests/exercise_mistakes/`` holds them, a file for a few lessons.

A lesson's exercise is a solution cell (``### BEGIN SOLUTION``) followed by the code cells that
check it, up to the next text cell. :func:`try_mistakes` puts each mistake in place of the
solution cell, runs the check cells, notes how they ended, and puts the right solution back, so
that the next exercise starts from the lesson's own state. ``tests/test_lessons_runtimes.py``
calls it in the kernel that has just run the whole lesson: no lesson runs again for its mistakes.
"""

import importlib.util
import re
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
MISTAKES: dict[str, dict[str, dict]] = {}
for part in sorted((HERE / "exercise_mistakes").glob("lessons_*.py")):
    spec = importlib.util.spec_from_file_location(part.stem, part)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    MISTAKES.update(module.MISTAKES)
PASSED = "passed"  # how a mistake ended when no check cell stopped it
TEACHING = HERE.parent / "docs" / "teaching.md"


def documented() -> dict[str, tuple[int, int, int, int]]:
    """docs/teaching.md's table of the lessons' mistakes: for each lesson, its exercises, the
    mistakes tried, those stopped by a FAIL line and those stopped by an error in the check."""
    rows = re.findall(r"^\| (\d\d) \| (\d+) \| (\d+) \| (\d+) \| (\d+)", TEACHING.read_text(), re.M)
    return {lesson: tuple(int(n) for n in counts) for lesson, *counts in rows}


def solution_cells(notebook) -> list[str]:
    """The ids of a lesson's solution cells, in order."""
    return [c.get("id") for c in notebook.cells if "### BEGIN SOLUTION" in c.source]


def wrong_source(source: str, edit) -> str:
    """The solution's source with a mistake in it: new code, or ``(old, new)`` replacements,
    each of which must find its ``old`` (a mistake never goes stale unnoticed)."""
    if isinstance(edit, str):
        return edit
    for old, new in edit:
        if old not in source:
            raise ValueError(f"the mistake's {old!r} is not in the solution any more")
        source = source.replace(old, new)
    return source


def check_cells(notebook, at: int) -> list:
    """The code cells after cell ``at`` up to the next text cell: the exercise's checks."""
    found = []
    for cell in notebook.cells[at + 1 :]:
        if cell.cell_type != "code":
            break
        found.append(cell)
    return found


def run(client, source: str, index: int) -> str | None:
    """Runs ``source`` as a cell of the kernel; the exception's name if it raised, else None."""
    try:
        client.execute_cell(nbformat.v4.new_code_cell(source), index)
    except CellExecutionError as error:
        return error.ename
    return None


def try_mistakes(client, notebook, lesson: str) -> dict[tuple[str, str], str]:
    """Each mistake of ``lesson`` in its exercise, in the kernel of ``client``; returns how each
    ended, by (solution cell id, mistake): the check's exception (``CheckFailed`` for a FAIL
    line), ``"solution raised X"`` when the wrong solution cell itself raised, or ``PASSED``."""
    ids = [c.get("id") for c in notebook.cells]
    ended = {}
    for cell_id, mistakes in MISTAKES.get(lesson, {}).items():
        at = ids.index(cell_id)
        right = notebook.cells[at].source
        for name, edit in mistakes.items():
            raised = run(client, wrong_source(right, edit), at)
            if raised:
                ended[cell_id, name] = f"solution raised {raised}"
            else:
                checks = (
                    run(client, c.source, at + 1 + i)
                    for i, c in enumerate(check_cells(notebook, at))
                )
                ended[cell_id, name] = next((e for e in checks if e), PASSED)
            assert run(client, right, at) is None, f"the right solution of {cell_id} raised"
    return ended
