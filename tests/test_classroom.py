"""The classroom half: nbgrader's conventions in every source notebook, and the teacher's whole loop
(generate, autograde, export) on the sample submissions, with the scores asserted, and on the
mistakes students make (tests/classroom_mistakes.py), each of which loses its cell's points."""

import ast
import importlib.util
import os
import re

import nbformat
import pytest

from lorakit import config

spec = importlib.util.spec_from_file_location(
    "grade_samples", config.REPO_ROOT / "classroom" / "grade_samples.py"
)
grade_samples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grade_samples)
spec = importlib.util.spec_from_file_location(
    "classroom_mistakes", config.REPO_ROOT / "tests" / "classroom_mistakes.py"
)
classroom_mistakes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(classroom_mistakes)
SOURCES = sorted((grade_samples.HERE / "source").glob("*/*.ipynb"))

# What each sample submission of an assignment is, and the points it must get per graded cell.
EXPECTED = {
    "01_low_rank": {
        "solved": {
            "best_rank_k_test": 3,
            "rank_for_energy_test": 2,
            "lora_param_count_test": 1,
            "lora_init_test": 2,
            "lora_scaling_test": 2,
            "lora_merge_test": 3,
        },
        "wrong_shape": {"best_rank_k_test": 0},  # returns W_k transposed
        "exception": {"rank_for_energy_test": 0},  # raises ZeroDivisionError
        "runs_forever": {
            "lora_merge_test": 0
        },  # merge() never returns: the cell is stopped, the rest graded
        # scaling = alpha (caught by the hidden tests of the cell it deleted, which nbgrader
        # grades 0, and by the merge test's alpha / r B A), and an edited setup cell that replaced
        # every check by a no-op: nbgrader puts the locked cell back, so the checks still run.
        "tampered": {"lora_scaling_test": 0, "lora_merge_test": 0},
    },
    "02_cross_attention": {
        "solved": {"my_cross_attention_test": 4, "attn2_table_test": 3, "token_map_test": 3},
        "no_scale": {"my_cross_attention_test": 0},  # softmax(Q K^T) without 1 / sqrt(d)
        "square_only": {
            "token_map_test": 0
        },  # no ValueError for a grid that is not square (a hidden test)
    },
    "03_inject_and_files": {
        "solved": {"wrap_test": 4, "count_test": 3, "kohya_test": 3},
        "up_down_swapped": {"kohya_test": 0},  # lora_down holds B: diffusers cannot load the file
        "self_attention_too": {
            "wrap_test": 0,
            "count_test": 0,
        },  # attn1 wrapped as well: 128 layers
    },
    "04_train_and_judge": {
        "solved": {"judge_test": 3, "style_test": 3, "content_test": 3, "rank_alpha_answer": 3},
        "too_weak": {
            "style_test": 0,
            "rank_alpha_answer": 0,
        },  # alpha 0.5 at rank 8: too faint to draw the style
        "over_budget": {
            "style_test": 0,
            "content_test": 0,
        },  # 600 steps: the locked train cell refuses to train
    },
    "05_small_study": {
        "solved": {"question": 2, "experiment": 3, "report_test": 1, "findings": 4},
        "typed_figures": {
            "experiment": 0,
            "report_test": 0,
            "findings": 1,
        },  # figures typed in, not measured
    },
}
# The points a teacher gives the written answers (the formgrader's manual grades), before the CSV
# is exported.
MARKS = {
    name: {
        student: {g: cells.get(g, EXPECTED[name]["solved"][g]) for g in by_hand}
        for student, cells in EXPECTED[name].items()
    }
    for name, by_hand in {
        "04_train_and_judge": ["rank_alpha_answer"],
        "05_small_study": ["question", "experiment", "findings"],
    }.items()
}


def packed_mistakes(name: str) -> dict:
    """Assignment ``name``'s mistakes, packed into as few submissions as keep them apart:
    {student: (cells' code, mistakes, cells that must score 0)}. Mistakes share a submission when
    they edit different cells and lose different cells, so that each 0 is its own mistake's."""
    packs: list[dict] = []
    for mistake, (code, loses) in classroom_mistakes.MISTAKES.get(name, {}).items():
        pack = next(
            (
                p
                for p in packs
                if not code.keys() & p["code"].keys() and not set(loses) & p["loses"]
            ),
            None,
        )
        if pack is None:
            pack = {"code": {}, "mistakes": [], "loses": set()}
            packs.append(pack)
        pack["code"].update(code)
        pack["mistakes"].append(mistake)
        pack["loses"].update(loses)
    code, loses = classroom_mistakes.FILLERS.get(name, ({}, []))
    for pack in packs:
        if not code.keys() & pack["code"].keys():
            pack["code"].update(code)
            pack["loses"].update(loses)
    return {
        f"mistakes_{i:02d}": (p["code"], p["mistakes"], p["loses"])
        for i, p in enumerate(packs, start=1)
    }


