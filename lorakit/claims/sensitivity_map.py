"""Claim 9, sensitivity to the settings: the outline LoRA over learning rate x rank x alpha.

Introduced in notebooks/10_claims_limitations.ipynb.

:func:`sensitivity` is one point of the map: the small preset's outline LoRA at a learning rate, a
rank and an alpha, judged on the held-out prompts (with the trigger) and the plain ones. A run
whose loss or pictures became NaN is kept, as "diverged". :func:`outcome` names each point: "style
learned" when it reaches every floor of ``SAFE``, "nothing learned", "content destroyed", "NaN" or
"partial".

Left out: the map itself (the benchmark's, ``--claim 9``), other optimizers and schedules.
"""

from __future__ import annotations

from collections.abc import Sequence

from lorakit import styles
from lorakit.claims import harness, judging

__all__ = ["DIVERGED_RUN", "SAFE", "outcome", "sensitivity"]

# a run that reaches all three learned the style and kept the content, with and without the trigger
SAFE = {"style_rate": 0.6, "content": 0.6, "plain_content": 0.6}
DIVERGED_RUN = {
    "diverged": True,
    "style_rate": 0.0,
    "content": 0.0,
    "plain_content": 0.0,
    "plain_outline": 0.0,
    "final_loss": float("nan"),
}  # what a run that became NaN records


def outcome(run: dict) -> str:
    """Name a claim-9 run: "NaN", "content destroyed", "nothing learned", "style learned" or
    "partial"."""
    if run.get("diverged"):
        return "NaN"
    if run["content"] < 0.25 and run["plain_content"] < 0.5:
        return "content destroyed"
    if run["style_rate"] < 0.25:
        return "nothing learned"
    if all(run[key] >= floor for key, floor in SAFE.items()):
        return "style learned"
    return "partial"


def sensitivity(
    lr: float = 1e-3,
    r: int = 8,
    alpha: float | None = None,
    seed: int = 0,
    steps: int = 150,
    pipe=None,
    seeds: Sequence[int] = judging.EVAL_SEEDS,
) -> dict:
    """Claim 9, one point of the map: the outline LoRA (the small preset) at ``lr``, ``r`` and
    ``alpha`` (None: alpha = r), judged on the held-out prompts and the plain ones, and named by
    :func:`outcome`."""
    pipe = harness.load(pipe)
    scaling = (r if alpha is None else alpha) / r
    result = {
        "lr": lr,
        "r": r,
        "alpha": r if alpha is None else alpha,
        "seed": seed,
        "steps": steps,
        "lr_x_scaling": lr * scaling,
        "diverged": False,
    }
    result["settings"] = harness.settings_of(
        harness.config(r=r, alpha=alpha, lr=lr, seed=seed, steps=steps)
    )
    with harness.restored(pipe):
        try:
            dataset = harness.style_set()
            done = harness.fit(pipe, dataset, r=r, alpha=alpha, lr=lr, seed=seed, steps=steps)
            found = judging.judge(pipe, styles.style_prompts(), seeds)
            result |= {
                "style_rate": found.style_rate,
                "content": found.both_accuracy,
                **judging.kept(pipe, seeds),
                "final_loss": done["final_loss"],
            }
        except (RuntimeError, ValueError) as error:  # the loss or the pictures became NaN
            if "the loss became" not in str(error) and "NaN or infinite" not in str(error):
                raise
            result |= DIVERGED_RUN
    result["outcome"] = outcome(result)
    return result
