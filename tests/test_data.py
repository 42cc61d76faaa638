"""The shapes world (deterministic, captions true to the picture) and image folders (round trip,
and a clear message for every kind of bad input)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit import imagefolder, shapes

# --- the shapes world ------------------------------------------------------------------------


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
    """A small shape has no room for the striped and double styles' strokes and gaps at the VAE's 4 px a latent."""
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
    from lorakit import metrics

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


def test_tensor_image_round_trip_is_exact():
    image = shapes.render(shapes.sample_spec(1))
    assert imagefolder.to_image(imagefolder.to_tensor(image)).tobytes() == image.tobytes()


# --- image folders -----------------------------------------------------------------------------


def _pictures(n, resolution=64):
    specs = [shapes.sample_spec(i, seed=11) for i in range(n)]
    return [shapes.render(s, resolution) for s in specs], [s.caption() for s in specs]


def test_imagefolder_round_trip(tmp_path):
    images, captions = _pictures(5)
    folder = imagefolder.write_imagefolder(tmp_path / "style", images, captions)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == captions
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]  # no temporary files left
    dataset = imagefolder.ImageFolderDataset(folder, resolution=64)
    assert len(dataset) == 5
    for i in range(5):
        x, caption = dataset[i]
        assert caption == captions[i]
        assert torch.equal(
            x, imagefolder.to_tensor(images[i])
        )  # PNG is lossless, same size: bit-exact


def test_imagefolder_resizes_and_crops(tmp_path):
    wide = Image.new("RGB", (128, 64), (255, 0, 0))
    wide.paste((0, 0, 255), (32, 0, 96, 64))  # blue centre square, red sides
    imagefolder.write_imagefolder(tmp_path, [wide], ["a wide picture"])
    x, _ = imagefolder.ImageFolderDataset(tmp_path, resolution=32, center_crop=True)[0]
    assert x.shape == (3, 32, 32)
    assert torch.allclose(
        x[:, 4:-4, 4:-4], torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1)
    )  # only blue
    y, _ = imagefolder.ImageFolderDataset(tmp_path, resolution=32, center_crop=False)[0]
    assert y[0, 16, 1] > 0.9 and y[2, 16, 16] > 0.9  # squashed: red sides kept, blue centre


def test_mixed_modes_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent: white after compositing
    rgba.paste((255, 0, 0, 255), (0, 0, 8, 16))
    images = {
        "grey.png": Image.new("L", (16, 16), 100),
        "alpha.png": rgba,
        "palette.png": Image.new("RGB", (16, 16), (0, 255, 0)).convert("P"),
        "cmyk.jpg": Image.new("CMYK", (16, 16), (0, 0, 0, 0)),
    }
    lines = []
    for name, image in images.items():
        image.save(tmp_path / name)
        lines.append(json.dumps({"file_name": name, "text": name}))
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    dataset = imagefolder.ImageFolderDataset(tmp_path, resolution=16)
    got = {
        caption: imagefolder.to_image(x) for x, caption in (dataset[i] for i in range(len(dataset)))
    }
    assert all(image.mode == "RGB" and image.size == (16, 16) for image in got.values())
    assert got["grey.png"].getpixel((3, 3)) == (100, 100, 100)
    assert got["alpha.png"].getpixel((2, 8)) == (255, 0, 0)
    assert got["alpha.png"].getpixel((13, 8)) == (255, 255, 255)
    assert got["palette.png"].getpixel((8, 8)) == (0, 255, 0)
    assert min(got["cmyk.jpg"].getpixel((8, 8))) >= 250  # no ink is white


def _folder(tmp_path, lines, files=("0000.png",)):
    for name in files:
        shapes.render(shapes.sample_spec(0)).save(tmp_path / name)
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


GOOD = '{"file_name": "0000.png", "text": "a red circle"}'


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"file_name": "0000.png", "text": ', r"metadata.jsonl line 2 is not valid JSON: "),
        ('["0000.png", "a red circle"]', r"metadata.jsonl line 2 is not a JSON object"),
        ('{"file_name": "0000.png"}', r"metadata.jsonl line 2 has no 'text' field"),
        ('{"file_name": "0000.png", "text": "  "}', r"metadata.jsonl line 2 has an empty 'text'"),
        ('{"text": "a red circle"}', r"metadata.jsonl line 2 has no 'file_name' field"),
        (
            '{"file_name": "missing.png", "text": "x"}',
            r"metadata.jsonl line 2: file 'missing.png' does not exist",
        ),
        (
            '{"file_name": "../0000.png", "text": "x"}',
            r"line 2: file_name '../0000.png' points outside the folder",
        ),
        (
            '{"file_name": "/etc/passwd", "text": "x"}',
            r"line 2: file_name '/etc/passwd' is an absolute path",
        ),
        (
            '{"file_name": "C:/x.png", "text": "x"}',
            r"line 2: file_name 'C:/x.png' is an absolute path",
        ),
        (
            '{"file_name": "./0000.png", "text": "x"}',
            r"line 2: file_name './0000.png' is a duplicate of line 1",
        ),
    ],
)
def test_bad_metadata_lines(tmp_path, bad_line, message):
    with pytest.raises(ValueError, match=message):
        imagefolder.ImageFolderDataset(_folder(tmp_path, [GOOD, bad_line]))


def test_unreadable_images_are_named(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture")
    good = tmp_path / "good.png"
    shapes.render(shapes.sample_spec(0)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:-40])  # truncated
    lines = [
        json.dumps({"file_name": n, "text": "x"}) for n in ("good.png", "notes.png", "cut.png")
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines))
    with pytest.raises(ValueError, match="2 problem") as error:
        imagefolder.ImageFolderDataset(tmp_path)
    assert "line 2: 'notes.png' is not a readable image" in str(error.value)
    assert "line 3: 'cut.png' is not a readable image" in str(error.value)


def test_every_problem_listed_at_once(tmp_path):
    lines = [GOOD] + ['{"file_name": "0000.png"}'] * 14
    with pytest.raises(ValueError, match="has 14 problem") as error:
        imagefolder.ImageFolderDataset(_folder(tmp_path, lines))
    text = str(error.value)
    assert "line 2 has no 'text'" in text and "line 11 has no 'text'" in text
    assert "line 12 " not in text and "... and 4 more" in text


def test_folder_level_problems(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        imagefolder.ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty: it needs the images and a metadata.jsonl"):
        imagefolder.ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "loose").mkdir()
    shapes.render(shapes.sample_spec(0)).save(tmp_path / "loose" / "a.png")
    with pytest.raises(ValueError, match="has no metadata.jsonl"):
        imagefolder.ImageFolderDataset(tmp_path / "loose")
    (tmp_path / "loose" / "metadata.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="has no rows"):
        imagefolder.ImageFolderDataset(tmp_path / "loose")
    with pytest.raises(ValueError, match="is not a folder"):
        imagefolder.ImageFolderDataset(tmp_path / "loose" / "a.png")


def test_write_imagefolder_refuses_bad_input(tmp_path):
    images, captions = _pictures(2)
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        imagefolder.write_imagefolder(tmp_path, images, captions[:1])
    with pytest.raises(ValueError, match="caption 1 is empty"):
        imagefolder.write_imagefolder(tmp_path, images, [captions[0], ""])
    assert not (tmp_path / "metadata.jsonl").exists()  # refused before writing anything
    tensors = [imagefolder.to_tensor(image) for image in images]
    imagefolder.write_imagefolder(tmp_path, tensors, captions)  # tensors in [-1, 1] are accepted
    assert torch.equal(imagefolder.ImageFolderDataset(tmp_path)[1][0], tensors[1])
