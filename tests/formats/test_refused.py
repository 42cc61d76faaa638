"""Bad LoRA files: a one-line lorakit error that names the file and the key, and the model exactly
as it was (weights, modules and ``requires_grad`` flags).

Every case file is built here from a valid LoRA of the tiny SD. The references for what a setting
means are diffusers' and kohya's: where they disagree (alpha 0), lorakit refuses rather than pick
one. Pickles are refused unopened: lorakit never unpickles a LoRA file.
"""

import copy
import json
import math
import pickle
import struct
import time

import pytest
import safetensors.torch
import torch

from lorakit import formats, inject

R, ALPHA = 4, 2.0
KOHYA_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q"


@pytest.fixture(scope="module")
def unet(shared_pipe):
    """The tiny SD's UNet as loaded: no LoRA, every parameter trainable."""
    return copy.deepcopy(shared_pipe.unet)


@pytest.fixture(scope="module")
def trained(trained_lora):
    """A trained-looking LoRA (r 4, alpha 2) on every attn2 of the tiny SD's UNet."""
    return trained_lora()


@pytest.fixture
def files(trained, tmp_path, write_formats):
    """A valid kohya, diffusers and PEFT LoRA, written in this test's folder."""
    return write_formats(trained, tmp_path)


def rewrite(src, dst, change=None, metadata=None):
    """``src``'s tensors passed through ``change`` (a dict -> dict function), saved at ``dst`` with
    ``metadata`` (default: ``src``'s own)."""
    with safetensors.safe_open(str(src), "pt") as f:
        tensors, old = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    safetensors.torch.save_file(
        change(tensors) if change else tensors, dst, metadata=old if metadata is None else metadata
    )
    return dst


@pytest.fixture
def refused(snapshot):
    """``refused(path, *words, model=None)``: ``load_lora`` (and ``apply_lora`` into ``model``)
    refuse ``path`` with one line that holds ``words``, and ``model`` is left as it was."""

    def check(path, *words, model=None):
        with pytest.raises(formats.LoRAFileError) as error:
            formats.load_lora(path)
        message = str(error.value)
        assert "\n" not in message and all(w in message for w in words), message
        if model is not None:
            before = snapshot(model)
            with pytest.raises(formats.LoRAFileError):
                formats.apply_lora(model, path)
            before.assert_unchanged(model)
        return message

    return check


def diffusers_metadata(path):
    with safetensors.safe_open(str(path), "pt") as f:
        return f.metadata()