PACKED = {name: packed_mistakes(name) for name in EXPECTED}


def nbgrader_cells(nb):
    return [(c, c.metadata["nbgrader"]) for c in nb.cells if "nbgrader" in c.metadata]


def test_there_are_assignments_and_each_has_sample_submissions():
    assert SOURCES, "no classroom/source/*/*.ipynb"
    assert [p.parent.name for p in SOURCES] == grade_samples.assignments() == sorted(EXPECTED)
    for name in EXPECTED:
        assert set(EXPECTED[name]) <= {
            p.stem for p in (grade_samples.SUBMISSIONS / name).glob("*.ipynb")
        }


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.parent.name)
def test_source_follows_nbgrader_conventions(path):
    nb = nbformat.read(path, as_version=4)
    assert all("nbgrader" in c.metadata for c in nb.cells), (
        "every cell has nbgrader metadata (enforce_metadata)"
    )
    cells = nbgrader_cells(nb)
    ids = [m["grade_id"] for _, m in cells]
    assert len(ids) == len(set(ids)), "grade_id values are unique"
    for cell, m in cells:
        where = m["grade_id"]
        assert m["schema_version"] == 3, where
        if m["solution"] and cell.cell_type == "code":
            assert (
                cell.source.count("### BEGIN SOLUTION")
                == cell.source.count("### END SOLUTION")
                >= 1
            ), where
            assert not m["locked"], where
            assert not m["grade"] or m["points"] > 0, (
                f"{where}: a manually graded code cell has points"
            )
        elif m["solution"]:  # a written answer, graded by the teacher
            assert (
                cell.cell_type == "markdown" and m["grade"] and m["points"] > 0 and not m["locked"]
            ), where
            assert "### BEGIN" not in cell.source, where
        elif m["grade"]:  # an autograded test cell
            assert m["locked"] and m["points"] > 0, where
            assert (
                cell.source.count("### BEGIN HIDDEN TESTS")
                == cell.source.count("### END HIDDEN TESTS")
                == 1
            ), where
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            # A visible check never calls the reference that the exercise asks the student to write.
            assert not re.search(
                r"\blowrank\.|reference\.|lorakit import (lowrank|lora)\b", visible
            ), where
            last = ast.parse(cell.source).body[-1]
            # nbgrader reads a number in a graded cell's result as partial credit: no bare
            # expression last, except the course's checks and print, which return None.
            assert not isinstance(last, ast.Expr) or ast.unparse(last).startswith(
                ("checks.", "print(")
            ), where
        else:
            assert m["locked"], f"{where}: a cell the student is not asked to edit is read-only"
    assert sum(m.get("points", 0) for _, m in cells if m["grade"]) > 0


# A graded cell's time limit in the test, by assignment: the sample that loops forever
# (assignment 1) waits it out, and the slowest honest cell stays well inside it on a busy
# 2-core CPU (assignment 3 loads the tiny SD and runs its UNet; assignment 4 trains 30 steps
# under make test; assignment 5 draws 75 pictures).
TIMEOUT_S = {
    "01_low_rank": 30,
    "02_cross_attention": 30,
    "03_inject_and_files": 30,
    "04_train_and_judge": 150,
    "05_small_study": 150,
}


@pytest.fixture(scope="module")
def loop(request):
    """The teacher's loop on one assignment, the written answers marked as in ``MARKS``. Under
    `make test` each assignment is an xdist group, so the two workers share the five loops and each
    loop runs once."""
    name = request.param
    solved = grade_samples.SUBMISSIONS / name / "solved.ipynb"
    extra = {
        student: grade_samples.with_code(solved, code)
        for student, (code, _, _) in PACKED[name].items()
    }
    marks = {
        **MARKS.get(name, {}),
        **{student: MARKS[name]["solved"] for student in PACKED[name] if name in MARKS},
    }
    with pytest.MonkeyPatch.context() as env:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # Beside another worker, each kernel gets one thread (as `make test` sets): two torch
            # processes with a thread per core each slow each other down many times over, past the
            # cells' timeouts.
            env.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        return name, grade_samples.grade(
            timeout_s=TIMEOUT_S[name], only=[name], marks={name: marks}, extra={name: extra}
        )


# Each test of the loop, once per assignment (an xdist group: the assignment's tests and its loop
# on one worker).
by_assignment = pytest.mark.parametrize(
    "loop",
    [
        pytest.param(name, marks=pytest.mark.xdist_group(f"classroom-{name}"))
        for name in sorted(EXPECTED)
    ],
    indirect=True,
    scope="module",
)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_mistake_edits_answer_cells_and_aims_at_graded_cells(name):
    """Each mistake applies to today's solved sample (every replaced line is still there), edits
    only the student's cells and names autograded cells; each autograded cell has mistakes."""
    solved = grade_samples.SUBMISSIONS / name / "solved.ipynb"
    cells = [m for _, m in nbgrader_cells(nbformat.read(solved, as_version=4))]
    answers = {m["grade_id"] for m in cells if m["solution"]}
    autograded = {m["grade_id"] for m in cells if m["grade"] and not m["solution"]}
    aimed_at = set()
    for mistake, (code, loses) in classroom_mistakes.MISTAKES[name].items():
        assert code.keys() <= answers and set(loses) <= autograded and loses, mistake
        grade_samples.with_code(solved, code)
        aimed_at.update(loses)
    assert aimed_at == autograded
    for code, _, _ in PACKED[name].values():
        grade_samples.with_code(solved, code)


