"""`make test` runs one Ukrainian lesson end to end, so that the language switch itself runs (the
checks' lines, the widgets' labels, in Ukrainian). The other lessons' code is the English code,
which runs already; tests/project/test_translations.py holds them to it, cell by cell."""

from pathlib import Path

HERE = Path(__file__).parent
collect_ignore = [p.name for p in HERE.glob("*.ipynb") if not p.name.startswith("01_")]
