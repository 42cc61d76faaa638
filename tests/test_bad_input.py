"""Bad LoRA files and arguments: a one-line lorakit error that names the file, the key or the argument,
and the model exactly as it was (weights, modules and ``requires_grad`` flags).

Every case file is built here from a valid LoRA of the tiny SD. The references for what a setting
means are diffusers' and kohya's: where they disagree (alpha 0), lorakit refuses rather than pick one.
"""

import copy
import json
import math
import struct

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from lorakit import cli, formats, imagefolder, inject, models, sample, train

R, ALPHA = 4, 2.0
KOHYA_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q"


@pytest.fixture(scope="module")
def unet():
    """The tiny SD's UNet as loaded: no LoRA, every parameter trainable."""
    return models.load_pipeline("tiny").unet


@pytest.fixture(scope="module")
def trained(unet):
    lora_unet = copy.deepcopy(unet)
    inject.inject_lora(lora_unet, r=R, alpha=ALPHA)
    torch.manual_seed(0)
    with torch.no_grad():
        for _, layer in inject.lora_layers(lora_unet):
            layer.lora_B.weight.normal_(std=0.05)
    return formats.from_model(lora_unet)


@pytest.fixture
def files(trained, tmp_path):
    """A valid kohya, diffusers and PEFT LoRA, written in this test's folder."""
    return {
        fmt: formats.save_weights(
            trained, tmp_path / (fmt if fmt == "peft" else f"{fmt}.safetensors"), fmt
        )
        for fmt in formats.FORMATS
    }


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        [type(m).__name__ for _, m in model.named_modules()],
    )


def assert_unchanged(model, before):
    state, flags, kinds = snapshot(model)
    assert kinds == before[2], "modules were replaced"
    assert flags == before[1], "requires_grad flags changed"
    assert state.keys() == before[0].keys() and all(
        torch.equal(v, before[0][k]) for k, v in state.items()
    )


def rewrite(src, dst, change=None, metadata=None):
    """``src``'s tensors passed through ``change`` (a dict -> dict function), saved at ``dst`` with ``metadata``
    (default: ``src``'s own)."""
    with safetensors.safe_open(str(src), "pt") as f:
        tensors, old = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    safetensors.torch.save_file(
        change(tensors) if change else tensors, dst, metadata=old if metadata is None else metadata
    )
    return dst


def refused(path, *words, model=None):
    """``load_lora`` (and ``apply_lora`` into a fresh copy of ``model``) refuse ``path`` with one line that holds ``words``."""
    with pytest.raises(formats.LoRAFileError) as error:
        formats.load_lora(path)
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message
    if model is not None:
        before = snapshot(model)
        with pytest.raises(formats.LoRAFileError):
            formats.apply_lora(model, path)
        assert_unchanged(model, before)
    return message


def diffusers_metadata(path):
    with safetensors.safe_open(str(path), "pt") as f:
        return f.metadata()


# --- LoRA files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "packed, words",
    [
        ("[1, 2]", ["a JSON list"]),
        ('"r=4"', ["a JSON str"]),
        ('{"unet.r": 4, "unet.lora_alpha": [2]}', ["unet.lora_alpha", "[2]"]),
        ('{"unet.r": 4, unet.lora_alpha: 2}', ["not valid JSON"]),
        ('{"unet.use_rslora": "yes"}', ["unet.use_rslora"]),
    ],
)
def test_malformed_diffusers_metadata_names_the_file_and_the_key(
    files, unet, tmp_path, packed, words
):
    src = files["diffusers"]
    bad = rewrite(
        src,
        tmp_path / "bad.safetensors",
        metadata=diffusers_metadata(src) | {formats.METADATA_KEY: packed},
    )
    message = refused(bad, "bad.safetensors", *words, model=unet)
    assert formats.METADATA_KEY in message


@pytest.mark.parametrize(
    "config", ["[4, 2]", '"lora"', "{not json", '{"r": 4, "lora_alpha": "two"}']
)
def test_a_malformed_adapter_config_names_the_file(files, tmp_path, config):
    (files["peft"] / formats.PEFT_CONFIG).write_text(config)
    refused(files["peft"], formats.PEFT_CONFIG)


def rank_zero(tensors):
    return {
        k: (
            torch.zeros(0, v.shape[1])
            if k.endswith("lora_down.weight")
            else torch.zeros(v.shape[0], 0)
            if k.endswith("lora_up.weight")
            else v
        )
        for k, v in tensors.items()
    }


def test_a_rank_0_file_is_refused_and_info_says_so(files, unet, tmp_path, lorakit_cli):
    bad = rewrite(files["kohya"], tmp_path / "r0.safetensors", rank_zero)
    refused(bad, "r0.safetensors", "rank 0", model=unet)
    code, out, err = lorakit_cli("info", bad)
    assert (
        code == 2
        and err.startswith("lorakit: error: ")
        and "rank 0" in err
        and err.count("\n") == 1
    ), err


