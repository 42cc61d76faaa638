"""The shapes world: the same seed and index give the same picture, captions are true to the
picture, and pictures of two shapes are seeded apart and named by their caption."""

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit import metrics, shapes


def test_same_index_same_bytes_and_seeds_differ():
    for index in range(20):
        first = shapes.render(shapes.sample_spec(index, seed=7)).tobytes()
        again = shapes.render(shapes.sample_spec(index, seed=7)).tobytes()
        assert first == again
    differ = sum(
        shapes.render(shapes.sample_spec(i, seed=0)).tobytes()
        != shapes.render(shapes.sample_spec(i, seed=1)).tobytes()
        for i in range(20)
    )
    assert differ == 20


def test_dataset_items_are_deterministic():
    a, b = (
        shapes.ShapesDataset(10, seed=3, empty_caption_prob=0.2),
        shapes.ShapesDataset(10, seed=3, empty_caption_prob=0.2),
    )
    for i in range(10):
        (x, cx), (y, cy) = a[i], b[i]
        assert torch.equal(x, y) and cx == cy


def _ink_median(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
    ink = pixels[np.abs(pixels - 255).max(axis=1) > 150]  # clearly not background
    return np.median(ink, axis=0)


def test_captions_match_the_picture():
    dataset = shapes.ShapesDataset(60, seed=5, size_word_prob=0.5)
    names = np.array(list(shapes.COLOURS.values()), dtype=np.float32)
    for i in range(len(dataset)):
        spec, caption = dataset.spec(i), dataset.caption(i)
        assert caption in (
            f"a {spec.colour} {spec.shape}",
            f"a {spec.size_word} {spec.colour} {spec.shape}",
        )
        # the named colour is the nearest to the colour actually drawn
        drawn = _ink_median(shapes.render(spec))
        assert list(shapes.COLOURS)[np.argmin(((names - drawn) ** 2).sum(axis=1))] == spec.colour
        lo, hi = shapes.SIZES[spec.size_word]
        assert lo <= spec.size <= hi


def test_pinned_choices_and_unknown_names():
    spec = shapes.sample_spec(4, shape="triangle", colour="blue", style="outline")
    assert (spec.shape, spec.colour, spec.style) == ("triangle", "blue", "outline")
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shapes.sample_spec(0, shape="hexagon")
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        shapes.sample_spec(0, colour="teal")


def test_the_new_styles_are_drawn_large_and_the_others_at_both_sizes():
    """A small shape has no room for the striped and double styles' strokes and gaps at the VAE's
    4 px a latent."""
    for style in shapes.ALL_STYLES:
        sizes = {
            shapes.sample_spec(i, seed=5, shape="square", style=style).size_word for i in range(40)
        }
        assert sizes == ({"large"} if style in shapes.NEW_STYLES else set(shapes.SIZES)), (
            style,
            sizes,
        )
        lo, hi = shapes.SIZES["large"]
        if style in shapes.NEW_STYLES:
            assert all(
                lo <= shapes.sample_spec(i, seed=5, style=style).size <= hi for i in range(40)
            )


def test_dataset_shape_range_and_caption_fractions():
    dataset = shapes.ShapesDataset(
        2000, seed=0, resolution=32, empty_caption_prob=0.1, size_word_prob=0.5
    )
    x, _ = dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.max() == 1  # white background is exactly 1
    captions = [dataset.caption(i) for i in range(len(dataset))]
    empty = sum(c == "" for c in captions) / len(captions)
    sized = sum(c.split()[1] in shapes.SIZES for c in captions if c) / sum(
        bool(c) for c in captions
    )
    assert 0.08 < empty < 0.12
    assert 0.45 < sized < 0.55
    with pytest.raises(IndexError):
        dataset[2000]


def test_two_shape_pictures_are_seeded_apart_and_named_by_their_caption():
    for i in range(200):
        a, b = shapes.sample_pair(i, seed=3)
        assert (a, b) == shapes.sample_pair(i, seed=3)
        assert a.colour != b.colour and a.size_word == b.size_word == "small"
        # opposite halves: their bounding boxes never meet
        apart_x = abs(a.cx - b.cx) >= (a.size + b.size) / 2
        apart_y = abs(a.cy - b.cy) >= (a.size + b.size) / 2
        assert apart_x or apart_y
        assert all(
            0 <= c - s.size / 2 and c + s.size / 2 <= 1 for s in (a, b) for c in (s.cx, s.cy)
        )
    assert shapes.pair_caption(shapes.sample_pair(0)) == " and ".join(
        s.caption() for s in shapes.sample_pair(0)
    )
    # each shape is drawn, and alone it is what its own caption says
    a, b = shapes.sample_pair(5)
    both = np.asarray(shapes.render_scene([a, b]), dtype=np.int16)
    for spec in (a, b):
        alone = np.asarray(shapes.render(spec), dtype=np.int16)
        assert metrics.detect(shapes.render(spec))["colour"] == spec.colour
        ink = np.abs(alone - 255).max(-1) > 80
        assert np.abs(both[ink] - alone[ink]).max() <= 1  # the other shape does not cover it


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
