"""The house style, kept so: module and function sizes (the package's and the scripts' beside it),
module docstrings, public names across modules, imports in lesson order, one meaning a name, the
README's length.

Each rule is a function that reads source text and returns what breaks it; the tests run each on
the package, and on a small source that breaks it, so that a rule that can no longer fail is seen.
"""

import ast
import functools
import importlib
import re
from collections.abc import Collection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lorakit"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60
DOCSTRING_LINES = range(5, 16)
README_LIMIT = 10_000
NOT_A_LESSON = 99  # maintainer tools come after every lesson
LESSON = re.compile(r"Introduced in\s+notebooks/(\d\d)_\w+\.ipynb")
LEAVES_OUT = re.compile(r"[Ll]eft out|[Ll]eaves? out")


def dotted(path: Path) -> str:
    """lorakit/formats/load.py is lorakit.formats.load; lorakit/train/__init__.py, lorakit.train"""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {dotted(p): p.read_text() for p in MODULES}


def oversized(source: str) -> list[str]:
    """The module's length and every function's, where they pass the house's limits."""
    found = []
    if len(source.splitlines()) > MAX_MODULE_LINES:
        found.append(f"{len(source.splitlines())} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{node.name}() is {length} lines")
    return found


def docstring_problems(source: str) -> list[str]:
    doc = ast.get_docstring(ast.parse(source), clean=False)
    if doc is None:
        return ["no module docstring"]
    lines = len(doc.strip().splitlines())
    if lines not in DOCSTRING_LINES:
        return [f"a docstring of {lines} lines (5-15: what it covers and leaves out)"]
    if not LESSON.search(doc) and "Not a lesson's concept" not in doc:
        return ["the docstring names no lesson ('Introduced in notebooks/NN_...')"]
    if not LEAVES_OUT.search(doc):
        return ["the docstring does not say what the module leaves out ('Left out: ...')"]
    return []


@functools.cache  # each module's lesson is read once, however many modules import it
def lesson_of(source: str) -> int:
    found = LESSON.search(ast.get_docstring(ast.parse(source)) or "")
    return int(found.group(1)) if found else NOT_A_LESSON


def lorakit_imports(source: str, top_level_only: bool) -> list[tuple[str, str | None]]:
    """(module, name) of each lorakit import: ``from lorakit.x import y`` is ("lorakit.x", "y")."""
    tree = ast.parse(source)
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports under a top-level `if` or `try` still run at import time
        nodes = [
            n
            for top in tree.body
            if not isinstance(top, ast.FunctionDef | ast.ClassDef)
            for n in ast.walk(top)
        ]
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "lorakit":
                found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] == "lorakit"]
    return found


def target_module(module: str, name: str | None, known: Collection[str]) -> str:
    """The module an import loads: a submodule where ``name`` is one, else the module itself."""
    if name is not None and f"{module}.{name}" in known:
        return f"{module}.{name}"
    return module


def lesson_order_problems(module: str, sources: dict[str, str]) -> list[str]:
    """Imports at import time of modules that a later lesson introduces."""
    own = lesson_of(sources[module])
    is_package = any(m.startswith(module + ".") for m in sources)
    found = []
    for imported, name in lorakit_imports(sources[module], top_level_only=True):
        target = target_module(imported, name, sources.keys())
        if target == "lorakit" or (is_package and target.startswith(module + ".")):
            continue  # the top package; a package re-exporting its own files
        if target in sources and lesson_of(sources[target]) > own:
            found.append(f"imports {target} (lesson {lesson_of(sources[target])}) in lesson {own}")
    return found


def private_names_used(source: str, known: set[str]) -> list[str]:
    """``module._name`` or ``from lorakit.module import _name``: another module's private name."""
    tree = ast.parse(source)
    aliases = {}  # local name -> lorakit module
    found = []
    for module, name in lorakit_imports(source, top_level_only=False):
        if name is None:
            continue
        target = target_module(module, name, known)
        if target != module:
            aliases[name] = target
        elif name.startswith("_"):
            found.append(f"from {module} import {name}")
        if "._" in module:
            found.append(f"the private module {module}")
    for node in ast.walk(tree):
        for alias in getattr(node, "names", []):  # `from lorakit import shapes as world`
            if isinstance(node, ast.ImportFrom) and alias.asname and alias.name in aliases:
                aliases[alias.asname] = aliases[alias.name]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{aliases[node.value.id]}.{node.attr}")
    return found


def defined_names(source: str) -> set[str]:
    """Top-level functions and classes a module defines (not what it imports)."""
    return {
        n.name
        for n in ast.parse(source).body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and not n.name.startswith("__")  # a module's own __getattr__ is Python's hook, not a name
    }


