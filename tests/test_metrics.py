"""The detectors against ground truth (shapes-world pictures whose spec we know), with and
without noise, and the prompt-grid score on generators that are right or wrong by construction."""

from collections import deque
from functools import cache

import numpy as np
import pytest
from PIL import Image

from lorakit import imagefolder, metrics, shapes

N = 1000  # pictures per accuracy measurement


@cache
def _ground_truth(style, seed=2024):
    """N random pictures of ``style`` and their specs (rendered once, shared by the tests)."""
    specs = [shapes.sample_spec(index, seed=seed, style=style) for index in range(N)]
    return specs, [
        np.asarray(shapes.render(spec), dtype=np.float64) for spec in specs
    ]  # (64, 64, 3) each


def _accuracies(style, sigma=0.0):
    """Fraction of the N ground-truth pictures whose colour, shape and style the detectors get right."""
    rng = np.random.default_rng(99)
    right = {"colour": 0, "shape": 0, "style": 0}
    for spec, image in zip(*_ground_truth(style), strict=True):
        if sigma:
            image = image + rng.normal(0, sigma * 255, image.shape)
        found = metrics.detect(np.clip(image.round(), 0, 255).astype(np.uint8))
        right["colour"] += found["colour"] == spec.colour
        right["shape"] += found["shape"] == spec.shape
        right["style"] += found["style"] == style
    scores = {key: value / N for key, value in right.items()}
    print(f"\n{style}, noise sigma {sigma * 255:.0f}/255: {scores}")
    return scores


@pytest.mark.parametrize("style", ["filled", "outline"])
def test_detectors_on_clean_ground_truth(style):
    scores = _accuracies(style)
    assert scores["colour"] >= 0.99 and scores["shape"] >= 0.99 and scores["style"] >= 0.99, scores


@pytest.mark.parametrize("style", ["filled", "outline"])
def test_detectors_under_mild_noise(style):
    scores = _accuracies(style, sigma=10 / 255)
    assert scores["colour"] >= 0.97 and scores["shape"] >= 0.97 and scores["style"] >= 0.97, scores


def _sketch_accuracy(wobble, corner, count=300):
    """Per-shape fraction of hand-drawn pictures (``shapes.render_sketch``) whose shape is read right."""
    right = {shape: [] for shape in shapes.SHAPES}
    for index in range(count):
        spec = shapes.sample_spec(
            index, seed=98, shape=shapes.SHAPES[index % 3], style=shapes.STYLES[index % 2]
        )
        found = metrics.detect(shapes.render_sketch(spec, wobble=wobble, corner=corner, seed=index))
        right[spec.shape].append(found["shape"] == spec.shape)
        assert found["colour"] == spec.colour and found["style"] == spec.style, (index, found)
    return {shape: float(np.mean(hits)) for shape, hits in right.items()}


def test_detectors_on_hand_drawn_shapes():
    """Wobbly boundaries and rounded corners, as a generator draws them, still read as their shape.

    The first detector, which compared the fraction of its bounding box a shape fills (square 1,
    circle 0.79), read only 33% of these squares as squares: a wobble widens the box, so a drawn
    square fills 0.80-0.90 of it and came out nearer the circle.
    """
    scores = _sketch_accuracy(wobble=0.06, corner=0.15)
    print(f"\nhand-drawn (wobble 0.06, corners 0.15): {scores}")
    assert min(scores.values()) >= 0.97, scores


def test_sketch_renderer():
    for shape in shapes.SHAPES:  # without wobble or corners, a sketch is the shape render() fills
        spec = shapes.sample_spec(4, seed=1, shape=shape)
        sketch, drawn = (
            metrics.ink_mask(shapes.render_sketch(spec, wobble=0, corner=0)),
            metrics.ink_mask(shapes.render(spec)),
        )
        assert (sketch & drawn).sum() / (sketch | drawn).sum() > 0.95, shape
    spec = shapes.sample_spec(4, seed=1, shape="square", style="outline")
    assert (
        shapes.render_sketch(spec, seed=3).tobytes() == shapes.render_sketch(spec, seed=3).tobytes()
    )
    assert (
        shapes.render_sketch(spec, seed=3).tobytes() != shapes.render_sketch(spec, seed=4).tobytes()
    )


