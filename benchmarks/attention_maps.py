"""Do the tiny SD's cross-attention maps tie each word to its shape?
``python -m benchmarks.attention_maps``.

Lesson 04 overlays per-token attention maps on generated pictures. This script measures what the
lesson shows, on every colour x shape prompt and on two-shape prompts:

1. One shape ("a red circle"): for each token position, the correlation between its map
   (``attention.token_maps``: mean over the 16 ``attn2``, the steps and the heads, conditional half)
   and the drawn shape's pixels. A word "lights up its shape" when that correlation is positive.
2. Two shapes ("a red circle and a blue square", colours differ): the pixels of each shape are
   found by their colour. A word is *on its own shape* when its map is higher, on average, over the
   shape it names than over the other one. Chance is 50%.

Reported: the mean correlation of the colour word, the shape word, the end token and a padding
token, the share of prompts where the shape word's correlation is > 0.2, and for two shapes the
share of words on their own shape, and how often the picture shows both colours.
"""

from __future__ import annotations

import itertools

import numpy as np

from benchmarks import _common
from lorakit import attention, metrics, sample, shapes

PAIRS = [
    ("red", "circle", "blue", "square"),
    ("green", "triangle", "yellow", "circle"),
    ("purple", "square", "red", "triangle"),
    ("blue", "circle", "green", "triangle"),
    ("yellow", "square", "purple", "circle"),
    ("red", "triangle", "green", "square"),
]


def _colour_mask(image, colour: str, other: str) -> np.ndarray:
    """Ink pixels nearer to ``colour``'s RGB than to ``other``'s."""
    rgb = np.asarray(image, dtype=np.float32)
    d_own = np.linalg.norm(rgb - np.array(shapes.COLOURS[colour]), axis=-1)
    d_other = np.linalg.norm(rgb - np.array(shapes.COLOURS[other]), axis=-1)
    return metrics.ink_mask(image) & (d_own < d_other) & (d_own < 90)


def single_shape(pipe, seeds: list[int], steps: int) -> dict:
    """Correlation of each token's map with the shape, over every colour x shape prompt and seed."""
    combos = [(c, s) for c, s in itertools.product(shapes.COLOURS, shapes.SHAPES) for _ in seeds]
    prompts = [f"a {c} {s}" for c, s in combos]
    seed_list = [seed for _ in itertools.product(shapes.COLOURS, shapes.SHAPES) for seed in seeds]
    corr = {"colour word": [], "shape word": [], "end token": [], "padding (pos 20)": []}
    for start in range(0, len(prompts), 15):
        chunk = prompts[start : start + 15]
        with attention.capture_cross_attention(pipe.unet) as records:
            images = sample.generate(
                pipe, chunk, seed_list[start : start + 15], num_inference_steps=steps
            )
        positions = {"colour word": 2, "shape word": 3, "end token": 4, "padding (pos 20)": 20}
        for label, pos in positions.items():
            maps = attention.token_maps(records, pos).numpy()  # (B, 64, 64)
            for m, image in zip(maps, images, strict=True):
                mask = metrics.ink_mask(image)
                ok = 0 < mask.sum() < mask.size
                corr[label].append(float(np.corrcoef(m.ravel(), mask.ravel())[0, 1]) if ok else 0.0)
    return {k: np.array(v) for k, v in corr.items()}


def two_shapes(pipe, seeds: list[int], steps: int) -> dict:
    """For two-shape prompts: is each word's map higher over the shape it names than over the
    other?"""
    cells = [(p, seed) for p in PAIRS for seed in seeds]
    prompts = [f"a {c1} {s1} and a {c2} {s2}" for (c1, s1, c2, s2), _ in cells]
    with attention.capture_cross_attention(pipe.unet) as records:
        images = sample.generate(
            pipe, prompts, [seed for _, seed in cells], num_inference_steps=steps
        )
    # "<start> a c1 s1 and a c2 s2 <end>": positions 2, 3 name the first shape, 6, 7 the second.
    maps = {pos: attention.token_maps(records, pos).numpy() for pos in (2, 3, 6, 7)}
    on_own, both_drawn = {"colour words": [], "shape words": []}, []
    for i, (((c1, _s1, c2, _s2), _seed), image) in enumerate(zip(cells, images, strict=True)):
        first, second = _colour_mask(image, c1, c2), _colour_mask(image, c2, c1)
        drawn = first.sum() >= 20 and second.sum() >= 20
        both_drawn.append(drawn)
        if not drawn:
            continue
        for label, (own1, own2) in (("colour words", (2, 6)), ("shape words", (3, 7))):
            on_own[label].append(maps[own1][i][first].mean() > maps[own1][i][second].mean())
            on_own[label].append(maps[own2][i][second].mean() > maps[own2][i][first].mean())
    return {
        "on_own": {k: np.array(v, dtype=float) for k, v in on_own.items()},
        "both_drawn": float(np.mean(both_drawn)),
        "images": images,
        "prompts": prompts,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__)
    parser.add_argument(
        "--model", default="tiny", help='"tiny" (the committed model) or a saved pipeline folder'
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=10, help="inference steps")
    parser.add_argument("--device", default=None)
    parser.add_argument("--grid", default=None, help="save the two-shape pictures to this PNG")
    args = parser.parse_args(argv)
    pipe = _common.seeded_pipeline(args)
    seeds = list(range(args.seeds))
    one = single_shape(pipe, seeds, args.steps)
    two = two_shapes(pipe, seeds, args.steps)
    print(f"model {args.model}; {args.seeds} seeds a prompt, {args.steps} steps")
    print(
        f"\n1. one shape, {len(one['shape word'])} pictures: correlation of the token's map with "
        "the shape"
    )
    print(f"{'token':<18}{'mean corr':>10}{'> 0.2':>8}")
    for label, values in one.items():
        print(f"{label:<18}{values.mean():>10.3f}{(values > 0.2).mean():>8.1%}")
    print(
        f"\n2. two shapes, {len(two['prompts'])} pictures, both colours drawn in "
        f"{two['both_drawn']:.0%}: "
        f"word's map higher over its own shape (chance 50%)"
    )
    for label, values in two["on_own"].items():
        share = f"{values.mean():.1%}" if len(values) else "n/a"
        print(f"{label:<18}{share:>10}  ({len(values)} words)")
    if args.grid:
        sample.image_grid(two["images"], cols=args.seeds * 2, scale=2).save(args.grid)
    return {
        "one": {k: float(v.mean()) for k, v in one.items()},
        "one_lit": float((one["shape word"] > 0.2).mean()),
        "two": {k: float(v.mean()) if len(v) else 0.0 for k, v in two["on_own"].items()},
        "both_drawn": two["both_drawn"],
    }


if __name__ == "__main__":
    main()
