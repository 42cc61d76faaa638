"""The project's own promises: set-up files agree, notebooks are committed clean and follow the lesson template."""

import json
import os
import re
import subprocess
import sys
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
    wanted = [
        requirement_name(r)
        for r in project["dependencies"] + project["optional-dependencies"]["dev"]
    ]
    listed = {
        requirement_name(line.lstrip(" -"))
        for line in (ROOT / "environment.yml").read_text().splitlines()
        if line.strip().startswith("- ") and not line.strip().startswith("- -e")
    }
    missing = [name for name in wanted if CONDA_NAMES.get(name, name) not in listed]
    assert not missing, f"environment.yml does not name {missing}"
    assert "-e .[dev]" in (ROOT / "environment.yml").read_text()


def test_torch_is_never_required_newer_than_the_course_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(r for r in project["dependencies"] if requirement_name(r) == "torch")
    assert ">" not in torch_req.replace(">=2.4", ""), torch_req
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert not any("ipywidgets>=8" in r for r in project["dependencies"]), (
        "Colab ships ipywidgets 7.7"
    )


def test_there_are_lessons():
    assert len(NOTEBOOKS) >= 2, "notebooks/ should hold the lessons"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_and_follows_the_template(path):
    notebook = json.loads(path.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    markdown = "\n".join(
        "".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown"
    )
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
    sources = "\n".join("".join(c["source"]) for c in code)
    assert "import *" not in sources
    assert not re.search(r"^\s*[%!]", sources, re.MULTILINE), "no magics outside the Colab cell"


def test_only_config_reads_lorakit_environment_variables():
    readers = [
        p.name
        for p in (ROOT / "lorakit").rglob("*.py")
        if "os.environ" in p.read_text() or "getenv" in p.read_text()
    ]
    assert readers == ["config.py"], readers


def test_committed_tiny_sd_is_small():
    size = sum(
        p.stat().st_size for p in (ROOT / "data" / "models" / "tiny-sd").rglob("*") if p.is_file()
    )
    assert size <= 25 * 1024 * 1024, f"the tiny SD takes {size / 2**20:.1f} MB; the budget is 25 MB"


# Words about how the course was made, and folders of one machine: the repository speaks of the course alone.
# (Each pattern is split by a character class, so that this file does not match itself.)
FORBIDDEN = {
    "development words": r"\b[Ss]ession [0-9]|\b[Ss]essions [0-9]|\blent (H100|H200|GPU|machine)|\b[d]evice time|"
    r"\bthe [i]ssue (expected|asks|says)|\b[Ii]ssue [0-9]|\b[t]his machine\b|\b[c]ourse machines\b|"
    r"\b[w]orkplace\b",
    "machine paths": r"(?<![\w.])/(tm[p]|wor[k]|roo[t])/|/hom[e]/[a-z]",
}
BINARY = (".safetensors", ".png", ".jpg", ".pt", ".bin")


def tracked_text_files() -> list[Path]:
    import subprocess

    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [ROOT / n.decode() for n in names if n and not n.decode().endswith(BINARY)]


@pytest.mark.parametrize("what", FORBIDDEN)
def test_the_repository_speaks_of_the_course_alone(what):
    pattern = re.compile(FORBIDDEN[what])
    hits = []
    for path in tracked_text_files():
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, f"{what} in tracked files:\n" + "\n".join(hits[:20])


def test_the_patterns_catch_what_they_are_for():
    words, paths = (
        re.compile(FORBIDDEN["development words"]),
        re.compile(FORBIDDEN["machine paths"]),
    )
    assert words.search("measured in sess" + "ion 5") and words.search("on the le" + "nt H100")
    assert paths.search("git clone x /" + "tmp/clone4") and paths.search(
        "/" + "work/main/README.md"
    )
    assert not paths.search("the Colab clone in /content/lorakit") and not words.search(
        "any machine"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_visible_check_goes_through_lorakit_checks(path):
    """A check that only prints FAIL passes nbval; lorakit.checks raises, so a failed check fails make test."""
    notebook = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert not re.search(r"""['"](PASS|FAIL)['"]""", code), (
        "print PASS/FAIL with lorakit.checks, which raises on FAIL"
    )
    assert "checks." in code, "every lesson checks what it computes"


def test_licence_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


PLUMBING = {
    "__init__",
    "data",
    "files",
    "_base",
    "maintainer",
    "pretrain",
}  # no lesson introduces these


def test_each_module_names_a_lesson_that_really_uses_it():
    """'Introduced in notebooks/NN' in a module's docstring: that lesson imports the module (or, for cli, runs the command)."""
    wrong = []
    for path in sorted((ROOT / "lorakit").rglob("*.py")):
        module = path.parent.name if path.parent.name == "widgets" else path.stem
        claim = re.search(r"[Ii]ntroduced in notebooks/(\d\d_\w+)\.ipynb", path.read_text())
        if claim is None:
            if path.stem not in PLUMBING and path.parent.name != "maintainer":
                wrong.append(f"{path.name}: names no lesson")
            continue
        notebook = json.loads((ROOT / "notebooks" / f"{claim.group(1)}.ipynb").read_text())
        code = "\n".join(
            "".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"
        )
        text = "\n".join("".join(c["source"]) for c in notebook["cells"])
        imports = re.findall(r"from lorakit import ([\w, ]+)", code)
        used = any(module in [n.strip() for n in line.split(",")] for line in imports)
        if module == "cli":
            used = "lorakit train" in text
        if not used:
            wrong.append(f"{path.relative_to(ROOT)}: {claim.group(1)} does not use it")
    assert not wrong, "\n".join(wrong)


def test_xdist_groups_keep_their_tests_on_one_worker(tmp_path):
    """`make test` relies on --dist loadgroup: each classroom assignment's loop runs once, on one worker."""
    (tmp_path / "test_groups.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.parametrize('n', [pytest.param(n, marks=pytest.mark.xdist_group(f'g{n}')) for n in range(2)])\n"
        "@pytest.mark.parametrize('k', range(4))\n"
        "def test_worker(n, k):\n"
        "    with open(os.environ['WHERE'], 'a') as f:\n"
        "        f.write(f\"{n} {os.environ['PYTEST_XDIST_WORKER']}\\n\")\n"
    )
    where = tmp_path / "where.txt"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            str(tmp_path / "test_groups.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "WHERE": str(where), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers: dict[str, set[str]] = {}
    for line in where.read_text().splitlines():
        group, worker = line.split()
        workers.setdefault(group, set()).add(worker)
    assert sorted(workers) == ["0", "1"] and all(len(w) == 1 for w in workers.values()), (
        f"xdist groups split over workers: {workers} (pytest-dev/pytest-xdist#1386 with pytest 9.2)"
    )
