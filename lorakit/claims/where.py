"""Claim 1, where LoRA sits: the same budget on different layers of the UNet, or a full fine-tune.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`where_lora_sits` trains one of ``WHERE``'s variants (``attn2``, the article's place;
``attn1``; both; the feed-forward layers; ``attn2+ff``; every linear layer; or the whole UNet) for
one of two kinds of change: a drawing style (the outline set, judged on its held-out prompts) or a
new meaning for a word ("a red vex" for a red triangle, :func:`concept_prompts`). Both say whether
the model still draws its own plain prompts right.

Left out: the text encoder (claim 5, ``claims.many_kinds``), ranks other than the small preset's.
"""

from __future__ import annotations

from collections.abc import Sequence

from lorakit import shapes, styles, targets
from lorakit.claims import harness, judging

__all__ = ["WHERE", "concept_prompts", "where_lora_sits"]

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
        result |= {k: done[k] for k in ("train_seconds", "trainable_params")}
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