def names_defined_twice(sources: dict[str, str]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for module, source in sources.items():
        for name in defined_names(source):
            where.setdefault(name, []).append(module)
    return {name: modules for name, modules in where.items() if len(modules) > 1}


KNOWN = set(SOURCES)
ALL_IMPORTS = {m: lorakit_imports(source, top_level_only=False) for m, source in SOURCES.items()}


# --- each rule on the package -------------------------------------------------------------------
@pytest.mark.parametrize("module", SOURCES)
def test_modules_and_functions_keep_their_size(module):
    assert not oversized(SOURCES[module]), f"{module}: {oversized(SOURCES[module])}"


# The scripts beside the package (the benchmarks, the docs' figures, the classroom's loop, the
# translations' build) keep the same sizes.
SCRIPTS = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "docs").glob("*.py")])
SCRIPTS += sorted([*(ROOT / "classroom").glob("*.py"), *(ROOT / "translations").glob("*.py")])


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_scripts_keep_the_same_sizes(path):
    assert not oversized(path.read_text()), f"{path.name}: {oversized(path.read_text())}"


@pytest.mark.parametrize("module", SOURCES)
def test_each_module_says_what_it_covers_and_its_lesson(module):
    assert not docstring_problems(SOURCES[module]), (
        f"{module}: {docstring_problems(SOURCES[module])}"
    )


@pytest.mark.parametrize("module", SOURCES)
def test_imports_follow_lesson_order(module):
    problems = lesson_order_problems(module, SOURCES)
    assert not problems, f"{module}: {problems}"


@pytest.mark.parametrize("module", SOURCES)
def test_no_private_name_is_used_across_modules(module):
    used = private_names_used(SOURCES[module], KNOWN)
    assert not used, f"{module} uses {used}: make what another module needs public, in __all__"


@pytest.mark.parametrize("module", SOURCES)
def test_what_other_modules_take_is_in_all(module):
    """Every lorakit module lists its public names in __all__; what others import is among them."""
    if module.endswith("__main__"):
        pytest.skip("running it is what `python -m` does")
    loaded = importlib.import_module(module)
    assert hasattr(loaded, "__all__"), f"{module} has no __all__"
    missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
    assert not missing, f"{module}.__all__ names {missing}, which it does not have"
    for other, imports in ALL_IMPORTS.items():
        for imported, name in imports:
            if imported == module and name and target_module(imported, name, KNOWN) == module:
                assert name in loaded.__all__, f"{other} imports {name}, not in {module}.__all__"


def test_one_name_one_meaning():
    assert not names_defined_twice(SOURCES), names_defined_twice(SOURCES)


def test_the_front_door_stays_short():
    size = len((ROOT / "README.md").read_text())
    assert size <= README_LIMIT, f"README.md has {size} characters; {README_LIMIT} at most"


def test_the_readme_names_every_module_of_the_package():
    readme = (ROOT / "README.md").read_text()
    names = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    names += [p.parent.name + "/" for p in PACKAGE.glob("*/__init__.py")]
    missing = [n for n in names if f"`{n}`" not in readme and f"`{n.rstrip('/')}`" not in readme]
    assert not missing, f"README.md's package table does not name {missing}"


def test_long_lines_are_not_waved_through():
    config = (ROOT / "pyproject.toml").read_text()
    ignored = re.search(r"ignore\s*=\s*\[([^\]]*)\]", config)
    assert ignored is None or "E501" not in ignored.group(1), "ruff must check line length"
    lambdas = [dotted(p) for p in MODULES if "noqa: E731" in p.read_text()]
    assert not lambdas, f"a def instead of a lambda with noqa in {lambdas}"


# --- each rule catches what it is for --------------------------------------------------------
BAD = {
    "lorakit.lora": '"""LoRA.\n\nIntroduced in notebooks/05_lora.ipynb.\n\nA\nLeft out: B\n"""\n'
    "from lorakit import train\nfrom lorakit.inject import _matches\nfrom lorakit import inject\n"
    "from lorakit.widgets._base import slider\n"
    "def f():\n    return inject._pattern\n" + "\n" * 300,
    "lorakit.train": '"""Train.\n\nIntroduced in notebooks/06_train.ipynb.\n\nA\nLeft out: B\n"""',
    "lorakit.inject": '"""Inject.\n\nIntroduced in notebooks/05_inject.ipynb.\n\nLeft out: B\n"""\n'
    "def style_prompts():\n    pass\n",
    "lorakit.claims": '"""Short."""\nimport lorakit.train\ndef style_prompts():\n'
    + "    x = 1\n" * 60,
}


def test_the_rules_catch_what_they_are_for():
    lora, claims = BAD["lorakit.lora"], BAD["lorakit.claims"]
    assert oversized(lora) == [f"{len(lora.splitlines())} lines"]
    assert oversized(claims) == ["style_prompts() is 61 lines"]
    assert docstring_problems(claims) and not docstring_problems(lora)
    silent = lora.replace("Left out: B", "B")
    assert docstring_problems(silent) == [
        "the docstring does not say what the module leaves out ('Left out: ...')"
    ]
    assert lesson_order_problems("lorakit.lora", BAD) == [
        "imports lorakit.train (lesson 6) in lesson 5"
    ]
    assert not lesson_order_problems("lorakit.claims", BAD)  # names no lesson: after them all
    assert private_names_used(lora, set(BAD)) == [
        "from lorakit.inject import _matches",
        "the private module lorakit.widgets._base",
        "lorakit.inject._pattern",
    ]
    assert names_defined_twice(BAD) == {"style_prompts": ["lorakit.inject", "lorakit.claims"]}