# --- files that are not LoRA safetensors -------------------------------------------------------


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("lorakit must never unpickle a LoRA file")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("name", ["style.ckpt", "style.pt", "style.bin", "disguised.safetensors"])
def test_pickle_files_are_refused_unopened(trained, tmp_path, name, no_unpickling):
    with open(tmp_path / name, "wb") as f:
        torch.serialization.save(trained.state_dict(), f)  # a torch.save zip
    with pytest.raises(ValueError, match="pickle-based checkpoint.*safetensors only"):
        formats.load_lora(tmp_path / name)
    (tmp_path / "raw.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(ValueError, match="pickle-based"):
        formats.load_lora(tmp_path / "raw.safetensors")


def test_garbage_truncated_and_empty_files(files, tmp_path):
    good = files["kohya"].read_bytes()
    cases = {
        "garbage.safetensors": b"this is not a LoRA at all" * 20,
        "empty.safetensors": b"",
        "truncated.safetensors": good[: len(good) // 2],
        "short.safetensors": good[:-10],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=f"{name} is not a valid safetensors file: "):
            formats.load_lora(tmp_path / name)


def test_wrong_keys_and_unsupported_tensors(tmp_path):
    safetensors.torch.save_file({"model.weight": torch.zeros(2, 2)}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="cannot tell the LoRA format.*model.weight"):
        formats.load_lora(tmp_path / "w.safetensors")
    mixed = {"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": torch.zeros(32, 4)}
    safetensors.torch.save_file(mixed, tmp_path / "h.safetensors")
    with pytest.raises(ValueError, match="a LoHa module without .*mid_block.attentions.0.proj_in"):
        formats.load_lora(tmp_path / "h.safetensors")


# --- broken settings and weights ---------------------------------------------------------------


@pytest.mark.parametrize(
    "packed, words",
    [
        ("[1, 2]", ["a JSON list"]),
        ('"r=4"', ["a JSON str"]),
        ('{"unet.r": 4, "unet.lora_alpha": [2]}', ["unet.lora_alpha", "[2]"]),
        ('{"unet.r": 4, unet.lora_alpha: 2}', ["not valid JSON"]),
        ('{"unet.use_rslora": "yes"}', ["unet.use_rslora"]),
        ('{"unet.r": Infinity}', ["unet.r", "a positive integer"]),  # int(inf) overflows
        ('{"unet.r": NaN}', ["unet.r", "a positive integer"]),
    ],
)
def test_malformed_diffusers_metadata_names_the_file_and_the_key(
    files, unet, tmp_path, packed, words, refused
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
    "config",
    ["[4, 2]", '"lora"', "{not json", '{"r": 4, "lora_alpha": "two"}', '{"r": Infinity}'],
)
def test_a_malformed_adapter_config_names_the_file(files, tmp_path, config, refused):
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


def test_a_rank_0_file_is_refused_and_info_says_so(files, unet, tmp_path, lorakit_cli, refused):
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
def test_non_finite_weights_are_refused_by_key(files, unet, tmp_path, value, refused):
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
def test_bad_kohya_alphas_are_refused(files, unet, tmp_path, alpha, words, refused):
    def change(tensors):
        return {k: torch.tensor(alpha) if k.endswith(".alpha") else v for k, v in tensors.items()}

    bad = rewrite(files["kohya"], tmp_path / "alpha.safetensors", change)
    message = refused(bad, "alpha.safetensors", *words, model=unet)
    assert message.lower().count("nan") <= 2, message  # one alpha named once, not 64 times


@pytest.mark.parametrize("shape", [(0,), (2,), (1, 2)])
def test_an_alpha_that_is_not_one_number_names_its_key(files, tmp_path, shape, refused):
    def change(tensors):
        return tensors | {f"{KOHYA_Q}.alpha": torch.full(shape, 2.0)}

    bad = rewrite(files["kohya"], tmp_path / "alpha.safetensors", change)
    refused(bad, "alpha.safetensors", f"{KOHYA_Q}.alpha", "one number")


def test_lora_alpha_0_is_refused_where_diffusers_would_silently_switch_the_lora_off(
    files, unet, tmp_path, refused
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
def test_integer_and_bool_weights_are_refused(files, unet, tmp_path, dtype, refused):
    key = f"{KOHYA_Q}.lora_down.weight"
    bad = rewrite(
        files["kohya"], tmp_path / "int.safetensors", lambda t: t | {key: t[key].to(dtype)}
    )
    refused(bad, "int.safetensors", key, "floating point", model=unet)


@pytest.mark.parametrize("alpha", [-2.0, math.inf, math.nan, 0.0])
def test_bad_weights_are_refused_by_a_unet_that_already_has_lora_layers(
    trained, unet, alpha, snapshot
):
    lora_unet = copy.deepcopy(unet)
    formats.apply_lora(lora_unet, trained)
    before = snapshot(lora_unet)
    with pytest.raises(formats.LoRAFileError, match="alpha must be a positive finite number"):
        formats.apply_lora(lora_unet, formats.LoRAWeights("kohya", R, alpha, trained.A, trained.B))
    before.assert_unchanged(lora_unet)
    assert all(layer.alpha == ALPHA for _, layer in inject.lora_layers(lora_unet))


@pytest.mark.parametrize("case", ["alpha -2", "NaN in B", "r 0", "scale nan"])
def test_a_refused_apply_leaves_the_model_exactly_as_it_was(trained, unet, case, snapshot):
    model = copy.deepcopy(unet)
    # flags that are not all alike show any reset
    model.get_submodule("conv_in").requires_grad_(False)
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
    before.assert_unchanged(model)


def test_a_failure_inside_inject_restores_the_flags(unet, monkeypatch, snapshot):
    model = copy.deepcopy(unet)
    before = snapshot(model)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        inject.inject_lora(model, r=R, alpha=math.inf)
    before.assert_unchanged(model)


def write_raw(path, header: dict, data: bytes):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_a_million_tiny_tensors_are_refused_from_the_header(tmp_path, refused):
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


def test_a_corrupt_file_whose_header_length_starts_like_a_pickle_is_not_called_one(
    files, tmp_path, refused
):
    # A header 640 bytes long: its length, little-endian, begins 0x80 0x02, as a pickle of
    # protocol 2 does.
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
