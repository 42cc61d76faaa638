"""Claims 3 and 4 as controlled studies over training: ``python -m benchmarks.controls --study
speed`` (or ``overfit``).

Each method's learning rate is chosen on its own, on the first training seed and the validation
split (``claims.validation_prompts``, other noise seeds), then the methods are compared on the
other seeds by learning curves read from checkpoints (``claims.learning_curve``).

* **speed** (claim 3): LoRA (the small preset) and a full fine-tune on the outline set; each
  method's rate is the one that reaches the style soonest (``TARGET``); the curves are read every
  10 steps, and the steps each needs are compared by seed.
* **overfit** (claim 4): 2 pictures, 200 steps; LoRA r 8 with the preset's dropout and without,
  a full fine-tune with AdamW's weight decay alone and with dropout 0.1 in the UNet (its ResNet
  blocks, attention outputs and feed-forward layers); each rate chosen on the most style and
  plain prompts right on the validation split; learning, forgetting and memorising at 50, 100,
  150 and 200 steps. ``--methods`` runs some of them (a comparison needs both of its methods).
"""

from __future__ import annotations

import statistics

from benchmarks import claim_runs as runner
from benchmarks.verdicts import compare, header
from lorakit import claims

TARGET = (0.75, 0.5)  # the style on 75 % of the pictures, colour and shape right on half
SPEED_LRS = {"lora": (1e-3, 3e-3, 1e-2), "full": (3e-5, 1e-4, 3e-4)}
OVERFIT_LRS = {"lora": (1e-3, 3e-3), "full": (3e-5, 1e-4)}
OVERFIT_SIZE = 2
OVERFITS = {  # name: learning_curve's arguments
    "LoRA r 8": {"method": "lora"},
    "LoRA r 8, no dropout": {"method": "lora", "lora_dropout": 0.0},
    "full": {"method": "full"},
    "full, dropout 0.1": {"method": "full", "unet_dropout_p": 0.1},
}


def curve(**kwargs) -> dict:
    return runner.child("learning_curve", **kwargs)


def steps_to(run: dict, steps: int) -> tuple[float, bool]:
    """The steps a run needed to reach ``TARGET``, and whether it did (if not: ``steps + 10``, a
    lower bound)."""
    point = claims.first_reaching(run["curve"], *TARGET)
    return (point["steps"], True) if point else (steps + 10, False)


def _choose_speed(method: str, seeds: list[int], steps: int) -> float:
    every = list(range(10, steps + 1, 10))
    needed = {}
    for lr in SPEED_LRS[method]:
        runs = [
            curve(
                method=method,
                seed=s,
                lr=lr,
                checkpoints=every,
                split="validation",
                forgetting=False,
                stop_at=list(TARGET),
            )
            for s in seeds
        ]
        needed[lr] = statistics.fmean(steps_to(run, steps)[0] for run in runs)
    print(
        f"  {method:<6}"
        + "".join(
            f"{'lr ' + format(lr, 'g') + ': ' + format(n, 'g'):>18}" for lr, n in needed.items()
        )
    )
    return min(SPEED_LRS[method], key=lambda lr: needed[lr])  # a tie: the lower rate


def study_speed(args) -> dict:
    choose, judge = args.train_seeds[:1], args.train_seeds[1:]
    print(
        f"\nclaim 3, speed: steps to a {TARGET[0]:.0%} style rate with {TARGET[1]:.0%} content "
        f"(validation split, training seed {choose}; up to {args.steps} steps)"
    )
    best = {m: _choose_speed(m, choose, args.steps) for m in SPEED_LRS}
    every = list(range(10, args.steps + 1, 10))
    runs = [
        curve(method=m, seed=s, lr=best[m], checkpoints=every, forgetting=False)
        for m in SPEED_LRS
        for s in judge
    ]
    print(f"\nlearning curves on the test split, each method at its rate ({best}), seeds {judge}")
    print(f"  {'method':<8}{'steps to it':>14}{'seconds to it':>15}{'reached':>9}", end="")
    marks = [m for m in (20, 50, 100, 200) if m <= args.steps]
    print("".join(f"{'style @' + str(m):>13}" for m in marks))
    for m in SPEED_LRS:
        mine = [r for r in runs if r["method"] == m]
        got = [steps_to(r, args.steps) for r in mine]
        secs = [_seconds_at(r, n) for r, (n, ok) in zip(mine, got, strict=True) if ok]
        print(
            f"  {m:<8}{runner.cell([n for n, _ in got], percent=False):>14}"
            f"{runner.cell(secs, percent=False) if secs else '-':>15}"
            f"{sum(ok for _, ok in got):>5} of {len(got)}"
            + "".join(f"{runner.cell([_style_at(r, k) for r in mine]):>13}" for k in marks)
        )
    header("steps to the style, full fine-tune - LoRA (threshold set before the runs)")
    needed = {
        m: {r["seed"]: steps_to(r, args.steps)[0] for r in runs if r["method"] == m}
        for m in SPEED_LRS
    }
    rows = [compare("steps to 75 %: full - LoRA", needed["full"], needed["lora"], "speed")]
    return {"study": "speed", "best_lr": best, "runs": runs, "comparisons": rows}


