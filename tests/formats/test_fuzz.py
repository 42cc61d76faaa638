"""Fuzzing the LoRA reader: a mutated kohya, diffusers or PEFT file either loads correctly or is
refused with ``formats.LoRAFileError`` (a ``ValueError``), never another exception, never in more
than 5 s, and a refused file leaves the model exactly as it was (weights, modules,
``requires_grad`` flags).

The mutations: bytes overwritten (mostly in the header), the file cut short, the header's JSON
edited (a dtype, a shape, offsets, a key renamed or dropped, the metadata), a tensor replaced
(NaN, infinite, huge, empty, integer), and PEFT's adapter_config.json replaced by any JSON.
``make test`` runs a fixed set of examples (the ``ci`` profile of tests/conftest.py); a longer run
for a nightly job: ``pytest tests/formats/test_fuzz.py --hypothesis-profile nightly`` (25,000
examples).
"""

import collections
import copy
import json
import math
import warnings

import pytest
import safetensors.torch
import torch
from hypothesis import given
from hypothesis import strategies as st

from lorakit import formats, inject

DTYPES = [
    "F16",
    "BF16",
    "F32",
    "F64",
    "I64",
    "I32",
    "I8",
    "U8",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
    "XYZ",
    "",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_pipe, trained_lora, write_formats):
    """The tiny SD's UNet, a trained-looking LoRA for it in all three formats (as bytes), and where
    to write."""
    unet = copy.deepcopy(shared_pipe.unet)
    weights = trained_lora(["attn2.to_q", "attn2.to_k"])
    folder = tmp_path_factory.mktemp("fuzz")
    valid = {}
    for fmt, written in write_formats(weights, folder / "valid").items():
        tensors = written / formats.PEFT_FILE if fmt == "peft" else written
        config = (written / formats.PEFT_CONFIG).read_bytes() if fmt == "peft" else None
        valid[fmt] = (tensors.read_bytes(), config)
    flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    return {"unet": unet, "valid": valid, "folder": folder, "flags": flags}


def split(data: bytes):
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + body


def mutate(draw, fmt, how, data: bytes, config):
    header, body = split(data)
    keys = sorted(k for k in header if k != "__metadata__")
    if how == "bytes":
        data = bytearray(data)
        in_header = 8 + int.from_bytes(data[:8], "little")
        for _ in range(draw(st.integers(1, 8))):
            at = draw(
                st.integers(0, in_header - 1)
                if draw(st.integers(0, 3)) == 0
                else st.integers(in_header, len(data) - 1)
            )
            data[at] = draw(st.integers(0, 255))
        return bytes(data), config
    if how == "cut":
        return data[: draw(st.integers(0, len(data) - 1))], config
    if how == "header":
        key = draw(st.sampled_from(keys))
        edit = draw(st.sampled_from(["dtype", "shape", "offsets", "rename", "drop", "entry"]))
        if edit == "dtype":
            header[key]["dtype"] = draw(st.sampled_from(DTYPES))
        elif edit == "shape":
            header[key]["shape"] = draw(st.lists(st.integers(-2, 300), max_size=4))
        elif edit == "offsets":
            header[key]["data_offsets"] = draw(
                st.lists(st.integers(-10, len(body) + 10), min_size=0, max_size=3)
            )
        elif edit == "rename":
            header[
                draw(st.text(min_size=1, max_size=40))
                if draw(st.booleans())
                else key.replace(
                    draw(st.sampled_from(["lora_down", "lora_A", "alpha", "attn2", "weight", "."])),
                    draw(st.sampled_from(["lora_up", "lora_B", "beta", "attn1", "", "..", "_"])),
                )
            ] = header.pop(key)
        elif edit == "drop":
            del header[key]
        else:
            header[key] = draw(json_values)
        return join(header, body), config
    if how == "metadata":
        metadata = header.get("__metadata__", {})
        key = draw(st.sampled_from(sorted(metadata) + [formats.METADATA_KEY, "ss_network_alpha"]))
        if draw(st.booleans()):
            metadata[key] = json.dumps(draw(json_values), allow_nan=True)
        elif key == formats.METADATA_KEY and key in metadata:
            packed = json.loads(metadata[key])
            packed[draw(st.sampled_from(sorted(packed)))] = draw(json_values)
            metadata[key] = json.dumps(packed, allow_nan=True)
        else:
            metadata[key] = draw(json_values)  # not even a string
        header["__metadata__"] = metadata
        return join(header, body), config
    if how == "tensor":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tensors = safetensors.torch.load(data)
        key = draw(st.sampled_from(keys))
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e30, 0.0, -1.0]))
        kind = draw(st.sampled_from(["fill", "one", "empty", "int", "bool", "half", "reshape"]))
        t = tensors[key]
        if kind == "fill":
            t = torch.full_like(t, value)
        elif kind == "one":
            t = t.clone()
            t.view(-1)[draw(st.integers(0, max(t.numel() - 1, 0)))] = value
        elif kind == "empty":
            t = torch.zeros(0, *t.shape[1:])
        elif kind == "int":
            t = t.to(torch.int64)
        elif kind == "bool":
            t = t != 0
        elif kind == "half":
            t = t.half()
        else:
            t = t.reshape(-1)
        tensors[key] = t
        return safetensors.torch.save(tensors, metadata=header.get("__metadata__")), config
    # how == "config": PEFT's adapter_config.json, anything
    value = json.loads(config) if config is not None and draw(st.booleans()) else None
    if isinstance(value, dict):
        value[draw(st.sampled_from(sorted(value)))] = draw(json_values)
    else:
        value = draw(json_values)
    return data, json.dumps(value, allow_nan=True).encode()


