"""What lorakit says to a student, in the student's language: English, or Ukrainian.

Introduced in notebooks/01_low_rank_intuition.ipynb (its checks speak it).

:func:`say` takes a message as lorakit writes it in English and gives it in the language
``config.get_language()`` names: itself in English, the translation in ``lorakit/locale/uk.po``
in Ukrainian (a gettext catalogue, read with polib: ``msgid`` the English, ``msgstr`` the
Ukrainian). A message with ``{}`` fields is formatted after it is translated, so a translation
moves the figures where Ukrainian puts them. A message the catalogue lacks is said in English;
``tests/project/test_translations.py`` fails on any such message in the package.

Left out: the notebooks' own text (``translations/``, built by ``make translations``) and most
of lorakit's errors, which stay in English, as libraries' exceptions do (the refusals lessons
provoke on purpose are translated).
"""

from __future__ import annotations

import functools
from pathlib import Path

from lorakit import config

__all__ = ["LOCALE_DIR", "catalogue", "say"]

LOCALE_DIR = Path(__file__).resolve().parent / "locale"


@functools.lru_cache(maxsize=4)
def catalogue(language: str) -> dict[str, str]:
    """``{English: translation}`` of ``language`` (empty for English)."""
    if language == "en":
        return {}
    import polib

    po = polib.pofile(str(LOCALE_DIR / f"{language}.po"))
    return {e.msgid: e.msgstr for e in po if e.msgstr and "fuzzy" not in e.flags}


def say(message: str, **fields) -> str:
    """``message`` in the student's language, its ``{name}`` fields filled from ``fields``."""
    text = catalogue(config.get_language()).get(message, message)
    return text.format(**fields) if fields else text