@by_assignment
def test_release_is_what_generate_assignment_makes_today(loop):
    _, result = loop
    assert not result["stale"], (
        f"classroom/release is out of date: {result['stale']}; run `make release` "
        "(nbgrader generate_assignment) and commit it"
    )


@by_assignment
def test_every_submission_is_graded_and_the_grade_csv_has_it(loop):
    name, result = loop
    assert set(result["scores"][name]) == {*EXPECTED[name], *PACKED[name], "untouched"}
    for student, cells in result["scores"][name].items():
        assert result["totals"][f"{name}/{student}"] == pytest.approx(
            sum(score for score, _ in cells.values())
        )


@by_assignment
def test_the_solution_scores_full_points_and_the_untouched_version_zero(loop):
    name, result = loop
    solved, untouched = result["scores"][name]["solved"], result["scores"][name]["untouched"]
    assert {g: score for g, (score, _) in solved.items()} == EXPECTED[name]["solved"]
    assert all(score == most for score, most in solved.values())
    assert untouched.keys() == solved.keys() and all(score == 0 for score, _ in untouched.values())


@by_assignment
def test_wrong_submissions_score_partial_points_cell_by_cell(loop):
    name, result = loop
    full = EXPECTED[name]["solved"]
    for student, wrong in EXPECTED[name].items():
        if student == "solved":
            continue
        got = {g: score for g, (score, _) in result["scores"][name][student].items()}
        assert got == {**full, **wrong}, student
        assert 0 < sum(got.values()) < sum(full.values()), student


@by_assignment
def test_every_mistake_loses_the_points_of_the_cell_that_grades_it(loop):
    """The mistakes of tests/classroom_mistakes.py, substituted for the solution: each cell a
    mistake aims at scores 0, and every other autograded cell keeps its full points."""
    name, result = loop
    full = {g: most for g, (_, most) in result["scores"][name]["solved"].items()}
    autograded = [g for g in full if g not in MARKS.get(name, {}).get("solved", {})]
    missed = []
    for student, (_, mistakes, loses) in PACKED[name].items():
        got = {g: score for g, (score, _) in result["scores"][name][student].items()}
        want = {g: 0 if g in loses else full[g] for g in autograded}
        if {g: got[g] for g in autograded} != want:
            missed.append(f"{student} ({'; '.join(mistakes)}): got {got}, want {want}")
    tried = sum(len(mistakes) for _, mistakes, _ in PACKED[name].values())
    print(
        f"{name}: {tried} mistakes in {len(PACKED[name])} submissions, {len(missed)} graded amiss"
    )
    assert not missed, "\n".join(missed)


@by_assignment
def test_written_answers_wait_for_the_teacher_unless_left_empty(loop):
    name, result = loop
    source = nbformat.read(
        next((grade_samples.HERE / "source" / name).glob("*.ipynb")), as_version=4
    )
    manual = sorted(
        m["grade_id"] for _, m in nbgrader_cells(source) if m["grade"] and m["solution"]
    )
    assert (
        sorted(MARKS.get(name, {}).get("solved", {})) == manual
    )  # the test marks every manually graded cell
    for student, waiting in result["manual"][name].items():
        # nbgrader gives an answer cell left as handed out 0 points itself; an answer written waits
        # for the teacher.
        answers = [g for g in waiting if g in manual]
        assert answers == ([] if student == "untouched" else manual), student
        # Beyond the answers, only a test cell the student deleted waits for the teacher: nbgrader
        # puts it back and flags it, so that a teacher sees it.
        flagged = [g for g in waiting if g not in manual]
        assert flagged == (
            ["lora_scaling_test"] if (name, student) == ("01_low_rank", "tampered") else []
        ), student


@by_assignment
def test_the_grader_says_what_it_did(loop):
    name, result = loop
    log = result["logs"][name]
    assert all(f"student with ID '{student}'" in log for student in result["scores"][name])
    if name != "01_low_rank":
        return
    tampered = log.split("student with ID 'tampered'")[1].split("student with ID")[0]
    assert (
        "Attribute 'checksum' for cell setup has changed" in tampered
    )  # the edited locked cell, put back
    forever = log.split("student with ID 'runs_forever'")[1].split("student with ID")[0]
    assert (
        f"Timeout waiting for execute reply ({TIMEOUT_S[name]}s)" in forever
        and "Interrupting kernel" in forever
    )
