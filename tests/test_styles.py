"""The outline style set: the committed folder equals what styles.make_outline_set writes, its
captions use the trigger the tiny SD never saw, held-out combinations really are held out, and
the detectors read its pictures right (so a style rate measured on a LoRA means something)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from lorakit import config, imagefolder, metrics, models, shapes, styles


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
    assert (
        styles.TEMPLATE.format(colour="blue", shape="circle") in with_trigger
    )  # evaluate_grid's template


@pytest.fixture(scope="module")
def tiny_sd():
    if not (config.TINY_SD_DIR / "model_index.json").is_file():
        pytest.skip("the tiny SD is not in data/models/tiny-sd")
    return (
        CLIPTokenizer.from_pretrained(config.TINY_SD_DIR / "tokenizer"),
        CLIPTextModel.from_pretrained(config.TINY_SD_DIR / "text_encoder").eval(),
    )


def test_trigger_is_a_word_the_tiny_sd_never_saw_and_one_token(tiny_sd):
    assert styles.TRIGGER in models.RESERVED_WORDS and styles.TRIGGER not in models.CAPTION_WORDS
    tokenizer, _ = tiny_sd
    unknown = tokenizer.unk_token_id
    for text in styles.style_prompts(held_out=False):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert len(ids) == len(text.split()) and unknown not in ids, (
            text
        )  # one token a word, none unknown


def test_trigger_after_the_prompt_leaves_the_prompt_tokens_unchanged(tiny_sd):
    """CLIP's text encoder is causal: "a blue circle" is encoded the same with the trigger after it."""
    tokenizer, encoder = tiny_sd
    plain, styled = (
        tokenizer(styles.caption("blue", "circle", trigger=t), return_tensors="pt").input_ids
        for t in (False, True)
    )
    n = (
        plain.shape[1] - 1
    )  # <start> a blue circle (the plain prompt's <end> is where the trigger goes)
    with torch.no_grad():
        a = encoder(plain).last_hidden_state[0, :n]  # (n, width)
        full = encoder(styled).last_hidden_state[0]  # (n + 4, width): + in sks style <end>
    torch.testing.assert_close(a, full[:n])
    assert (
        full.shape[0] == n + 4 and (full[n:] - a[-1]).abs().max() > 0.1
    )  # the trigger adds new tokens


def test_lesson_07s_loras_are_committed_for_the_current_settings():
    """Lesson 07 loads these instead of training four LoRAs in class: they must be the preset's, at every rank."""
    from lorakit import formats

    want = {styles.lora_folder_name(r, styles.LAB_STEPS): r for r in styles.LAB_RANKS}
    committed = {p.parent.name for p in styles.TRAINED_DIR.glob("*/lora.safetensors")}
    assert committed == set(want), (
        "data/loras/outline does not hold lesson 07's LoRAs for the current settings "
        f"(missing {set(want) - committed}, stale {committed - set(want)}): retrain them "
        "with `python -m lorakit.styles --loras` and delete the stale folders."
    )
    for name, r in want.items():
        weights = formats.load_lora(styles.TRAINED_DIR / name / "lora.safetensors")
        assert (weights.format, weights.r, weights.alpha, len(weights.modules)) == (
            "kohya",
            r,
            float(r),
            96,
        )
        assert not any(
            p.name != "lora.safetensors" for p in (styles.TRAINED_DIR / name).iterdir()
        ), "no checkpoints"


def test_train_or_load_takes_a_committed_lora_without_training(tmp_path):
    path = styles.train_or_load(
        object(), styles.LAB_RANKS[0], styles.LAB_STEPS, tmp_path
    )  # no pipeline needed
    assert path.is_relative_to(styles.TRAINED_DIR) and not any(tmp_path.iterdir())


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
