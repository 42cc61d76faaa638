"""The teacher's loop, end to end, on the sample submissions: ``python classroom/grade_samples.py``.

In a scratch copy of this course directory it runs what a teacher runs
(``nbgrader generate_assignment``, ``nbgrader autograde``, which adds each student it has not
seen, ``nbgrader export``) on the submissions under
``tests/submissions/<assignment>/<student>.ipynb``, plus the untouched student version (the
student ``untouched``), and prints every student's score per graded cell and the CSV's total; a
``?`` marks a manually graded cell that waits for the teacher. It also checks that ``release/`` is
what ``generate_assignment`` makes from ``source/`` today. ``tests/test_classroom.py`` asserts the
scores; ``make assignments`` runs that test.
:func:`with_code` makes a submission with other code in some cells: a wrong answer to try on the
hidden tests, graded with the rest through ``grade(extra=...)``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUBMISSIONS = ROOT / "tests" / "submissions"


def assignments() -> list[str]:
    """The assignments in ``source/``, in order."""
    return sorted(p.name for p in (HERE / "source").iterdir() if p.is_dir())


def nbgrader(
    course: Path, *args: str, timeout_s: float | None = None
) -> subprocess.CompletedProcess:
    """``nbgrader ARGS`` in ``course``, with this Python's scripts first on PATH (nbgrader runs
    ``alembic``)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    extra = [f"--ExecutePreprocessor.timeout={timeout_s:g}"] if timeout_s is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args, *extra],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"nbgrader {' '.join(args)} failed (exit {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}"
        )
    return done


def student_view(path: Path) -> list[tuple[str, str, dict]]:
    """What a student sees of a notebook: each cell's type, source and nbgrader metadata (no ids,
    no outputs)."""
    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.source, c.metadata.get("nbgrader", {})) for c in nb.cells]


def stale_releases(course: Path, home: Path = HERE) -> list[str]:
    """Student versions in the repository's ``release/`` (``home``'s: the English course's, or
    ``uk/``) that differ from the ones just generated in ``course``."""
    stale = []
    for made in sorted((course / "release").rglob("*.ipynb")):
        committed = home / made.relative_to(course)
        if not committed.is_file() or student_view(committed) != student_view(made):
            stale.append(str(committed.relative_to(ROOT)))
    return stale


def with_code(path: Path, cells: dict) -> nbformat.NotebookNode:
    """The submission at ``path`` with other code in some cells, by ``grade_id``: the cell's new
    code, or a list of ``(old, new)`` replacements in its code (each ``old`` must be there). The
    cells keep their nbgrader metadata, so the grader reads them as the student's answers."""
    nb = nbformat.read(path, as_version=4)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    for grade_id, code in cells.items():
        if grade_id not in by_id:
            raise KeyError(f"{path} has no cell {grade_id!r}")
        cell = by_id[grade_id]
        if isinstance(code, str):
            cell.source = code.rstrip("\n")
            continue
        for old, new in code:
            if old not in cell.source:
                raise ValueError(f"{path}, cell {grade_id!r}: no {old!r} to replace")
            cell.source = cell.source.replace(old, new, 1)
    return nb


def left_to_the_teacher(course: Path, names: list[str]) -> dict:
    """The cells that still need a teacher's points after autograde, by assignment and student."""
    from nbgrader.api import Gradebook

    manual: dict = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in names:
            for submission in gb.assignment_submissions(name):
                manual.setdefault(name, {})[submission.student_id] = sorted(
                    g.name
                    for notebook in submission.notebooks
                    for g in notebook.grades
                    if g.needs_manual_grade
                )
    return manual


def give_marks(course: Path, marks: dict) -> None:
    """Record a teacher's points for manually graded cells, as the formgrader does
    (``manual_score``)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name, students in marks.items():
            for student, cells in students.items():
                notebook = next(iter(gb.find_submission(name, student).notebooks)).name
                for grade_id, points in cells.items():
                    cell = gb.find_grade(grade_id, notebook, name, student)
                    if not 0 <= points <= cell.max_score:
                        raise ValueError(
                            f"{name}/{student}/{grade_id}: {points} points, "
                            f"the cell has {cell.max_score:g}"
                        )
                    cell.manual_score, cell.needs_manual_grade = points, False
        gb.db.commit()


def submit(course: Path, name: str, extra: dict, samples: bool = True) -> None:
    """Put assignment ``name``'s submissions where autograde reads them: the untouched student
    version, every sample under ``tests/submissions/<name>/`` (unless ``samples`` is false), and
    ``extra`` ({student: notebook})."""
    released = next((course / "release" / name).glob("*.ipynb"))
    found = sorted((SUBMISSIONS / name).glob("*.ipynb")) if samples else []
    submitted = {
        "untouched": nbformat.read(released, as_version=4),
        **{p.stem: nbformat.read(p, as_version=4) for p in found},
        **extra,
    }
    for student, notebook in submitted.items():
        target = course / "submitted" / student / name
        target.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, target / released.name)


def read_scores(course: Path, names: list[str]) -> dict:
    """``{assignment: {student: {grade_id: (score, max)}}}`` from the course's gradebook."""
    from nbgrader.api import Gradebook

    scores: dict = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in names:
            for submission in gb.assignment_submissions(name):
                cells = scores.setdefault(name, {}).setdefault(submission.student_id, {})
                for notebook in submission.notebooks:
                    for g in notebook.grades:
                        cells[g.name] = (g.score, g.max_score)
    return scores