def test_a_broken_stroke_is_no_shape():
    spec = shapes.sample_spec(2, seed=0, shape="circle", colour="red", style="outline")
    image = shapes.render(spec)
    left, top, right, bottom = metrics.measure(image)["box"]
    broken = np.asarray(image).copy()
    broken[:, (left + right) // 2 - 2 :] = (
        255  # keep the left arc of the ring: a "(" is not a circle
    )
    found = metrics.detect(broken)
    assert found["shape"] == "none" and found["colour"] == "red", found
    assert max(metrics.measure(broken)["shape_iou"].values()) < metrics.MIN_SHAPE_IOU


def test_no_shape_is_none():
    rng = np.random.default_rng(0)
    noise = np.clip(255 + rng.normal(0, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
    speck = Image.new("RGB", (64, 64), "white")
    speck.paste((220, 40, 40), (30, 30, 33, 33))  # 9 pixels: a speck, not a shape
    for image in (Image.new("RGB", (64, 64), "white"), noise, speck):
        assert metrics.detect(image) == {"colour": "none", "shape": "none", "style": "none"}


def test_specks_do_not_change_the_answer():
    spec = shapes.sample_spec(0, seed=1, shape="circle", colour="green")
    image = shapes.render(spec)
    for xy in [(1, 1), (62, 2), (2, 60)]:  # stray specks of another colour, away from the shape
        image.putpixel(xy, (40, 80, 220))
    assert metrics.detect(image) == {"colour": "green", "shape": "circle", "style": "filled"}


def test_inputs_pil_tensor_array_and_large_agree():
    spec = shapes.sample_spec(8, seed=3, style="outline")
    image = shapes.render(spec)
    expected = {"colour": spec.colour, "shape": spec.shape, "style": "outline"}
    assert metrics.detect(image) == expected
    assert metrics.detect(imagefolder.to_tensor(image)) == expected  # (3, H, W) in [-1, 1]
    assert metrics.detect(imagefolder.to_tensor(image)[None]) == expected  # (1, 3, H, W)
    assert metrics.detect(np.asarray(image)) == expected
    assert metrics.detect(shapes.render(spec, 512)) == expected  # full-mode size
    assert metrics.detect_colour(image) == spec.colour and metrics.detect_shape(image) == spec.shape
    assert metrics.detect_style(image) == "outline"
    with pytest.raises(TypeError, match="expected a PIL image"):
        metrics.detect("picture.png")
    with pytest.raises(TypeError, match="uint8 array in 0..255, got dtype float64"):
        metrics.detect(np.asarray(image) / 255.0)


def _flood_fill_components(mask):
    """Reference: 8-connected components by breadth-first search, largest first."""
    seen, components = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start], queue, members = True, deque([start]), []
        while queue:
            y, x = queue.popleft()
            members.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if (
                        0 <= ny < mask.shape[0]
                        and 0 <= nx < mask.shape[1]
                        and mask[ny, nx]
                        and not seen[ny, nx]
                    ):
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        components.append(members)
    return sorted(components, key=len, reverse=True)


def test_largest_component_matches_flood_fill():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        mask = rng.random((rng.integers(5, 30), rng.integers(5, 30))) < rng.uniform(0.2, 0.6)
        components = _flood_fill_components(mask)
        if len(components) > 1 and len(components[0]) == len(components[1]):
            continue  # a tie: either answer is right
        expected = np.zeros_like(mask)
        for y, x in components[0] if components else []:
            expected[y, x] = True
        assert np.array_equal(metrics.largest_component(mask), expected)
        checked += 1
    assert checked > 100


# --- prompt grids --------------------------------------------------------------------------


def _renderer(style="filled", colour_shift=0, shape_shift=0):
    """A generate_fn that draws the prompt (shifted to the wrong colour/shape if asked)."""
    colours, shape_names, calls = list(shapes.COLOURS), list(shapes.SHAPES), []

    def generate(prompts, seeds):
        calls.append(len(prompts))
        pictures = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            _, colour, shape = prompt.split()[:3]  # "a <colour> <shape>", then maybe more words
            colour = colours[(colours.index(colour) + colour_shift) % len(colours)]
            shape = shape_names[(shape_names.index(shape) + shape_shift) % len(shape_names)]
            pictures.append(
                shapes.render(
                    shapes.sample_spec(seed, seed=7, shape=shape, colour=colour, style=style)
                )
            )
        return pictures

    generate.calls = calls
    return generate


def test_grid_of_a_perfect_generator():
    generate = _renderer()
    result = metrics.evaluate_grid(generate, batch_size=16)
    n = len(shapes.COLOURS) * len(shapes.SHAPES) * 4
    assert generate.calls == [16, 16, 16, n - 48]
    assert len(result.records) == len(result.images) == n
    assert (result.colour_accuracy, result.shape_accuracy, result.both_accuracy) == (1.0, 1.0, 1.0)
    assert result.style_rate == 0.0  # nothing drawn in outline
    lines = result.table().splitlines()
    assert len(lines) == 1 + len(shapes.COLOURS) + 1 and lines[1].split()[1:] == ["4/4"] * len(
        shapes.SHAPES
    )
    assert result.to_dict()["both_accuracy"] == 1.0 and str(result) == result.table()
    print("\n" + result.table())


def test_grid_of_wrong_generators():
    wrong_colour = metrics.evaluate_grid(_renderer(colour_shift=1), seeds=(0, 1))
    assert wrong_colour.colour_accuracy == 0.0 and wrong_colour.shape_accuracy == 1.0
    assert wrong_colour.both_accuracy == 0.0
    wrong_shape = metrics.evaluate_grid(_renderer(shape_shift=1), seeds=(0, 1))
    assert wrong_shape.colour_accuracy == 1.0 and wrong_shape.shape_accuracy == 0.0
    outline = metrics.evaluate_grid(
        _renderer(style="outline"), colours=["red", "blue"], shapes=["square"]
    )
    assert outline.style_rate == 1.0 and len(outline.records) == 2 * 1 * 4
    record = wrong_shape.records[0]
    assert record["prompt"] == "a red circle" and record["detected_shape"] == "square"


def test_grid_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        metrics.evaluate_grid(_renderer(), colours=["teal"])
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        metrics.evaluate_grid(_renderer(), shapes=["star"])
    with pytest.raises(ValueError, match="returned 1 pictures for 60 prompts"):
        metrics.evaluate_grid(lambda prompts, seeds: [Image.new("RGB", (64, 64), "white")])


def test_scoring_pictures_already_drawn_gives_the_rows_of_the_grid():
    generate = _renderer(style="outline")
    grid = metrics.evaluate_grid(
        generate,
        colours=["red", "blue"],
        shapes=["square", "circle"],
        seeds=(0, 1),
        template="a {colour} {shape} in sks style",
    )
    prompts = [r["prompt"] for r in grid.records]
    scored = metrics.score_pictures(grid.images, prompts, seeds=[r["seed"] for r in grid.records])
    assert scored.records == grid.records and scored.style_rate == 1.0
    swapped = metrics.score_pictures(
        grid.images, prompts[1:] + prompts[:1], style="filled"
    )  # neighbour's prompt
    assert swapped.style_rate == 0.0 and swapped.both_accuracy < 1.0
    assert [r["seed"] for r in swapped.records] == [None] * len(prompts)


@pytest.mark.parametrize(
    ("images", "prompts", "message"),
    [
        ([Image.new("RGB", (8, 8))], [], "1 pictures for 0 prompts"),
        ([], [], "no pictures"),
        (
            [Image.new("RGB", (8, 8))],
            ["a teal circle"],
            "prompt 0 .'a teal circle'. does not start",
        ),
        ([Image.new("RGB", (8, 8))], ["circle"], "prompt 0"),
    ],
)
def test_scoring_pictures_refuses_what_it_cannot_score(images, prompts, message):
    with pytest.raises(ValueError, match=message):
        metrics.score_pictures(images, prompts)


def test_ink_mask_is_the_drawn_shape():
    spec = shapes.sample_spec(3, 0)
    image = shapes.render(spec)
    mask = metrics.ink_mask(image)
    want = np.abs(np.asarray(image, dtype=np.int16) - 255).max(-1) > metrics.INK_THRESHOLD
    assert mask.shape == (64, 64) and np.array_equal(mask, want) and 0 < mask.sum() < mask.size


# --- the shape and the styles the tiny SD never saw ------------------------------------------

EVERYTHING = {"shapes": shapes.ALL_SHAPES, "styles": shapes.ALL_STYLES}


def _all_world_accuracy(draw, count, seed):
    """Per shape and per style (over every shape x style of ``shapes.ALL_*``): the fraction of ``count``
    pictures that the detectors, told of every shape and style, read right; and the colour's."""
    right = {
        "colour": [],
        **{name: [] for name in (*shapes.ALL_SHAPES, *shapes.ALL_STYLES)},
    }  # (the cross: 2 styles)
    combos = [
        (shape, style)
        for shape in shapes.ALL_SHAPES
        for style in shapes.ALL_STYLES  # a cross: filled or outline
        if not (shape in shapes.NEW_SHAPES and style in shapes.NEW_STYLES)
    ]
    for index in range(count):
        shape, style = combos[index % len(combos)]
        spec = shapes.sample_spec(index, seed=seed, shape=shape, style=style)
        found = metrics.detect(draw(spec, index), **EVERYTHING)
        right["colour"].append(found["colour"] == spec.colour)
        right[shape].append(found["shape"] == shape)
        right[style].append(found["style"] == style)
    return {name: float(np.mean(hits)) for name, hits in right.items()}


def test_every_shape_and_style_on_clean_ground_truth():
    scores = _all_world_accuracy(lambda spec, _: shapes.render(spec), 1600, seed=2025)
    print(f"\nevery shape and style, clean: {scores}")
    assert min(scores.values()) >= 0.99, scores


def test_every_shape_and_style_hand_drawn():
    scores = _all_world_accuracy(
        lambda spec, i: shapes.render_sketch(spec, wobble=0.06, corner=0.15, seed=i), 1600, seed=97
    )
    print(f"\nevery shape and style, hand-drawn: {scores}")
    assert min(scores.values()) >= 0.97, scores


def test_the_default_detectors_know_only_what_the_tiny_sd_was_pretrained_on():
    cross = shapes.render(shapes.sample_spec(0, seed=1, shape="cross", colour="red"))
    assert metrics.detect(cross, **EVERYTHING)["shape"] == "cross"
    assert metrics.detect(cross)["shape"] in (
        *shapes.SHAPES,
        metrics.NONE,
    )  # the default has no cross template
    striped = shapes.render(shapes.sample_spec(0, seed=1, shape="square", style="striped"))
    assert metrics.detect(striped, **EVERYTHING)["style"] == "striped"
    assert metrics.detect(striped)["style"] in ("filled", "outline")
    with pytest.raises(ValueError, match="the detectors know the shapes .* not hexagon"):
        metrics.detect(cross, shapes=["hexagon"])
    with pytest.raises(ValueError, match="unknown style 'dotted'"):
        shapes.sample_spec(0, style="dotted")