def poison(value, key=f"{KOHYA_Q}.lora_up.weight"):
    def change(tensors):
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[3] = value
        return tensors

    return change


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_by_key(files, unet, tmp_path, value):
    bad = rewrite(files["kohya"], tmp_path / "nan.safetensors", poison(value))
    message = refused(
        bad, "nan.safetensors", f"{KOHYA_Q}.lora_up.weight", "NaN or infinite", model=unet
    )
    assert message.lower().count("nan") <= 2, message


@pytest.mark.parametrize(
    "alpha, words",
    [
        (math.nan, ["NaN or infinite"]),
        (math.inf, ["NaN or infinite"]),
        (-2.0, ["alpha must be a positive finite number"]),
        (0.0, ["alpha is 0"]),
    ],
)
def test_bad_kohya_alphas_are_refused(files, unet, tmp_path, alpha, words):
    def change(tensors):
        return {k: torch.tensor(alpha) if k.endswith(".alpha") else v for k, v in tensors.items()}

    bad = rewrite(files["kohya"], tmp_path / "alpha.safetensors", change)
    message = refused(bad, "alpha.safetensors", *words, model=unet)
    assert message.lower().count("nan") <= 2, message  # one alpha named once, not 64 times


@pytest.mark.parametrize("shape", [(0,), (2,), (1, 2)])
def test_an_alpha_that_is_not_one_number_names_its_key(files, tmp_path, shape):
    def change(tensors):
        return tensors | {f"{KOHYA_Q}.alpha": torch.full(shape, 2.0)}

    bad = rewrite(files["kohya"], tmp_path / "alpha.safetensors", change)
    refused(bad, "alpha.safetensors", f"{KOHYA_Q}.alpha", "one number")


def test_lora_alpha_0_is_refused_where_diffusers_would_silently_switch_the_lora_off(
    files, unet, tmp_path
):
    src = files["diffusers"]
    packed = json.loads(diffusers_metadata(src)[formats.METADATA_KEY]) | {"unet.lora_alpha": 0}
    bad = rewrite(
        src,
        tmp_path / "a0.safetensors",
        metadata=diffusers_metadata(src) | {formats.METADATA_KEY: json.dumps(packed)},
    )
    message = refused(bad, "a0.safetensors", "alpha is 0", "diffusers", model=unet)
    assert f"set it to {R}" in message


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8])
def test_integer_and_bool_weights_are_refused(files, unet, tmp_path, dtype):
    key = f"{KOHYA_Q}.lora_down.weight"
    bad = rewrite(
        files["kohya"], tmp_path / "int.safetensors", lambda t: t | {key: t[key].to(dtype)}
    )
    refused(bad, "int.safetensors", key, "floating point", model=unet)


@pytest.mark.parametrize("alpha", [-2.0, math.inf, math.nan, 0.0])
def test_bad_weights_are_refused_by_a_unet_that_already_has_lora_layers(trained, unet, alpha):
    lora_unet = copy.deepcopy(unet)
    formats.apply_lora(lora_unet, trained)
    before = snapshot(lora_unet)
    with pytest.raises(formats.LoRAFileError, match="alpha must be a positive finite number"):
        formats.apply_lora(lora_unet, formats.LoRAWeights("kohya", R, alpha, trained.A, trained.B))
    assert_unchanged(lora_unet, before)
    assert all(layer.alpha == ALPHA for _, layer in inject.lora_layers(lora_unet))


@pytest.mark.parametrize("case", ["alpha -2", "NaN in B", "r 0", "scale nan"])
def test_a_refused_apply_leaves_the_model_exactly_as_it_was(trained, unet, case):
    model = copy.deepcopy(unet)
    model.get_submodule("conv_in").requires_grad_(
        False
    )  # flags that are not all alike show any reset
    weights = copy.deepcopy(trained)
    scale = 1.0
    if case == "alpha -2":
        weights.alpha = -2.0
    elif case == "NaN in B":
        next(iter(weights.B.values()))[0, 0] = math.nan
    elif case == "r 0":
        weights.r, weights.A, weights.B = (
            0,
            {m: a[:0] for m, a in weights.A.items()},
            {m: b[:, :0] for m, b in weights.B.items()},
        )
    else:
        scale = math.nan
    before = snapshot(model)
    with pytest.raises(ValueError):
        formats.apply_lora(model, weights, scale=scale)
    assert_unchanged(model, before)


def test_a_failure_inside_inject_restores_the_flags(unet, monkeypatch):
    model = copy.deepcopy(unet)
    before = snapshot(model)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        inject.inject_lora(model, r=R, alpha=math.inf)
    assert_unchanged(model, before)


def write_raw(path, header: dict, data: bytes):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_a_million_tiny_tensors_are_refused_from_the_header(tmp_path):
    import time

    n = 1_000_000
    header = {
        f"{formats.KOHYA_PREFIX}x{i}.alpha": {
            "dtype": "F32",
            "shape": [],
            "data_offsets": [4 * i, 4 * i + 4],
        }
        for i in range(n)
    }
    path = write_raw(tmp_path / "million.safetensors", header, bytes(4 * n))
    assert path.stat().st_size > 70e6
    start = time.perf_counter()
    refused(path, "million.safetensors", "header is", "MB")
    assert time.perf_counter() - start < 1.0  # the header is not even read
    few = {k: header[k] for k in list(header)[: formats.MAX_TENSORS + 1]}
    refused(
        write_raw(tmp_path / "many.safetensors", few, bytes(4 * n)), "many.safetensors", "tensors"
    )


