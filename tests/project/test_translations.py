"""The Ukrainian edition stays in step with the English: every lesson's catalogue is complete and
current, the Ukrainian notebooks are what the catalogues build, their code is the English code, and
everything the package says to a student has its Ukrainian.

The checks themselves are tried on wrong catalogues (a changed English cell, a code translation
that renames a variable, a cell without its translation, a cell that is gone): each must be caught.
"""

import ast
import importlib.util
import json
import string

import polib
import pytest

from lorakit import checks, config, language

ROOT = config.REPO_ROOT
spec = importlib.util.spec_from_file_location("build", ROOT / "translations" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)
DOCUMENTS = build.lessons() + build.assignments()  # the lessons, then the assignments' sources


@pytest.mark.parametrize("lesson", DOCUMENTS, ids=lambda p: p.stem)
def test_the_catalogue_is_complete_and_current(lesson):
    found = build.problems(lesson)
    assert not found, "; ".join(found[:5]) + " (make translations, then translate the cells named)"


@pytest.mark.parametrize("lesson", DOCUMENTS, ids=lambda p: p.stem)
def test_the_ukrainian_notebook_is_what_the_catalogue_builds(lesson):
    if build.problems(lesson):
        pytest.skip("the catalogue is not complete (the test above says what is missing)")
    built = build.notebook_text(build.translated(lesson))
    committed = build.output_of(lesson)
    assert committed.is_file() and committed.read_text() == built, (
        f"{committed.relative_to(ROOT)} is not what {build.catalogue_of(lesson).relative_to(ROOT)} "
        "builds: run make translations"
    )
    notebook = json.loads(built)
    badge = (
        f"classroom/uk/release/{lesson.parent.name}/{lesson.name}"
        if build.is_assignment(lesson)
        else f"notebooks/uk/{lesson.name}"
    )
    assert badge in "".join(notebook["cells"][0]["source"])  # its Colab badge opens it
    sets = [c for c in notebook["cells"] if c["id"] == "uk-language"]
    assert len(sets) == 1 and 'LORAKIT_LANG"] = "uk"' in "".join(sets[0]["source"])


def _fields(text: str) -> set:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


def test_everything_the_package_says_has_its_ukrainian():
    said = set()
    for path in (ROOT / "lorakit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "say":
                if node.args and isinstance(node.args[0], ast.Constant):
                    said.add(node.args[0].value)
    assert len(said) > 20  # the checks' and the widgets' messages were found
    po = polib.pofile(str(language.LOCALE_DIR / "uk.po"))
    translated = {e.msgid: e.msgstr for e in po if e.msgstr}
    missing = sorted(said - set(translated))
    assert not missing, f"lorakit/locale/uk.po lacks {missing[:5]}"
    for english, ukrainian in translated.items():  # the same {fields}, or format() fails
        assert _fields(english) == _fields(ukrainian), english


def test_the_checks_speak_the_language_set(monkeypatch, capsys):
    monkeypatch.setenv("LORAKIT_LANG", "uk")
    checks.close("ранг", [1.0], [1.0], tol=1e-6)
    with pytest.raises(checks.CheckFailed, match="НЕ ПРОЙДЕНО  ранг: отримано 3, очікувалося 4"):
        checks.equal("ранг", 3, 4)
    assert capsys.readouterr().out.startswith("ПРОЙДЕНО  ранг: найбільша |різниця| = 0.00e+00")
    monkeypatch.setenv("LORAKIT_LANG", "en")
    with pytest.raises(checks.CheckFailed, match="FAIL  rank: got 3, want 4"):
        checks.equal("rank", 3, 4)
    monkeypatch.setenv("LORAKIT_LANG", "ua")  # not a language code lorakit knows
    with pytest.raises(ValueError, match="LORAKIT_LANG='ua': use one of en, uk"):
        config.get_language()


@pytest.fixture
def a_lesson(tmp_path, monkeypatch):
    """A two-cell lesson and its complete catalogue, in a scratch folder."""
    lesson = tmp_path / "99_scratch.ipynb"
    cells = [
        {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": ["# Lesson 99"]},
        {"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["rank = 4  # the rank\n", 'print(f"rank {rank}")']},
    ]  # fmt: skip
    lesson.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    monkeypatch.setattr(build, "CATALOGUES", tmp_path / "uk")
    (tmp_path / "uk").mkdir()
    po = build.update(lesson)
    po[0].msgstr = "# Урок 99"
    po[1].msgstr = 'rank = 4  # ранг\nprint(f"ранг {rank}")'
    po.save(str(build.catalogue_of(lesson)))
    return lesson


def test_a_complete_catalogue_passes_and_builds(a_lesson):
    assert build.problems(a_lesson) == []
    notebook = build.translated(a_lesson)
    assert [c["id"] for c in notebook["cells"]] == ["m1", "c1", "uk-language"]


@pytest.mark.parametrize(
    "wrong, caught",
    [
        ("english changed", "the English changed after its translation"),
        ("code renamed", "the code differs from the English"),
        ("field changed", "the code differs from the English"),
        ("not translated", "not translated"),
        ("cell gone", "the catalogue's cell c1 is gone"),
        ("cell new", "the catalogue has no cell c2"),
    ],
)
def test_drift_is_caught(a_lesson, wrong, caught):
    path = build.catalogue_of(a_lesson)
    po = polib.pofile(str(path))
    notebook = json.loads(a_lesson.read_text())
    if wrong == "english changed":
        notebook["cells"][0]["source"] = ["# Lesson 99, revised"]
        a_lesson.write_text(json.dumps(notebook))
        build.update(a_lesson).save(str(path))  # make translations marks it fuzzy
    elif wrong == "code renamed":
        po[1].msgstr = 'ранг = 4  # ранг\nprint(f"ранг {ранг}")'
    elif wrong == "field changed":
        po[1].msgstr = (
            'rank = 4  # ранг\nprint(f"ранг {rank + 1}")'.replace("{rank + 1}", "{rank}") + "\nrank"
        )
    elif wrong == "not translated":
        po[0].msgstr = ""
    elif wrong == "cell gone":
        notebook["cells"] = notebook["cells"][:1]
        a_lesson.write_text(json.dumps(notebook))
    elif wrong == "cell new":
        extra = dict(notebook["cells"][1], id="c2")
        notebook["cells"].append(extra)
        a_lesson.write_text(json.dumps(notebook))
    if wrong in ("code renamed", "field changed", "not translated"):
        po.save(str(path))
    assert any(caught in line for line in build.problems(a_lesson)), build.problems(a_lesson)
