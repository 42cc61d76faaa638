"""The classroom half: nbgrader's conventions in every source notebook, and the teacher's whole loop
(generate, autograde, export) on the sample submissions, with the scores asserted."""

import ast
import importlib.util
import re

import nbformat
import pytest

from lorakit import config

# One worker runs this whole file under `make test` (pytest-xdist's loadgroup), so the loop runs once.
pytestmark = pytest.mark.xdist_group("classroom")

spec = importlib.util.spec_from_file_location("grade_samples", config.REPO_ROOT / "classroom" / "grade_samples.py")
grade_samples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grade_samples)
SOURCES = sorted((grade_samples.HERE / "source").glob("*/*.ipynb"))

# What each sample submission of an assignment is, and the points it must get per graded cell.
EXPECTED = {
    "01_low_rank": {
        "solved": {"best_rank_k_test": 3, "rank_for_energy_test": 2, "lora_param_count_test": 1,
                   "lora_init_test": 2, "lora_scaling_test": 2, "lora_merge_test": 3},
        "wrong_shape": {"best_rank_k_test": 0},  # returns W_k transposed
        "exception": {"rank_for_energy_test": 0},  # raises ZeroDivisionError
        "runs_forever": {"lora_merge_test": 0},  # merge() never returns: the cell is stopped, the rest graded
        # scaling = alpha (caught by the hidden tests of the cell it deleted, which nbgrader grades 0), and an edited
        # setup cell that replaced every check by a no-op: nbgrader puts the locked cell back, so the checks still run.
        "tampered": {"lora_scaling_test": 0},
    },
    "02_cross_attention": {
        "solved": {"my_cross_attention_test": 4, "attn2_table_test": 3, "token_map_test": 3},
        "no_scale": {"my_cross_attention_test": 0},  # softmax(Q K^T) without 1 / sqrt(d)
        "square_only": {"token_map_test": 0},  # no ValueError for a grid that is not square (a hidden test)
    },
    "03_inject_and_files": {
        "solved": {"wrap_test": 4, "count_test": 3, "kohya_test": 3},
        "up_down_swapped": {"kohya_test": 0},  # lora_down holds B: diffusers cannot load the file
        "self_attention_too": {"wrap_test": 0, "count_test": 0},  # attn1 wrapped as well: 128 layers
    },
}


def nbgrader_cells(nb):
    return [(c, c.metadata["nbgrader"]) for c in nb.cells if "nbgrader" in c.metadata]


def test_there_are_assignments_and_each_has_sample_submissions():
    assert SOURCES, "no classroom/source/*/*.ipynb"
    assert [p.parent.name for p in SOURCES] == grade_samples.assignments() == sorted(EXPECTED)
    for name in EXPECTED:
        assert set(EXPECTED[name]) <= {p.stem for p in (grade_samples.SUBMISSIONS / name).glob("*.ipynb")}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.parent.name)
def test_source_follows_nbgrader_conventions(path):
    nb = nbformat.read(path, as_version=4)
    assert all("nbgrader" in c.metadata for c in nb.cells), "every cell has nbgrader metadata (enforce_metadata)"
    cells = nbgrader_cells(nb)
    ids = [m["grade_id"] for _, m in cells]
    assert len(ids) == len(set(ids)), "grade_id values are unique"
    for cell, m in cells:
        where = m["grade_id"]
        assert m["schema_version"] == 3, where
        if m["solution"] and cell.cell_type == "code":
            assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION") >= 1, where
            assert not m["locked"], where
        elif m["grade"]:  # an autograded test cell
            assert m["locked"] and m["points"] > 0, where
            assert cell.source.count("### BEGIN HIDDEN TESTS") == cell.source.count("### END HIDDEN TESTS") == 1, where
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            # A visible check never calls the reference that the exercise asks the student to write.
            assert not re.search(r"\blowrank\.|reference\.|lorakit import (lowrank|lora)\b", visible), where
            last = ast.parse(cell.source).body[-1]
            # nbgrader reads a number in a graded cell's result as partial credit: no bare expression last,
            # except the course's checks and print, which return None.
            assert not isinstance(last, ast.Expr) or ast.unparse(last).startswith(("checks.", "print(")), where
        else:
            assert m["locked"], f"{where}: a cell the student is not asked to edit is read-only"
    assert sum(m.get("points", 0) for _, m in cells if m["grade"]) > 0


# A graded cell's time limit in the test: the sample that loops forever waits it out, and the slowest honest
# cell (assignment 3 loads the tiny SD and runs its UNet) stays well inside it on a busy 2-core CPU.
TIMEOUT_S = 30


@pytest.fixture(scope="module")
def loop():
    """The teacher's loop on every assignment, with a ``TIMEOUT_S`` cell timeout."""
    return grade_samples.grade(timeout_s=TIMEOUT_S)


def test_release_is_what_generate_assignment_makes_today(loop):
    assert not loop["stale"], (f"classroom/release is out of date: {loop['stale']}; run `make release` "
                               "(nbgrader generate_assignment) and commit it")


def test_every_submission_is_graded_and_the_grade_csv_has_it(loop):
    for name, students in EXPECTED.items():
        assert set(loop["scores"][name]) == {*students, "untouched"}
        for student in loop["scores"][name]:
            cells = loop["scores"][name][student]
            assert loop["totals"][f"{name}/{student}"] == pytest.approx(sum(score for score, _ in cells.values()))


def test_the_solution_scores_full_points_and_the_untouched_version_zero(loop):
    for name, students in EXPECTED.items():
        solved, untouched = loop["scores"][name]["solved"], loop["scores"][name]["untouched"]
        assert {g: score for g, (score, _) in solved.items()} == students["solved"]
        assert all(score == most for score, most in solved.values())
        assert untouched.keys() == solved.keys() and all(score == 0 for score, _ in untouched.values())


def test_wrong_submissions_score_partial_points_cell_by_cell(loop):
    for name, students in EXPECTED.items():
        full = students["solved"]
        for student, wrong in students.items():
            if student == "solved":
                continue
            got = {g: score for g, (score, _) in loop["scores"][name][student].items()}
            assert got == {**full, **wrong}, student
            assert 0 < sum(got.values()) < sum(full.values()), student


def test_the_grader_says_what_it_did(loop):
    log = loop["logs"]["01_low_rank"]
    tampered = log.split("student with ID 'tampered'")[1].split("student with ID")[0]
    assert "Attribute 'checksum' for cell setup has changed" in tampered  # the edited locked cell, put back
    forever = log.split("student with ID 'runs_forever'")[1].split("student with ID")[0]
    assert f"Timeout waiting for execute reply ({TIMEOUT_S}s)" in forever and "Interrupting kernel" in forever