def test_a_corrupt_file_whose_header_length_starts_like_a_pickle_is_not_called_one(files, tmp_path):
    # A header 640 bytes long: its length, little-endian, begins 0x80 0x02, as a pickle of protocol 2 does.
    with safetensors.safe_open(str(files["kohya"]), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in list(f.keys())[:3]}
    small = tmp_path / "small.safetensors"
    safetensors.torch.save_file(tensors, small)
    header_len = int.from_bytes(small.read_bytes()[:8], "little")
    raw = small.read_bytes()
    header = json.loads(raw[8 : 8 + header_len])
    header["__metadata__"] = {"pad": ""}
    header["__metadata__"]["pad"] = "x" * (640 - len(json.dumps(header, separators=(",", ":"))))
    path = write_raw(tmp_path / "corrupt.safetensors", header, raw[8 + header_len :])
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert len(formats.load_lora(path).modules) == 1  # valid as it is ...
    cut = path.read_bytes().rindex(b".", 0, 600) + 1
    path.write_bytes(path.read_bytes()[:cut])  # ... and truncated, after a "." as a pickle ends
    message = refused(path, "corrupt.safetensors", "not a valid safetensors file", "truncated")
    assert "pickle" not in message


# --- sampling --------------------------------------------------------------------------------


def test_sample_refuses_pictures_that_come_out_nan(files, tmp_path, lorakit_cli):
    huge = rewrite(
        files["kohya"],
        tmp_path / "huge.safetensors",
        lambda t: {k: v * 1e18 if k.endswith("lora_up.weight") else v for k, v in t.items()},
    )
    out = tmp_path / "grid.png"
    code, _, err = lorakit_cli(
        "sample",
        "--lora",
        huge,
        "--prompt",
        "a red circle",
        "--seeds",
        0,
        "--steps",
        2,
        "--out",
        out,
    )
    assert code == 2 and "NaN or infinite" in err and err.count("\n") == 1, err
    assert not out.exists()


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--rank", 0], "--rank: 0 is not a positive integer"),
        (["train", "--alpha", "nan"], "--alpha: nan is not a positive finite number"),
        (["train", "--steps", -1], "--steps: -1 is not a positive integer"),
        (["train", "--lr", 0], "--lr: 0 is not a positive finite number"),
        (["train", "--resolution", 0], "--resolution: 0 is not a positive multiple of 64"),
        (["train", "--resolution", 7], "--resolution: 7 is not a positive multiple of 64"),
        (["train", "--seed", 2**64], f"--seed: {2**64} is not a seed"),
        (["train", "--caption-dropout", 1.5], "--caption-dropout: 1.5 is not a fraction"),
        (["sample", "--steps", -1], "--steps: -1 is not a positive integer"),
        (["sample", "--scale", "nan"], "--scale: nan is not a finite number"),
        (["sample", "--seeds", 2**64], "--seeds"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_loaded_or_written(
    lorakit_cli, tmp_path, monkeypatch, argv, words
):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded for a refused command")

    monkeypatch.setattr(cli, "_load", no_loading)
    required = {
        "train": ["--data", tmp_path / "data", "--out", tmp_path / "run"],
        "sample": ["--prompt", "a red circle", "--out", tmp_path / "g.png"],
    }
    code, out, err = lorakit_cli(*argv[:1], *required[argv[0]], *argv[1:])
    assert code == 2 and words in err and err.count("\n") == 1 and "usage" not in err, err
    assert list(tmp_path.iterdir()) == []


# --- image folders ---------------------------------------------------------------------------


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
        (
            np.full((64, 64), 32896, np.uint16),
            "I;16",
            ".png",
            128,
        ),  # 16-bit grey: 32896 / 257 = 128
        (
            np.full((64, 64), 51400, np.int32),
            "I",
            ".tif",
            200,
        ),  # 32-bit integers holding 16-bit values
        (np.full((64, 64), 0.25, np.float32), "F", ".tif", 64),  # floats in [0, 1]
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


def test_a_caption_too_long_is_cut_with_one_warning_and_no_flood(capfd):
    pipe = models.load_pipeline("tiny")
    prompt = " ".join(["a red circle"] * 3000)  # 9,000 words
    with pytest.warns(
        UserWarning, match=r"1 of 1 prompts are longer than the 77 tokens .*the longest has 9002\)"
    ):
        sample.generate(pipe, [prompt, prompt], [0, 1], num_inference_steps=1)
    assert len(capfd.readouterr().err) < 2000, "the pipeline printed each cut prompt"
    with pytest.warns(UserWarning, match=r"1 of 1 captions are longer than the 77 tokens"):
        train.cache_dataset(pipe, [(torch.zeros(3, 64, 64), prompt)], 64)
