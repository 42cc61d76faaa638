"""The detectors against ground truth (shapes-world pictures whose spec we know), with and
without noise, drawn by hand, and beyond the pretraining world (the cross, striped and double)."""

from functools import cache

import numpy as np
import pytest
from PIL import Image

from lorakit import imaging, metrics, shapes

N = 1000  # pictures per accuracy measurement


@cache
def _ground_truth(style, seed=2024):
    """N random pictures of ``style`` and their specs (rendered once, shared by the tests)."""
    specs = [shapes.sample_spec(index, seed=seed, style=style) for index in range(N)]
    return specs, [
        np.asarray(shapes.render(spec), dtype=np.float64) for spec in specs
    ]  # (64, 64, 3) each


def _accuracies(style, sigma=0.0):
    """Fraction of the N ground-truth pictures whose colour, shape and style the detectors get
    right."""
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
    """Per-shape fraction of hand-drawn pictures (``shapes.render_sketch``) whose shape is read
    right."""
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
    assert metrics.detect(imaging.to_tensor(image)) == expected  # (3, H, W) in [-1, 1]
    assert metrics.detect(imaging.to_tensor(image)[None]) == expected  # (1, 3, H, W)
    assert metrics.detect(np.asarray(image)) == expected
    assert metrics.detect(shapes.render(spec, 512)) == expected  # full-mode size
    assert metrics.detect_colour(image) == spec.colour and metrics.detect_shape(image) == spec.shape
    assert metrics.detect_style(image) == "outline"
    with pytest.raises(TypeError, match="expected a PIL image"):
        metrics.detect("picture.png")
    with pytest.raises(TypeError, match="uint8 array in 0..255, got dtype float64"):
        metrics.detect(np.asarray(image) / 255.0)


# --- the shape and the styles the tiny SD never saw ------------------------------------------

EVERYTHING = {"shapes": shapes.ALL_SHAPES, "styles": shapes.ALL_STYLES}


def _all_world_accuracy(draw, count, seed):
    """Per shape and per style (over every shape x style of ``shapes.ALL_*``): the fraction of
    ``count`` pictures that the detectors, told of every shape and style, read right; and the
    colour's."""
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
