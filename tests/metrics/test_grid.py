"""The prompt-grid score on generators that are right or wrong by construction, and on pictures
already drawn."""

import pytest
from PIL import Image

from lorakit import metrics, shapes


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
