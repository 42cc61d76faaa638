"""Draw claim 1's placements as a picture grid into docs/images/claim1_placements.png.

Run from the repository root (about 2 minutes on a 2-core CPU: it trains three LoRAs):

    python docs/make_claim_pictures.py

Rows: the untrained tiny SD, then "vex" taught at ``attn2`` (rank 8), ``attn1`` (rank 8) and the
feed-forward layers (rank 4, about as many trainable numbers), as ``--study placement`` trains them
(100 steps, training seed 0). Columns: "a <colour> vex" in every colour, then the control word,
"a <colour> quill", which no caption has. One noise seed: a picture grid to look at; the rates and
their intervals are the study's (docs/claims/claim1-control.json).

Left out: other seeds, the style task (lesson 09 draws it).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lorakit import claims  # noqa: E402

OUT = Path("docs/images/claim1_placements.png")
ROWS = {  # label: word_pictures' arguments, as --study placement trains them
    "untrained": {"variant": None},
    "attn2, r 8": {"variant": "attn2", "r": 8},
    "attn1, r 8": {"variant": "attn1", "r": 8},
    "ff, r 4": {"variant": "ff", "r": 4},
}


def draw(rows: dict[str, dict]):
    """``rows``: {label: {prompt: picture}}, every row with the same prompts."""
    prompts = list(next(iter(rows.values())))
    fig, axes = plt.subplots(
        len(rows), len(prompts), figsize=(1.2 * len(prompts), 1.35 * len(rows)), squeeze=False
    )
    for i, (label, pictures) in enumerate(rows.items()):
        for j, prompt in enumerate(prompts):
            ax = axes[i][j]
            ax.imshow(pictures[prompt])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(prompt, fontsize=7)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle('claim 1: "vex" taught at three places, and "quill", a word no caption has')
    fig.tight_layout()
    return fig


def main(out: Path = OUT, steps: int = 100, pipe=None) -> Path:
    pipe = claims.load(pipe)
    rows = {
        label: claims.word_pictures(**how, steps=steps, seed=0, pipe=pipe)
        for label, how in ROWS.items()
    }
    fig = draw(rows)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
