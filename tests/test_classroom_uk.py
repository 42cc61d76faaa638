"""The Ukrainian assignments: their student versions are what nbgrader makes from the Ukrainian
sources today, and a teacher's loop in Ukrainian grades every untouched student version zero and,
on the three assignments that train nothing, the Ukrainian solution full points, cell by cell.

`make translations` builds the sources from the English ones (tests/project/test_translations.py
holds their code to the English); `make release`, the student versions.
"""

import importlib.util

import nbformat
import pytest

from lorakit import config

spec = importlib.util.spec_from_file_location(
    "grade_samples", config.REPO_ROOT / "classroom" / "grade_samples.py"
)
grade_samples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grade_samples)
UK = grade_samples.HERE / "uk"
GRADED = ["01_low_rank", "02_cross_attention", "03_inject_and_files"]  # seconds each, no training


def _sources_built() -> bool:
    return all((UK / "source" / a / f"{a}.ipynb").is_file() for a in grade_samples.assignments())


@pytest.fixture(scope="module")
def loop():
    if not _sources_built():
        pytest.skip("classroom/uk/source is not built (test_translations says what is missing)")
    extra = {
        a: {"solved": nbformat.read(UK / "source" / a / f"{a}.ipynb", as_version=4)} for a in GRADED
    }
    return grade_samples.grade(extra=extra, home=UK)


@pytest.mark.xdist_group("classroom-uk")
def test_the_ukrainian_release_is_what_generate_assignment_makes(loop):
    assert not loop["stale"], f"run make release: {loop['stale']}"
    for a in grade_samples.assignments():
        released = (UK / "release" / a / f"{a}.ipynb").read_text()
        assert all(score == 0 for score, _ in loop["scores"][a]["untouched"].values())
        assert "# ВАШ КОД ТУТ" in released and "# YOUR CODE HERE" not in released


@pytest.mark.xdist_group("classroom-uk")
@pytest.mark.parametrize("name", GRADED)
def test_the_ukrainian_solution_scores_full_points_and_the_untouched_version_zero(loop, name):
    scores = loop["scores"][name]
    solved, untouched = scores["solved"], scores["untouched"]
    assert solved and all(score == top for score, top in solved.values()), solved
    assert all(score == 0 for score, _ in untouched.values()), untouched
    assert loop["totals"][f"{name}/solved"] == sum(top for _, top in solved.values())
