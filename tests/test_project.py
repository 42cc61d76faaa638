"""The project's own promises: set-up files agree, notebooks are committed clean and follow the lesson template."""

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_every_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    listed = {requirement_name(line.lstrip(" -")) for line in (ROOT / "environment.yml").read_text().splitlines()
              if line.strip().startswith("- ") and not line.strip().startswith("- -e")}
    missing = [name for name in wanted if CONDA_NAMES.get(name, name) not in listed]
    assert not missing, f"environment.yml does not name {missing}"
    assert "-e .[dev]" in (ROOT / "environment.yml").read_text()


def test_torch_is_never_required_newer_than_the_course_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(r for r in project["dependencies"] if requirement_name(r) == "torch")
    assert ">" not in torch_req.replace(">=2.4", ""), torch_req
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert not any("ipywidgets>=8" in r for r in project["dependencies"]), "Colab ships ipywidgets 7.7"


def test_there_are_lessons():
    assert len(NOTEBOOKS) >= 2, "notebooks/ should hold the lessons"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_and_follows_the_template(path):
    notebook = json.loads(path.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    markdown = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "clear the outputs"
    assert "colab-badge.svg" in markdown, "a Colab badge"
    assert "google.colab" in "".join(code[0]["source"]), "the first code cell installs the course in Colab"
    assert "You will learn" in markdown
    assert re.search(r"summary", markdown, re.IGNORECASE) and re.search(r"exercise", markdown, re.IGNORECASE)
    sources = "\n".join("".join(c["source"]) for c in code)
    assert "import *" not in sources
    assert not re.search(r"^\s*[%!]", sources, re.MULTILINE), "no magics outside the Colab cell"


def test_only_config_reads_lorakit_environment_variables():
    readers = [p.name for p in (ROOT / "lorakit").glob("*.py")
               if "os.environ" in p.read_text() or "getenv" in p.read_text()]
    assert readers == ["config.py"], readers


def test_committed_tiny_sd_is_small():
    size = sum(p.stat().st_size for p in (ROOT / "data" / "models" / "tiny-sd").rglob("*") if p.is_file())
    assert size <= 25 * 1024 * 1024, f"the tiny SD takes {size / 2**20:.1f} MB; the budget is 25 MB"
