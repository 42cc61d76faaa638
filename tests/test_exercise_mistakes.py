"""Every exercise of every lesson has its mistakes, and each mistake still applies to the solution
it edits (the mistakes themselves are tried in tests/test_lessons_runtimes.py)."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "lesson_exercises", ROOT / "tests" / "lesson_exercises.py"
)
lesson_exercises = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lesson_exercises)
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FEWEST = 3  # mistakes an exercise's check is tried with, at the least


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_every_exercise_has_mistakes_that_apply(path):
    notebook = nbformat.read(path, as_version=4)
    solutions = lesson_exercises.solution_cells(notebook)
    mistakes = lesson_exercises.MISTAKES.get(path.name[:2], {})
    assert solutions, f"{path.name} has exercises"
    assert sorted(mistakes) == sorted(solutions), "a mistake for every exercise, and no other cell"
    cells = {c.get("id"): c for c in notebook.cells}
    for cell_id, wrong in mistakes.items():
        assert len(wrong) >= FEWEST, f"{cell_id}: {len(wrong)} mistakes"
        assert lesson_exercises.check_cells(notebook, list(cells).index(cell_id)), cell_id
        for name, edit in wrong.items():
            assert (
                lesson_exercises.wrong_source(cells[cell_id].source, edit) != cells[cell_id].source
            ), name


def test_the_teachers_guide_counts_the_exercises_and_mistakes_there_are():
    table = lesson_exercises.documented()
    assert sorted(table) == [p.name[:2] for p in LESSONS]
    for path in LESSONS:
        mistakes = lesson_exercises.MISTAKES[path.name[:2]]
        exercises, tried, by_fail, by_error = table[path.name[:2]]
        assert (exercises, tried) == (len(mistakes), sum(len(m) for m in mistakes.values()))
        assert by_fail + by_error == tried


def test_a_stale_mistake_is_refused():
    with pytest.raises(ValueError, match="not in the solution any more"):
        lesson_exercises.wrong_source("return B @ A", [("A @ B", "B @ A")])