KINDS = [  # how a refusal is counted in the report, by the words of its message
    ("pickle", "a pickle"),
    ("not a valid safetensors file", "not a safetensors file"),
    ("cannot tell the LoRA format", "no LoRA keys"),
    ("cannot read as", "keys that are not LoRA"),
    ("NaN or infinite", "NaN or infinite values"),
    ("floating point", "not floating point"),
    ("does not fit", "does not fit the model"),
    ("ranks disagree", "halves whose ranks disagree"),
    ("is not a LoRA lorakit can load", "an A without its B, or no pair"),
    ("rank 0", "rank 0"),
    ("alpha", "a bad alpha"),
    ("JSON", "bad metadata or config JSON"),
    ("must be", "a bad setting"),
    ("lorakit applies", "a kind lorakit does not apply"),
    ("", "another refusal"),
]


@pytest.fixture(scope="module")
def outcomes():
    """How the examples ended, printed at the end of the module (``pytest -s`` shows it)."""
    counts = collections.Counter()
    yield counts
    print(f"\nfuzz outcomes over {sum(counts.values())} examples:")
    for kind, n in counts.most_common():
        print(f"  {n:6d}  {kind}")


@given(st.data())
def test_a_mutated_lora_file_loads_correctly_or_is_refused_cleanly(world, outcomes, snapshot, data):
    draw = data.draw
    fmt = draw(st.sampled_from(formats.FORMATS))
    # Weighted towards the mutations that get past the header: most random bytes there only
    # break its JSON.
    hows = (
        ["bytes", "cut"]
        + ["header", "metadata", "tensor"] * 3
        + (["config"] * 3 if fmt == "peft" else [])
    )
    how = draw(st.sampled_from(hows))
    good, config = world["valid"][fmt]
    try:
        content, config = mutate(draw, fmt, how, good, config)
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError):
        outcomes["mutation not applicable"] += 1
        return  # the valid file, re-serialised, was not what the mutation expected
    folder = world["folder"] / "case"
    folder.mkdir(exist_ok=True)
    path = folder / (formats.PEFT_FILE if fmt == "peft" else f"{fmt}.safetensors")
    for old in folder.iterdir():
        old.unlink()
    path.write_bytes(content)
    if config is not None:
        (folder / formats.PEFT_CONFIG).write_bytes(config)
    unet = world["unet"]
    before = snapshot(unet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a PEFT file without its config
            weights = formats.load_lora(folder if fmt == "peft" else path)
            formats.apply_lora(unet, weights)
    except formats.LoRAFileError as error:
        assert "\n" not in str(error)
        kind = next(kind for words, kind in KINDS if words in str(error))
        outcomes[
            "refused: " + kind + (f" ({str(error)[:160]})" if kind == "another refusal" else "")
        ] += 1
        before.assert_unchanged(unet)  # a refused file changes nothing
        return
    # A correct load: finite float weights of one positive rank, a positive finite alpha, in the
    # model now.
    outcomes["loaded"] += 1
    assert weights.r > 0 and math.isfinite(weights.alpha) and weights.alpha > 0
    layers = dict(inject.lora_layers(unet))
    try:
        assert set(layers) == set(weights.modules)
        for m in weights.modules:
            assert torch.equal(layers[m].lora_A.weight, weights.A[m]) and torch.equal(
                layers[m].lora_B.weight, weights.B[m]
            )
            assert bool(torch.isfinite(weights.A[m]).all() and torch.isfinite(weights.B[m]).all())
    finally:
        inject.remove_lora(unet)
        for n, p in unet.named_parameters():
            p.requires_grad_(world["flags"][n])
