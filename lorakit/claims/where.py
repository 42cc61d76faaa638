"""Claim 1, where LoRA sits: the same budget on different layers of the UNet, or a full fine-tune.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`where_lora_sits` trains one of ``WHERE``'s variants (``attn2``, the article's place;
``attn1``; both; the feed-forward layers; ``attn2+ff``; every linear layer; or the whole UNet) for
one of two kinds of change: a drawing style (the outline set, judged on its held-out prompts) or a
new meaning for a word ("a red vex" for a red triangle, :func:`concept_prompts`). Both say whether
the model still draws its own plain prompts right. :func:`word_run` adds the control a new word
needs: a word no caption has (``CONTROL_WORD``) must not draw the new meaning too.

:func:`word_pictures` draws what each placement makes of both words, for a picture grid.

Left out: the text encoder (claim 5, ``claims.many_kinds``).
"""

from __future__ import annotations

from collections.abc import Sequence

from lorakit import shapes, styles, targets
from lorakit.claims import harness, judging

__all__ = [
    "CONTROL_WORD",
    "WHERE",
    "concept_prompts",
    "where_lora_sits",
    "word_base",
    "word_pictures",
    "word_run",
]

# a models.RESERVED_WORDS word no set uses: one token the tiny SD never saw, like "vex"
CONTROL_WORD = "quill"

# targets.PRESETS names, suffix lists, "linear": every linear layer of the UNet, "full": all of it.
WHERE = {
    "attn2": "attn2",
    "attn1": [f"attn1.{p}" for p in targets.PROJECTIONS],
    "attn1+attn2": "attn",
    "ff": list(targets.FEED_FORWARD),
    "attn2+ff": "attn2+ff",
    "every linear": "linear",
    "full fine-tune": "full",
}


def concept_prompts(word: str = styles.CONCEPT_WORD) -> list[str]:
    """ "a red vex", "a green vex", ...: ``word`` in every colour."""
    return [f"a {c} {word}" for c in shapes.COLOURS]


def where_lora_sits(
    variant: str = "attn2",
    task: str = "style",
    seed: int = 0,
    steps: int = 300,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """Claim 1, one run: train ``variant`` (a key of ``WHERE``) on ``task`` for ``steps``, then
    judge it.

    ``task="style"``: the outline set, judged on the held-out prompts (style rate, content).
    ``task="concept"``: "a red vex" for red triangles and so on (``styles.concept_examples``): how
    often "a <colour> vex" draws a triangle, and of its colour. Both: whether the plain prompts
    stay right and filled.
    """
    if variant not in WHERE:
        raise ValueError(f"no variant {variant!r}: use one of {', '.join(WHERE)}.")
    if task not in ("style", "concept"):
        raise ValueError(f"no task {task!r}: use 'style' or 'concept'.")
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        if task == "style":
            dataset = harness.style_set()
        else:
            dataset = harness.pairs_set(styles.concept_examples())
        result = {"variant": variant, "task": task, "seed": seed, "steps": steps}
        done = harness.fit(pipe, dataset, WHERE[variant], seed=seed, steps=steps)
        result |= {k: done[k] for k in ("train_seconds", "trainable_params", "settings")}
        result |= judging.kept(pipe, seeds)
        if task == "style":
            found = judging.judge(pipe, styles.style_prompts(), seeds)
            result |= {"style_rate": found.style_rate, "content": found.both_accuracy}
        else:
            images, asked = judging.draw(pipe, concept_prompts(), seeds)
            # a triangle: the base shapes
            rates = judging.read_all(images, asked, shape=styles.CONCEPT_SHAPE, every=False)
            result |= {"concept_shape": rates["shape"], "concept_colour": rates["colour"]}
    return result


def _triangles(pipe, word: str, seeds: Sequence[int]) -> float:
    """How often "a <colour> <word>" draws a triangle (the base shapes' detectors)."""
    images, asked = judging.draw(pipe, concept_prompts(word), seeds)
    return judging.read_all(images, asked, shape=styles.CONCEPT_SHAPE, every=False)["shape"]


def word_base(pipe=None, seeds: Sequence[int] = judging.EVAL_SEEDS) -> dict:
    """The untrained tiny SD's triangle rates for the new word and for the control word."""
    pipe = harness.load(pipe)
    return {
        "word_shape": _triangles(pipe, styles.CONCEPT_WORD, seeds),
        "control_shape": _triangles(pipe, CONTROL_WORD, seeds),
    }


def word_run(
    variant: str = "attn2",
    r: int = 8,
    seed: int = 0,
    steps: int = 100,
    caption_dropout: float | None = None,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """Claim 1 with its control: teach "a red vex" for red triangles at ``variant`` (rank ``r``;
    ``caption_dropout`` over the preset's), then how often "a <colour> vex" draws a triangle and
    how often the control word does ("a <colour> quill", in no training caption). Their difference,
    ``specific``, is what the word learnt, not triangles drawn for any prompt."""
    if variant not in WHERE:
        raise ValueError(f"no variant {variant!r}: use one of {', '.join(WHERE)}.")
    extra = {} if caption_dropout is None else {"caption_dropout": caption_dropout}
    pipe = harness.load(pipe)
    with harness.restored(pipe):
        dataset = harness.pairs_set(styles.concept_examples())
        done = harness.fit(pipe, dataset, WHERE[variant], r=r, seed=seed, steps=steps, **extra)
        word = _triangles(pipe, styles.CONCEPT_WORD, seeds)
        control = _triangles(pipe, CONTROL_WORD, seeds)
        return {
            "variant": variant,
            "r": r,
            "seed": seed,
            "caption_dropout": caption_dropout,
            "word_shape": word,
            "control_shape": control,
            "specific": word - control,
            **judging.kept(pipe, seeds),
            "trainable_params": done["trainable_params"],
            "settings": done["settings"],
            "train_seconds": done["train_seconds"],
        }


def word_pictures(
    variant: str | None = "attn2",
    r: int = 8,
    seed: int = 0,
    steps: int = 100,
    pipe=None,
    picture_seed: int = 0,
) -> dict:
    """Claim 1's pictures: after teaching "vex" at ``variant`` as :func:`word_run` does (None: the
    untrained model), "a <colour> vex" and "a <colour> quill" in every colour, at one noise seed;
    ``{prompt: picture}``."""
    if variant is not None and variant not in WHERE:
        raise ValueError(f"no variant {variant!r}: use one of {', '.join(WHERE)}, or None.")
    pipe = harness.load(pipe)
    prompts = concept_prompts() + concept_prompts(CONTROL_WORD)
    with harness.restored(pipe):
        if variant is not None:
            dataset = harness.pairs_set(styles.concept_examples())
            harness.fit(pipe, dataset, WHERE[variant], r=r, seed=seed, steps=steps)
        images, asked = judging.draw(pipe, prompts, (picture_seed,))
    return dict(zip(asked, images, strict=True))
