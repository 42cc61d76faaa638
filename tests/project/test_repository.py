"""The repository's promises: it speaks of the course alone, it stays light, and its licence is
the one the package declares."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Words about how the course was made, and folders of one machine: the repository speaks of the
# course alone.
# (Each pattern is split by a character class, so that this file does not match itself.)
FORBIDDEN = {
    "development words": r"\b[Ss]ession [0-9]|\b[Ss]essions [0-9]|\blent (H100|H200|GPU|machine)|"
    r"\b[d]evice time|"
    r"\bthe [i]ssue (expected|asks|says)|\b[Ii]ssue [0-9]|\b[t]his machine\b|\b[c]ourse machines\b|"
    r"\b[w]orkplace\b",
    "machine paths": r"(?<![\w.])/(tm[p]|wor[k]|roo[t])/|/hom[e]/[a-z]",
}
BINARY = (".safetensors", ".png", ".jpg", ".pt", ".bin")


def tracked_text_files() -> list[Path]:
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


def test_licence_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_committed_tiny_sd_is_small():
    size = sum(
        p.stat().st_size for p in (ROOT / "data" / "models" / "tiny-sd").rglob("*") if p.is_file()
    )
    assert size <= 25 * 1024 * 1024, f"the tiny SD takes {size / 2**20:.1f} MB; the budget is 25 MB"
