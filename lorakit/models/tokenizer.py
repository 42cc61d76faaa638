"""The tiny SD's tokenizer: a CLIP tokenizer whose vocabulary holds each word as one token.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

The words are the pretraining captions' (``CAPTION_WORDS``), trigger words reserved for lessons
that teach a new concept (``RESERVED_WORDS``: the tiny SD never saw them) and everyday words a
student may type (``EXTRA_WORDS``). Byte-pair merges are learned on that list (``learn_merges``,
CLIP style, deterministic), so applying them rebuilds every listed word whole; any other word
falls back to letters.

Left out: SD 1.5's real 49,408-token vocabulary (it comes with the model from the hub).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from transformers import CLIPTokenizer

from lorakit import shapes

__all__ = [
    "CAPTION_WORDS",
    "EXTRA_WORDS",
    "RESERVED_WORDS",
    "SPECIAL_TOKENS",
    "build_tokenizer",
    "learn_merges",
]

# Words of the pretraining captions, then words the tiny SD never saw: reserved trigger
# words for "new concept" lessons, and everyday words a student may type.
CAPTION_WORDS = ["a", *shapes.SIZES, *shapes.COLOURS, *shapes.SHAPES]
RESERVED_WORDS = ["sks", "ohwx", "zorb", "quill", "vex", "plim"]
EXTRA_WORDS = [
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "style",
    "outline",
    "outlined",
    "hollow",
] + ["filled", "drawing", "picture", "photo", "shape", "big", "tiny"]
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges learned on ``words`` (CLIP style: the last letter carries ``</w>``).

    Each round merges the most frequent adjacent pair, ties broken alphabetically, until every
    word is one symbol: deterministic, so the vocabulary is the same on every machine.
    """
    corpus = [tuple(word[:-1]) + (word[-1] + "</w>",) for word in dict.fromkeys(words)]
    merges = []
    while True:
        counts = Counter(
            pair for symbols in corpus for pair in zip(symbols, symbols[1:], strict=False)
        )
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        corpus = [_merge(symbols, best) for symbols in corpus]


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def build_tokenizer(words: list[str] | None = None) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose vocabulary holds each word as one token.

    The merges are learned on the word list itself (:func:`learn_merges`), so applying them
    rebuilds every listed word whole; any other word falls back to letters.
    """
    words = words or CAPTION_WORDS + RESERVED_WORDS + EXTRA_WORDS
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    merges = learn_merges(words)
    tokens = (
        letters + [f"{c}</w>" for c in letters] + [a + b for a, b in merges] + list(SPECIAL_TOKENS)
    )
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        tokenizer = CLIPTokenizer(
            str(vocab_file), str(merges_file), pad_token="<|endoftext|>", model_max_length=77
        )
    for word in words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(
                f"the tiny tokenizer splits {word!r} into {ids}: its merges are wrong."
            )
    return tokenizer