def _seconds_at(run: dict, steps: int) -> float:
    return next(p["train_seconds"] for p in run["curve"] if p["steps"] == steps)


def _style_at(run: dict, steps: int) -> float:
    return next(p["style_rate"] for p in run["curve"] if p["steps"] == steps)


def _choose_overfit(name: str, how: dict, seeds: list[int], steps: int) -> float:
    score = {}
    for lr in OVERFIT_LRS[how["method"]]:
        runs = [
            curve(**how, seed=s, lr=lr, size=OVERFIT_SIZE, checkpoints=[steps], split="validation")
            for s in seeds
        ]
        score[lr] = statistics.fmean(
            r["curve"][-1]["style_rate"] + r["curve"][-1]["plain_content"] for r in runs
        )
    print(
        f"  {name:<22}"
        + "".join(
            f"{'lr ' + format(lr, 'g') + ': ' + format(v, '.2f'):>18}" for lr, v in score.items()
        )
    )
    return max(OVERFIT_LRS[how["method"]], key=lambda lr: score[lr])


def _end(runs: list[dict], name: str, key: str) -> dict[int, float]:
    return {r["seed"]: r["curve"][-1][key] for r in runs if r["name"] == name}


OVERFIT_PAIRS = [  # (label, method a, method b, figure, threshold): a - b, read after training
    ("memorised: full - LoRA r 8", "full", "LoRA r 8", "memorised", "overfit-memorised"),
    (
        "memorised: full+dropout - LoRA no dropout",
        "full, dropout 0.1",
        "LoRA r 8, no dropout",
        "memorised",
        "overfit-memorised",
    ),
    ("plain right: LoRA r 8 - full", "LoRA r 8", "full", "plain_content", "overfit-forgetting"),
    (
        "plain right: LoRA no dropout - full+dropout",
        "LoRA r 8, no dropout",
        "full, dropout 0.1",
        "plain_content",
        "overfit-forgetting",
    ),
    (
        "memorised: LoRA no dropout - dropout 0.1",
        "LoRA r 8, no dropout",
        "LoRA r 8",
        "memorised",
        "overfit-dropout",
    ),
]


def study_overfit(args) -> dict:
    choose, judge = args.train_seeds[:1], args.train_seeds[1:]
    print(
        f"\nclaim 4, {OVERFIT_SIZE} pictures, {args.steps} steps: the learning rate of each method "
        f"with the most style + plain prompts right (validation split, training seed {choose})"
    )
    chosen = {n: how for n, how in OVERFITS.items() if n in (args.methods or OVERFITS)}
    best = {n: _choose_overfit(n, how, choose, args.steps) for n, how in chosen.items()}
    points = sorted({50, *range(100, args.steps + 1, 50), args.steps})
    runs = [
        curve(**how, seed=s, lr=best[n], size=OVERFIT_SIZE, checkpoints=points) | {"name": n}
        for n, how in chosen.items()
        for s in judge
    ]
    base = runner.child("base_memorisation", size=OVERFIT_SIZE)
    print(f"\nover training, test split, seeds {judge}; the untrained model memorises {base:.3f}")
    keys = ("style_rate", "content", "plain_content", "memorised")
    print(f"  {'method':<22}{'lr':>8}{'steps':>7}" + "".join(f"{k:>16}" for k in keys))
    for n in chosen:
        mine = [r for r in runs if r["name"] == n]
        for i, at in enumerate(points):
            print(
                f"  {n if i == 0 else '':<22}{format(best[n], 'g') if i == 0 else '':>8}{at:>7}"
                + "".join(
                    f"{runner.cell([r['curve'][i][k] for r in mine], percent=k != 'memorised'):>16}"
                    for k in keys
                )
            )
    header(f"after {args.steps} steps (thresholds set before the runs)")
    rows = [
        compare(label, _end(runs, a, key), _end(runs, b, key), threshold)
        for label, a, b, key, threshold in OVERFIT_PAIRS
        if a in chosen and b in chosen  # a comparison needs both methods run
    ]
    return {
        "study": "overfit",
        "best_lr": best,
        "base_memorised": base,
        "runs": runs,
        "comparisons": rows,
    }