def grade(
    timeout_s: float | dict[str, float] | None = None,
    only: list[str] | None = None,
    marks: dict | None = None,
    extra: dict | None = None,
    home: Path = HERE,
) -> dict:
    """Run the loop: ``scores`` ({assignment: {student: {grade_id: (score, max)}}}), ``manual`` (the
    cells autograde left to the teacher: {assignment: {student: [grade_id, ...]}}), ``totals`` (the
    CSV's, by ``assignment/student``), ``stale`` (see :func:`stale_releases`) and ``logs``
    (autograde's output).

    ``timeout_s``: seconds a cell may run when graded, for every assignment or by assignment
    (default: ``nbgrader_config.py``'s). ``marks`` ({assignment: {student: {grade_id: points}}}):
    the teacher's points for manually graded cells, given after autograde and before export, as the
    formgrader gives them. ``extra`` ({assignment: {student: notebook}}): more submissions, graded
    with the samples in the same autograde run (see :func:`with_code`). ``home``: the course
    directory (``classroom/``, or the Ukrainian ``classroom/uk/``, graded without the English
    samples).
    """
    with tempfile.TemporaryDirectory() as scratch:
        course = Path(scratch) / "course"
        course.mkdir()
        shutil.copy(HERE / "nbgrader_config.py", scratch)  # what uk/nbgrader_config.py loads
        shutil.copy(home / "nbgrader_config.py", course)
        shutil.copytree(home / "source", course / "source")
        names = only or assignments()
        for name in names:
            nbgrader(course, "generate_assignment", name, "--force")
        stale = stale_releases(course, home)
        logs = {}
        for name in names:
            submit(course, name, (extra or {}).get(name, {}), samples=home == HERE)
            limit = timeout_s.get(name) if isinstance(timeout_s, dict) else timeout_s
            done = nbgrader(course, "autograde", name, "--force", timeout_s=limit)
            logs[name] = done.stdout + done.stderr
        manual = left_to_the_teacher(course, names)
        give_marks(course, marks or {})
        nbgrader(course, "export")
        with open(course / "grades.csv", newline="") as f:
            totals = {
                (row["assignment"], row["student_id"]): float(row["score"])
                for row in csv.DictReader(f)
            }
        return {
            "scores": read_scores(course, names),
            "manual": manual,
            "totals": {f"{a}/{s}": t for (a, s), t in totals.items()},
            "stale": stale,
            "logs": logs,
        }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "assignments", nargs="*", help="default: every assignment in classroom/source"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds a cell may run when graded (default: nbgrader_config.py's)",
    )
    parser.add_argument("--json", help="also write the scores here")
    args = parser.parse_args(argv)
    result = grade(args.timeout, args.assignments or None)
    for name, students in result["scores"].items():
        ids = sorted({g for cells in students.values() for g in cells})
        print(f"\n{name}: points per graded cell (CSV total last)")
        print(f"{'student':<14}" + "".join(f" {g[:18]:>18}" for g in ids) + f" {'total':>8}")
        for student, cells in sorted(students.items()):
            open_cells = result["manual"].get(name, {}).get(student, [])
            row = "".join(
                f" {'?' if g in open_cells else f'{cells[g][0]:g}':>8} of {cells[g][1]:<6g}"
                if g in cells
                else f" {'-':>18}"
                for g in ids
            )
            print(f"{student:<14}{row} {result['totals'][f'{name}/{student}']:>8g}")
    if any(cells for students in result["manual"].values() for cells in students.values()):
        print(
            "\n?: a manually graded cell, for the teacher to grade (nbgrader formgrader); "
            "0 in the CSV until then"
        )
    if result["stale"]:
        print(
            "\nrelease/ is out of date; regenerate it (docs/teaching.md):",
            ", ".join(result["stale"]),
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
