"""Bad image folders and captions: high-bit-depth pictures scaled (not clipped), values that
cannot be colours, links out of the folder and slivers refused by name; a caption too long cut with
one warning, not a flood of them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit import imagefolder, sample, train


def folder_with(tmp_path, pictures: dict):
    """An image folder of ``pictures`` ({file name: PIL image}), each captioned "a red circle"."""
    folder = tmp_path / "data"
    folder.mkdir()
    for file_name, picture in pictures.items():
        picture.save(folder / file_name)
    (folder / imagefolder.METADATA).write_text(
        "".join(json.dumps({"file_name": f, "text": "a red circle"}) + "\n" for f in pictures)
    )
    return folder


@pytest.mark.parametrize(
    "array, mode, suffix, want",
    [
        # 16-bit grey: 32896 / 257 = 128
        (np.full((64, 64), 32896, np.uint16), "I;16", ".png", 128),
        # 32-bit integers holding 16-bit values
        (np.full((64, 64), 51400, np.int32), "I", ".tif", 200),
        # floats in [0, 1]
        (np.full((64, 64), 0.25, np.float32), "F", ".tif", 64),
    ],
)
def test_high_bit_depth_pictures_are_scaled_not_clipped(tmp_path, array, mode, suffix, want):
    picture = Image.fromarray(array)
    assert picture.mode == mode
    folder = folder_with(tmp_path, {f"grey{suffix}": picture})
    with Image.open(folder / f"grey{suffix}") as reopened:
        assert reopened.mode.startswith(mode[0])  # the file really is high bit depth
    image = imagefolder.ImageFolderDataset(folder, resolution=64).image(0)
    assert np.asarray(image).mean() == pytest.approx(want, abs=0.5)


@pytest.mark.parametrize(
    "array, mode",
    [(np.full((8, 8), 2**20, np.int32), "I"), (np.full((8, 8), 3.0, np.float32), "F")],
)
def test_pictures_whose_values_cannot_be_colours_are_refused_by_name(tmp_path, array, mode):
    folder = folder_with(tmp_path, {"odd.tif": Image.fromarray(array)})
    with pytest.raises(
        ValueError,
        match=r"line 1: 'odd.tif' is a (I|F) picture with values from .* save it as an 8-bit",
    ):
        imagefolder.read_imagefolder(folder)


def test_links_out_of_the_folder_are_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8), "red").save(outside / "secret.png")
    inside = Image.new("RGB", (8, 8), "blue")
    folder = tmp_path / "data"
    folder.mkdir()
    inside.save(folder / "ok.png")
    (folder / "same_folder_link.png").symlink_to(folder / "ok.png")
    (folder / "file_link.png").symlink_to(outside / "secret.png")
    (folder / "dir_link").symlink_to(outside, target_is_directory=True)
    rows = ["ok.png", "same_folder_link.png", "file_link.png", "dir_link/secret.png"]
    (folder / imagefolder.METADATA).write_text(
        "".join(json.dumps({"file_name": f, "text": "x"}) + "\n" for f in rows)
    )
    with pytest.raises(ValueError, match="2 problem") as error:
        imagefolder.read_imagefolder(folder)
    message = str(error.value)
    assert (
        "line 3: file_name 'file_link.png' is a link to" in message
        and "line 4: file_name 'dir_link/secret.png'" in message
    )
    assert "line 1" not in message and "line 2" not in message  # a link inside the folder is fine


def test_a_sliver_of_a_picture_is_refused_before_it_is_blown_up(tmp_path):
    folder = folder_with(tmp_path, {"sliver.png": Image.new("RGB", (1, 100_000), "red")})
    with pytest.raises(ValueError, match=r"'sliver.png' is 1x100000, more than 8:1"):
        imagefolder.ImageFolderDataset(folder, resolution=64)


def test_a_caption_too_long_is_cut_with_one_warning_and_no_flood(capfd, shared_pipe):
    prompt = " ".join(["a red circle"] * 3000)  # 9,000 words
    with pytest.warns(
        UserWarning, match=r"1 of 1 prompts are longer than the 77 tokens .*the longest has 9002\)"
    ):
        sample.generate(shared_pipe, [prompt, prompt], [0, 1], num_inference_steps=1)
    assert len(capfd.readouterr().err) < 2000, "the pipeline printed each cut prompt"
    with pytest.warns(UserWarning, match=r"1 of 1 captions are longer than the 77 tokens"):
        train.cache_dataset(shared_pipe, [(torch.zeros(3, 64, 64), prompt)], 64)
