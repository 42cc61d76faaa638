"""Image folders: a written folder reads back bit-exactly, pictures of any mode become RGB, and
every kind of bad input gets a clear message naming the file and line."""

import json
import os

import pytest
import torch
from PIL import Image

from lorakit import imagefolder, shapes


def captioned_shapes(n, resolution=64):
    """``n`` shapes-world pictures and their captions, to write as an image folder."""
    specs = [shapes.sample_spec(i, seed=11) for i in range(n)]
    return [shapes.render(s, resolution) for s in specs], [s.caption() for s in specs]


def test_imagefolder_round_trip(tmp_path):
    images, captions = captioned_shapes(5)
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
    images, captions = captioned_shapes(2)
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        imagefolder.write_imagefolder(tmp_path, images, captions[:1])
    with pytest.raises(ValueError, match="caption 1 is empty"):
        imagefolder.write_imagefolder(tmp_path, images, [captions[0], ""])
    assert not (tmp_path / "metadata.jsonl").exists()  # refused before writing anything
    tensors = [imagefolder.to_tensor(image) for image in images]
    imagefolder.write_imagefolder(tmp_path, tensors, captions)  # tensors in [-1, 1] are accepted
    assert torch.equal(imagefolder.ImageFolderDataset(tmp_path)[1][0], tensors[1])
