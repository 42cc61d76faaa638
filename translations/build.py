"""The Ukrainian edition, built from the English notebooks and a catalogue a notebook.

``make translations`` (``python translations/build.py``): for each lesson ``notebooks/NN_*.ipynb``
and each assignment's source, its catalogue ``translations/uk/[classroom/]NN_*.po`` (gettext, with
polib) holds one entry a cell: ``msgctxt`` the cell's id, ``msgid`` the English as it is now,
``msgstr`` its Ukrainian, the English's SHA-256 in a comment. The script brings each catalogue up
to date (a new cell gets an empty entry, a changed English cell a ``fuzzy`` one that keeps its old
translation to revise), then writes ``notebooks/uk/`` (``classroom/uk/source/``) for every
notebook whose catalogue is complete: the English, each cell's text replaced by its translation,
and one cell after the set-up cell that sets ``LORAKIT_LANG=uk``. A code cell's translation may
differ from the English only in comments and string text (``--check``; the tests hold all this).

Left out: machine translation (every ``msgstr`` is written by a person), nbgrader's student versions
(``make release`` makes them from ``classroom/uk/source``).
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import io
import json
import sys
import tokenize
from pathlib import Path

import polib

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = "uk"
CATALOGUES = ROOT / "translations" / LANGUAGE
OUT = ROOT / "notebooks" / LANGUAGE
LANGUAGE_CELL = {
    "cell_type": "code",
    "execution_count": None,
    "id": "uk-language",
    "metadata": {},
    "outputs": [],
    "source": [
        "import os\n",
        "\n",
        'os.environ["LORAKIT_LANG"] = "uk"  # перевірки й віджети lorakit говорять українською',
    ],
}


def lessons() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def assignments() -> list[Path]:
    """The assignments' source notebooks (nbgrader's ``classroom/source/<name>/<name>.ipynb``)."""
    return sorted((ROOT / "classroom" / "source").glob("*/[0-9][0-9]_*.ipynb"))


def is_assignment(notebook: Path) -> bool:
    return notebook.parent.parent.name == "source"


def catalogue_of(lesson: Path) -> Path:
    if is_assignment(lesson):
        return CATALOGUES / "classroom" / f"{lesson.stem}.po"
    return CATALOGUES / f"{lesson.stem}.po"


def output_of(notebook: Path) -> Path:
    """Where the Ukrainian notebook goes: ``notebooks/uk/``, or the Ukrainian classroom's source."""
    if is_assignment(notebook):
        return ROOT / "classroom" / LANGUAGE / "source" / notebook.parent.name / notebook.name
    return OUT / notebook.name


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cells(lesson: Path) -> list[dict]:
    return json.loads(lesson.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def update(lesson: Path) -> polib.POFile:
    """The lesson's catalogue brought up to date with its cells (not yet saved)."""
    path = catalogue_of(lesson)
    po = polib.pofile(str(path), wrapwidth=0) if path.exists() else polib.POFile(wrapwidth=0)
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Language": LANGUAGE}
    by_id = {e.msgctxt: e for e in po}
    entries = []
    for cell in cells(lesson):
        english = source(cell)
        entry = by_id.get(cell["id"]) or polib.POEntry(msgctxt=cell["id"], msgid=english, msgstr="")
        if entry.msgid != english:  # the English changed after it was translated
            entry.previous_msgid, entry.msgid = entry.msgid, english
            if entry.msgstr and "fuzzy" not in entry.flags:
                entry.flags.append("fuzzy")
        entry.comment = f"{cell['cell_type']} cell, English sha256 {sha(english)}"
        entries.append(entry)
    po[:] = entries
    return po


def tokens(code: str) -> list[str]:
    """A code cell's tokens, with every comment and every string's text left out."""
    shown = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.COMMENT:
                continue
            if tok.type == tokenize.STRING:
                shown.append(_string_fields(tok.string))
            elif tok.type not in (tokenize.NL, tokenize.ENCODING):
                shown.append(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):  # unreadable: compared whole
        return [code]
    return shown


class _NoText(ast.NodeTransformer):
    """An expression with the text of its string constants left out (a column's title in a field,
    ``f"{'rank':>6}"``, is text a student reads)."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return ast.Constant("") if isinstance(node.value, str) else node


def _string_fields(literal: str) -> str:
    """A string literal with its text left out: an f-string keeps its fields' code and specs."""
    node = ast.parse(literal, mode="eval").body
    if not isinstance(node, ast.JoinedStr):
        return "<string>"
    fields = [
        ast.unparse(_NoText().visit(v)) for v in node.values if isinstance(v, ast.FormattedValue)
    ]
    return f"<f-string {' | '.join(fields)}>"


def problems(lesson: Path) -> list[str]:
    """What keeps the lesson's catalogue from building a Ukrainian notebook equal in code."""
    path = catalogue_of(lesson)
    if not path.exists():
        return [f"{lesson.name}: no catalogue {path.relative_to(ROOT)} (run make translations)"]
    po, found = polib.pofile(str(path)), []
    by_id = {e.msgctxt: e for e in po}
    notebook_cells = cells(lesson)
    ids = [c["id"] for c in notebook_cells]
    found += [f"{lesson.name}: the catalogue has no cell {c}" for c in ids if c not in by_id]
    found += [
        f"{lesson.name}: the catalogue's cell {e.msgctxt} is gone"
        for e in po
        if e.msgctxt not in ids
    ]
    for cell in notebook_cells:
        entry, where = by_id.get(cell["id"]), f"{lesson.name} cell {cell['id']}"
        if entry is None:
            continue
        if entry.msgid != source(cell) or "fuzzy" in entry.flags:
            found.append(f"{where}: the English changed after its translation")
        elif not entry.msgstr:
            found.append(f"{where}: not translated")
        elif cell["cell_type"] == "code" and tokens(entry.msgstr) != tokens(entry.msgid):
            found.append(
                f"{where}: the code differs from the English (beyond comments and strings)"
            )
    return found


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def translated(lesson: Path) -> dict:
    """The Ukrainian notebook of ``lesson`` (its catalogue complete)."""
    notebook = json.loads(lesson.read_text())
    by_id = {e.msgctxt: e.msgstr for e in polib.pofile(str(catalogue_of(lesson)))}
    for cell in notebook["cells"]:
        cell["source"] = _lines(by_id[cell["id"]])
    first_code = next(i for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "code")
    notebook["cells"].insert(first_code + 1, copy.deepcopy(LANGUAGE_CELL))
    return notebook


def notebook_text(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is missing")
    args = parser.parse_args(argv)
    missing, documents = [], lessons() + assignments()
    for notebook in documents:
        if not args.check:
            catalogue_of(notebook).parent.mkdir(parents=True, exist_ok=True)
            update(notebook).save(str(catalogue_of(notebook)))
        found = problems(notebook)
        missing += found
        if not found and not args.check:
            output_of(notebook).parent.mkdir(parents=True, exist_ok=True)
            output_of(notebook).write_text(notebook_text(translated(notebook)))
    for line in missing:
        print(line)
    print(f"{len(documents)} notebooks, {len(missing)} cells to translate or revise")
    return 1 if missing and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
