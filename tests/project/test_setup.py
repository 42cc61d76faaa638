"""The set-up's promises: the files that install the course agree, and the test run is what
`make test` says it is."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


def test_xdist_groups_keep_their_tests_on_one_worker(tmp_path):
    """`make test` relies on --dist loadgroup: each assignment's loop runs once, on one worker."""
    (tmp_path / "test_groups.py").write_text(
        "import os, pytest\n"
        "groups = [pytest.param(n, marks=pytest.mark.xdist_group(f'g{n}')) for n in range(2)]\n"
        "@pytest.mark.parametrize('n', groups)\n"
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
