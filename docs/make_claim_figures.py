"""Draw the claims' figures from their published runs (docs/claims/*.json) into docs/images/.

Run from the repository root:

    python docs/make_claim_figures.py

Each figure is named after its claim and drawn only from what the benchmarks published, so anyone
can redraw it: claim 9's map of learning rate x (rank, alpha) as a heat map; the rank study (style
rate against r under each convention for alpha); claim 3's learning curves; claim 4's paths of
learning against memorising and forgetting; claim 8's crosses by truncation rank, linear
layers alone and with the convolutions; claim 7's table of which style each trigger draws, LoRA
beside a full fine-tune; and ||delta W|| / ||W|| a layer for a full fine-tune and a LoRA trained on
the same data. A figure whose study has not been published is skipped, with a line saying so.

Left out: pictures (the lessons draw those), figures of the older single-point studies.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lorakit import claims  # noqa: E402

OUT = Path("docs/images")


def mean(values) -> float:
    return statistics.fmean(values)


def percent_grid(ax, grid, cmap: str, white, aspect: str = "auto"):
    """``grid`` (rows of fractions) as an image from 0 to 1, each cell labelled with its percentage,
    in white where ``white(value)`` (on the dark end of ``cmap``)."""
    image = ax.imshow(grid, vmin=0, vmax=1, cmap=cmap, aspect=aspect)
    for i, line in enumerate(grid):
        for j, value in enumerate(line):
            ink = "white" if white(value) else "black"
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", color=ink, fontsize=8)
    return image


def claim9_heat_map(report: dict):
    """Mean style rate and content over seeds, for each (r, alpha) row and learning rate column."""
    runs = report["runs"]
    lrs = sorted({x["lr"] for x in runs})
    rows = sorted({(x["r"], x["alpha"]) for x in runs})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
    for ax, key, title in zip(
        axes, ("style_rate", "content"), ("style rate", "content right"), strict=True
    ):
        grid = [
            [
                mean([x[key] for x in runs if (x["r"], x["alpha"]) == row and x["lr"] == lr])
                for lr in lrs
            ]
            for row in rows
        ]
        image = percent_grid(ax, grid, "viridis", white=lambda value: value < 0.6)
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_yticks(range(len(rows)), [f"r {r}, alpha {a:g} (x{a / r:.3g})" for r, a in rows])
        ax.set(
            xlabel="learning rate",
            title=f"claim 9: {title}, mean of {len(report['train_seeds'])} seeds",
        )
    fig.colorbar(image, ax=axes, shrink=0.8)
    return fig


def rank_study(report: dict):
    """Style rate against r, one line a convention for alpha, with each seed's point."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for convention, marker in zip(claims.CONVENTIONS, "osD", strict=True):
        mine = [x for x in report["runs"] if x["convention"] == convention]
        ranks = sorted({x["r"] for x in mine})
        ax.plot(
            ranks,
            [mean([x["style_rate"] for x in mine if x["r"] == r]) for r in ranks],
            marker=marker,
            label=convention,
        )
        ax.scatter([x["r"] for x in mine], [x["style_rate"] for x in mine], s=8, alpha=0.35)
    ranks = sorted({x["r"] for x in report["runs"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set(
        xlabel="rank r",
        ylabel="style rate, held-out prompts",
        ylim=(0, 1.02),
        title=f"the rank study ({len(report['train_seeds'])} seeds; lines: means)",
    )
    ax.legend(fontsize=8)
    return fig


def claim8_truncation(report: dict):
    """Crosses drawn against the rank the full fine-tune's update was cut to."""
    runs = report["runs"]
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    ks = [row["k"] for row in runs[0]["rows"] if row["scope"] == "linear" and row["k"]]
    top = max(ks) * 4  # where the whole update is drawn
    for scope, marker in zip(claims.SCOPES, "os", strict=True):
        ys = [
            mean(
                [
                    next(r["cross"] for r in run["rows"] if r["scope"] == scope and r["k"] == k)
                    for run in runs
                ]
            )
            for k in [*ks, None]
        ]
        ax.plot([*ks, top], ys, marker=marker, label=f"{scope}, rank k (right: whole update)")
    ax.axhline(
        mean([run["lora"]["cross"] for run in runs]),
        color="grey",
        linestyle=":",
        label=f"LoRA r {runs[0]['lora']['r']} on every linear layer, trained",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks([*ks, top], [*map(str, ks), "whole"])
    ax.set(
        xlabel="rank of the update put back",
        ylabel="crosses drawn",
        ylim=(0, 1.02),
        title=f"claim 8: a full fine-tune cut by SVD ({len(runs)} seeds)",
    )
    ax.legend(fontsize=7)
    return fig


def claim7_confusion(report: dict):
    """Which style each trigger draws with three styles in one model, LoRA and full fine-tune."""
    runs = [x for x in report["runs"] if x["count"] == 3]
    names = sorted({k for x in runs for c in x["confusion"].values() for k in c} - {"content"})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3), layout="constrained")
    for ax, who in zip(axes, ("LoRA", "full"), strict=True):
        mine = [x for x in runs if x["name"] == who]
        grid = [
            [mean([x["confusion"][s].get(n, 0.0) for x in mine]) for n in names]
            for s in claims.STYLE_ORDER
        ]
        percent_grid(ax, grid, "Blues", white=lambda value: value > 0.6, aspect="equal")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(3), [f"{s}'s trigger" for s in claims.STYLE_ORDER])
        ax.set(xlabel="style drawn", title=f"claim 7, 3 styles: {who} ({len(mine)} seeds)")
    return fig


def update_ratios(report: dict):
    """||delta W|| / ||W|| a layer, full fine-tune and LoRA trained on the same data, one seed."""
    run = report["runs"][0]
    full = {x["name"]: x["ratio"] for x in run["update_ratios"]}
    lora = {x["name"]: x["ratio"] for x in run["lora"]["update_ratios"]}
    fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
    ax.hist(
        [list(full.values()), list(lora.values())],
        bins=30,
        label=[
            f"full fine-tune ({len(full)} linear and conv layers)",
            f"LoRA r {run['lora']['r']} ({len(lora)} linear layers)",
        ],
    )
    ax.set(
        xlabel="||delta W|| / ||W|| of a layer",
        ylabel="layers",
        title=f"how small the changes are: the cross, training seed {run['seed']}",
    )
    ax.legend(fontsize=8)
    return fig


def claim3_learning_curves(report: dict):
    """Style rate against training steps, each method at its chosen rate: the mean of the seeds,
    and each seed faint. (Not against the runs' own seconds: other jobs shared their CPU; on a
    quiet one a step of either costs about the same, ``benchmarks.step_flops``.)"""
    fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
    for method, colour in (("lora", "tab:blue"), ("full", "tab:orange")):
        mine = [x for x in report["runs"] if x["method"] == method]
        name = "LoRA" if method == "lora" else "full fine-tune"
        for run in mine:
            curve = run["curve"]
            ax.plot([p["steps"] for p in curve], [p["style_rate"] for p in curve], color=colour,
                    alpha=0.25, lw=0.8)  # fmt: skip
        points = list(zip(*[run["curve"] for run in mine], strict=True))
        ax.plot(
            [mean([p["steps"] for p in at]) for at in points],
            [mean([p["style_rate"] for p in at]) for at in points],
            color=colour,
            lw=2,
            label=f"{name}, lr {report['best_lr'][method]:g}",
        )
    ax.axhline(0.75, color="grey", ls=":", lw=1)
    ax.set(xlabel="training steps", ylabel="style rate, held-out prompts", ylim=(0, 1.02))
    ax.set_title(f"claim 3: learning curves ({len(report['runs']) // 2} seeds; thick: mean)")
    ax.legend(fontsize=8)
    return fig


def claim4_learning_forgetting(report: dict):
    """Each method's path over training: learning (style on held-out prompts) against memorising
    and against forgetting (plain prompts no longer right), the mean of the seeds at each
    checkpoint."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    names = list(dict.fromkeys(x["name"] for x in report["runs"]))
    for name, marker in zip(names, "osD^v", strict=False):
        mine = [x for x in report["runs"] if x["name"] == name]
        points = list(zip(*[run["curve"] for run in mine], strict=True))
        style = [mean([p["style_rate"] for p in at]) for at in points]
        for ax, key, flip in ((axes[0], "memorised", False), (axes[1], "plain_content", True)):
            xs = [mean([(1 - p[key]) if flip else p[key] for p in at]) for at in points]
            ax.plot(xs, style, marker=marker, label=name, ms=4)
            ax.annotate(f"{points[-1][0]['steps']}", (xs[-1], style[-1]), fontsize=7)
    axes[0].axvline(report["base_memorised"], color="grey", ls=":", lw=1)
    axes[0].set(xlabel="memorised (IoU with a training picture)", ylabel="style rate, held-out")
    axes[1].set(xlabel="forgotten (plain prompts no longer right)", ylabel="style rate, held-out")
    axes[0].set_title(f"claim 4 on 2 pictures, over training ({len(mine)} seeds)")
    axes[1].legend(fontsize=7)
    return fig


FIGURES = {
    "claim9_heat_map.png": (9, claim9_heat_map),
    "rank_study.png": ("rank", rank_study),
    "claim8_truncation.png": ("truncation", claim8_truncation),
    "claim7_confusion.png": ("complex", claim7_confusion),
    "claim8_update_ratios.png": ("truncation", update_ratios),
    "claim3_learning_curves.png": ("speed", claim3_learning_curves),
    "claim4_learning_forgetting_curves.png": ("overfit", claim4_learning_forgetting),
}


def main(out: Path = OUT) -> list[Path]:
    written = []
    for name, (study, draw) in FIGURES.items():
        try:
            report = claims.published(study)
        except FileNotFoundError:
            print(f"skipped {name}: {study} is not published yet")
            continue
        fig = draw(report)
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(out / name)
        print(f"wrote {out / name}")
    return written


if __name__ == "__main__":
    main()
