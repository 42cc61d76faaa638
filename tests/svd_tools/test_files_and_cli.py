"""What lorakit.svd_tools writes, and its CLI verbs: every output loads in diffusers'
``load_lora_weights`` with the pictures lorakit draws; ``lorakit resize``, ``merge`` and
``extract`` report and write; bad input is one line naming the module, and nothing is written."""

import copy

import numpy as np
import pytest
import torch

from lorakit import files, formats, svd_tools

R = 4


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_every_output_loads_in_diffusers_with_the_pictures_lorakit_draws(
    world, tmp_path, fmt, pictures
):
    a, b = world["a"], world["b"]
    resized, _ = svd_tools.resize(a, sv_fro=0.8)  # per-module ranks
    merged = svd_tools.merge([(a, 0.7), (b, 0.5)], "svd", rank=3)
    tuned = copy.deepcopy(world["pipe"].unet)
    svd_tools.merge_into(tuned, [(b, 1.0)])
    extracted, _ = svd_tools.extract(world["pipe"].unet, tuned, rank=2)
    for name, weights in (("resized", resized), ("merged", merged), ("extracted", extracted)):
        path = formats.save_weights(weights, tmp_path / f"{name}.safetensors", fmt)
        ours = copy.deepcopy(world["pipe"])
        formats.apply_lora(ours, path)
        theirs = copy.deepcopy(world["pipe"])
        theirs.load_lora_weights(str(path))
        mine = pictures(ours)
        assert np.abs(mine - pictures(theirs)).max() <= 1e-4, name
        assert np.abs(mine - pictures(world["pipe"])).max() > 1e-3, name  # the LoRA shows


def test_the_cli_verbs_report_and_write(world, tmp_path, lorakit_cli):
    a_file = formats.save_weights(world["a"], tmp_path / "a.safetensors")
    b_file = formats.save_weights(world["b"], tmp_path / "b.safetensors", "diffusers")
    small = tmp_path / "small.safetensors"
    code, out, err = lorakit_cli("resize", a_file, "--sv-fro", "0.9", "--rank", "3", "--out", small)
    assert code == 0, err
    assert "energy kept" in out and "resized 192 modules: mean energy kept" in out
    assert max(formats.load_lora(small).rank(m) for m in world["a"].modules) <= 3
    naive = tmp_path / "n.safetensors"
    code, out, err = lorakit_cli(
        "merge", f"{a_file}:0.7", f"{b_file}:0.5", "--method", "naive", "--out", naive
    )
    assert code == 0 and "naive merge of 2 LoRAs: 192 modules, ranks 4-4" in out, err
    # the error it prints is the naive merge's
    assert float(out.split("largest ")[1].split(";")[0].split()[0]) > 0.1
    code, out, err = lorakit_cli(
        "merge", f"{a_file}:0.7", f"{b_file}:0.5", "--out", tmp_path / "c.safetensors"
    )
    assert code == 0 and "concat merge of 2 LoRAs: 192 modules, ranks 4-8" in out, err
    assert float(out.split("largest ")[1].split()[0].rstrip(";")) <= 1e-5
    full = tmp_path / "unet.safetensors"
    tuned = copy.deepcopy(world["pipe"].unet)
    svd_tools.merge_into(tuned, [(world["b"], 1.0)])
    files.write_atomically(
        full, formats.safetensors_bytes(tuned.state_dict(), {"lorakit_method": "full"})
    )
    extracted = tmp_path / "x.safetensors"
    code, out, err = lorakit_cli(
        "extract", "--base", "tiny", "--tuned", full, "--rank", "4", "--out", extracted
    )
    assert code == 0 and "extracted 64 modules: mean energy kept 100.00%" in out, (out, err)
    code, out, err = lorakit_cli("info", extracted)
    assert code == 0 and "r: 4  alpha: 4" in out


BAD = [
    (("resize", "{a}", "--rank", "9", "--out", "{out}"), "rank 9 is above the rank of 192 modules"),
    (("resize", "{a}", "--out", "{out}"), "give a rank, or one of sv_ratio"),
    (
        ("merge", "{a}", "{other}", "--out", "{out}"),
        "disagree on mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
    ),
    (
        ("extract", "--base", "tiny", "--tuned", "{wrong}", "--rank", "2", "--out", "{out}"),
        "not a UNet of the base model's architecture",
    ),
    (
        ("extract", "--base", "tiny", "--tuned", "tiny", "--rank", "2", "--out", "{out}"),
        "no layer differs",
    ),
    (("merge", "{a}:nan", "--out", "{out}"), "finite number"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[a[0] + ": " + m[:30] for a, m in BAD])
def test_bad_input_is_one_line_and_writes_nothing(world, tmp_path, lorakit_cli, argv, message):
    a_file = formats.save_weights(world["a"], tmp_path / "a.safetensors")
    other = world["b"].subset(world["b"].modules)
    m = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"
    other.A[m] = torch.zeros(R, 768)  # as if for SD 1.5
    other_file = formats.save_weights(other, tmp_path / "other.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    state = world["pipe"].unet.state_dict()
    state.pop(next(iter(state)))
    files.write_atomically(wrong, formats.safetensors_bytes(state, {}))
    out = tmp_path / "out.safetensors"
    filled = [a.format(a=a_file, other=other_file, wrong=wrong, out=out) for a in argv]
    code, stdout, err = lorakit_cli(*filled)
    assert code == 2 and err.startswith("lorakit: error: "), err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()
