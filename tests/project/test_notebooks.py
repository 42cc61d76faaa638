"""The lessons' promises: numbered without gaps and linked from the README, committed clean, in the
lesson template, every check through lorakit.checks, and each module's lesson really using it."""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
COMMANDS = re.compile(r"lorakit (train|sample|info|convert|resize|extract|merge)\b")


def sources(path: Path, kind: str | None = "code") -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if kind in (None, c["cell_type"]))


def test_the_lessons_are_numbered_without_gaps_and_each_is_in_the_readme():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)), f"lesson numbers {numbers}"
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (\d\d) \| \[[^\]]+\]\((notebooks/[^)]+)\)", readme, re.MULTILINE)
    assert rows == [(p.name[:2], f"notebooks/{p.name}") for p in NOTEBOOKS], "README's lesson table"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_and_follows_the_template(path):
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    markdown = sources(path, "markdown")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        "clear the outputs"
    )
    assert "colab-badge.svg" in markdown, "a Colab badge"
    assert "google.colab" in "".join(code[0]["source"]), (
        "the first code cell installs the course in Colab"
    )
    assert "You will learn" in markdown
    assert re.search(r"summary", markdown, re.IGNORECASE) and re.search(
        r"exercise", markdown, re.IGNORECASE
    )
    assert "import *" not in sources(path)
    assert not re.search(r"^\s*[%!]", sources(path), re.MULTILINE), (
        "no magics outside the Colab cell"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_visible_check_goes_through_lorakit_checks(path):
    """A check that only prints FAIL passes nbval; lorakit.checks raises: a FAIL fails make test."""
    code = sources(path)
    assert not re.search(r"""['"](PASS|FAIL)['"]""", code), (
        "print PASS/FAIL with lorakit.checks, which raises on FAIL"
    )
    assert "checks." in code, "every lesson checks what it computes"


def package_of(path: Path) -> str:
    """The name a lesson imports: lorakit/formats/kohya.py -> formats, lorakit/lora.py -> lora."""
    return path.relative_to(ROOT / "lorakit").parts[0].removesuffix(".py")


def imported_by(path: Path) -> set[str]:
    """The lorakit packages a module imports at import time (what it brings into a lesson)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lorakit"):
            parts = node.module.split(".")
            found |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
    return found


def lessons_uses(notebook: Path) -> set[str]:
    """The packages a lesson imports, and those they import in turn (one level)."""
    direct = set()
    for line in re.findall(r"from lorakit import ([\w, ]+)", sources(notebook)):
        direct |= {n.strip() for n in line.split(",")}
    used = set(direct)
    for name in direct:
        for path in [ROOT / "lorakit" / f"{name}.py", *(ROOT / "lorakit" / name).glob("*.py")]:
            if path.is_file():
                used |= imported_by(path)
    return used


def test_each_module_names_a_lesson_that_really_uses_it():
    """'Introduced in notebooks/NN': that lesson imports the module's package, or a package that
    needs it; for the command line, the lesson runs one of its commands."""
    wrong = []
    for path in sorted((ROOT / "lorakit").rglob("*.py")):
        claim = re.search(r"[Ii]ntroduced in\s+notebooks/(\d\d_\w+)\.ipynb", path.read_text())
        if claim is None:
            continue  # test_house.py holds every module to name a lesson or to say why not
        notebook = ROOT / "notebooks" / f"{claim.group(1)}.ipynb"
        if not notebook.is_file():
            wrong.append(f"{path.relative_to(ROOT)}: no lesson {claim.group(1)}")
        elif package_of(path) == "cli":
            if not COMMANDS.search(sources(notebook, kind=None)):
                wrong.append(f"{path.relative_to(ROOT)}: {claim.group(1)} runs no lorakit command")
        elif package_of(path) not in lessons_uses(notebook) | {"__init__"}:
            wrong.append(f"{path.relative_to(ROOT)}: {claim.group(1)} does not use it")
    assert not wrong, "\n".join(wrong)
