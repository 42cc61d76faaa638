"""The outline style set: the committed folder equals what styles.make_outline_set writes, its
captions use the trigger the tiny SD never saw, held-out combinations really are held out, and
the detectors read its pictures right (so a style rate measured on a LoRA means something)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit import imagefolder, metrics, models, shapes, styles


def _rows(folder):
    lines = (folder / imagefolder.METADATA).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_committed_set_equals_what_make_outline_set_writes(tmp_path):
    made = styles.make_outline_set(tmp_path / "outline")
    committed_rows, made_rows = _rows(styles.OUTLINE_DIR), _rows(made)
    assert committed_rows == made_rows  # same file names and captions, same order
    assert len(committed_rows) == styles.OUTLINE_SIZE
    for row in committed_rows:
        with (
            Image.open(styles.OUTLINE_DIR / row["file_name"]) as a,
            Image.open(made / row["file_name"]) as b,
        ):
            assert a.format == "PNG" and a.mode == "RGB" and a.size == (64, 64)
            assert np.array_equal(np.asarray(a), np.asarray(b)), row["file_name"]
    extra = (
        {p.name for p in styles.OUTLINE_DIR.iterdir()}
        - {r["file_name"] for r in committed_rows}
        - {imagefolder.METADATA}
    )
    assert not extra, f"files in {styles.OUTLINE_DIR} that metadata.jsonl does not list: {extra}"


def test_the_set_reads_as_an_image_folder():
    dataset = imagefolder.ImageFolderDataset(styles.OUTLINE_DIR)
    image, caption = dataset[0]
    assert len(dataset) == styles.OUTLINE_SIZE
    assert image.shape == (3, 64, 64) and image.min() >= -1 and image.max() <= 1
    assert caption == styles.caption(*styles.OUTLINE_TRAIN[0])


def test_detectors_read_every_picture_of_the_set_as_its_caption_says():
    dataset = imagefolder.ImageFolderDataset(styles.OUTLINE_DIR)
    parsed = {styles.caption(c, s): (c, s) for c in shapes.COLOURS for s in shapes.SHAPES}
    for i in range(len(dataset)):
        colour, shape = parsed[dataset.caption(i)]
        assert metrics.detect(dataset.image(i)) == {
            "colour": colour,
            "shape": shape,
            "style": "outline",
        }


def test_detector_tells_outline_from_filled_on_pictures_like_the_set():
    n = 250  # 250 outline + the same 250 shapes filled = 500 ground-truth pictures
    right = 0
    for style in ("outline", "filled"):
        for spec, _ in styles.outline_examples(count=n, seed=1000, style=style):
            right += metrics.detect_style(shapes.render(spec)) == style
    assert right / (2 * n) >= 0.99, right


def test_held_out_combinations_are_absent_and_every_colour_and_shape_is_present():
    captions = {row["text"] for row in _rows(styles.OUTLINE_DIR)}
    held_out = set(styles.style_prompts(held_out=True))
    assert held_out and not held_out & captions
    assert set(styles.style_prompts(held_out=False)) == captions
    seen = set(styles.OUTLINE_TRAIN)
    assert {c for c, _ in seen} == set(shapes.COLOURS) and {s for _, s in seen} == set(
        shapes.SHAPES
    )
    assert seen.isdisjoint(styles.OUTLINE_HELD_OUT)
    assert len(seen) + len(styles.OUTLINE_HELD_OUT) == len(shapes.COLOURS) * len(shapes.SHAPES)


def test_style_prompts_with_and_without_trigger():
    with_trigger = styles.style_prompts()
    plain = styles.style_prompts(trigger=False)
    assert [p.replace(f" in {styles.TRIGGER} style", "") for p in with_trigger] == plain
    # evaluate_grid's template
    assert styles.TEMPLATE.format(colour="blue", shape="circle") in with_trigger


@pytest.mark.parametrize("style", ["outline", "striped", "double"])
def test_style_prompts_take_each_style_under_its_own_trigger(style):
    prompts = styles.style_prompts(style=style)
    assert prompts == [styles.style_caption(style, c, s) for c, s in styles.OUTLINE_HELD_OUT]
    assert all(p.endswith(f" in {styles.TRIGGERS[style]} style") for p in prompts)
    assert styles.style_prompts(trigger=False, style=style) == styles.style_prompts(trigger=False)
    with pytest.raises(ValueError, match="no style set"):
        styles.style_prompts(style="cross")


def test_trigger_is_a_word_the_tiny_sd_never_saw_and_one_token(shared_pipe):
    assert styles.TRIGGER in models.RESERVED_WORDS and styles.TRIGGER not in models.CAPTION_WORDS
    tokenizer = shared_pipe.tokenizer
    unknown = tokenizer.unk_token_id
    for text in styles.style_prompts(held_out=False):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        # one token a word, none unknown
        assert len(ids) == len(text.split()) and unknown not in ids, text


def test_trigger_after_the_prompt_leaves_the_prompt_tokens_unchanged(shared_pipe):
    """CLIP's text encoder is causal: "a blue circle" is encoded the same with the trigger after
    it."""
    tokenizer, encoder = shared_pipe.tokenizer, shared_pipe.text_encoder
    plain, styled = (
        tokenizer(styles.caption("blue", "circle", trigger=t), return_tensors="pt").input_ids
        for t in (False, True)
    )
    # <start> a blue circle (the plain prompt's <end> is where the trigger goes)
    n = plain.shape[1] - 1
    with torch.no_grad():
        a = encoder(plain).last_hidden_state[0, :n]  # (n, width)
        full = encoder(styled).last_hidden_state[0]  # (n + 4, width): + in sks style <end>
    torch.testing.assert_close(a, full[:n])
    # the trigger adds new tokens
    assert full.shape[0] == n + 4 and (full[n:] - a[-1]).abs().max() > 0.1


@pytest.mark.parametrize("name", ["striped", "double", "cross"])
def test_the_other_committed_sets_equal_what_their_makers_write(tmp_path, name):
    made = (
        styles.make_cross_set(tmp_path / name)
        if name == "cross"
        else styles.make_style_set(name, tmp_path / name)
    )
    committed = styles.CROSS_DIR if name == "cross" else styles.style_dir(name)
    assert _rows(committed) == _rows(made)
    assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in made.iterdir())
    for row in _rows(committed):
        with (
            Image.open(committed / row["file_name"]) as a,
            Image.open(made / row["file_name"]) as b,
        ):
            assert np.array_equal(np.asarray(a), np.asarray(b)), row["file_name"]


@pytest.mark.parametrize("name", ["striped", "double", "cross"])
def test_the_detectors_read_every_picture_of_the_other_sets_as_its_caption_says(name):
    folder = styles.CROSS_DIR if name == "cross" else styles.style_dir(name)
    for row in _rows(folder):
        words = row["text"].split()
        found = metrics.detect(
            Image.open(folder / row["file_name"]),
            shapes=shapes.ALL_SHAPES,
            styles=shapes.ALL_STYLES,
        )
        want_style = "filled" if name == "cross" else name
        assert (found["colour"], found["shape"], found["style"]) == (
            words[1],
            words[2],
            want_style,
        ), (row, found)
    if name != "cross":
        assert all(styles.TRIGGERS[name] in row["text"] for row in _rows(folder))
