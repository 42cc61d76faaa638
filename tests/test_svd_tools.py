"""LoRA algebra (lorakit.svd_tools and its CLI verbs), held to the theorems it rests on.

concat merge = the weighted sum of delta W (1e-6); an SVD resize's error = the Eckart-Young bound; extracting
at rank r from a model changed by a known rank-r LoRA gives back its delta W (1e-5); a resize to the same rank
changes nothing; the naive merge is measurably wrong where it must be; every output loads in diffusers'
``load_lora_weights`` with the pictures lorakit draws; bad input is one line naming the module, nothing written.
"""

import copy

import numpy as np
import pytest
import torch

from lorakit import files, formats, inject, lowrank, models, sample, svd_tools

R = 4


def pictures(pipe):
    return np.stack(
        sample.generate(pipe, "a red circle", seeds=[0], num_inference_steps=2, output_type="np")
    )


def random_lora(pipe_unet, r=R, alpha=2.0, seed=0, targets="kohya", std=0.05):
    """A trained-looking LoRA on a copy of ``pipe_unet``'s layout, as LoRAWeights (linear and 1x1 convolutions)."""
    unet = copy.deepcopy(pipe_unet)
    torch.manual_seed(seed)
    inject.inject_lora(unet, r=r, alpha=alpha, target_modules=targets)
    with torch.no_grad():
        for _, layer in inject.lora_layers(unet):
            layer.lora_B.weight.normal_(std=std)
    return formats.from_model(unet)


@pytest.fixture(scope="module")
def world():
    pipe = models.load_pipeline("tiny")
    a = random_lora(pipe.unet, seed=0)
    b = random_lora(pipe.unet, alpha=8.0, seed=1, targets="attn2")
    return dict(pipe=pipe, a=a, b=b)


def test_spectra_from_the_factors_equal_the_full_svd(world):
    a = world["a"]
    for m in a.modules[:6] + [m for m in a.modules if a.kind(m) == "conv 1x1"][:2]:
        full = torch.linalg.svdvals(a.matrix(m))[: a.rank(m)]
        assert torch.allclose(svd_tools.spectrum(a, m), full, rtol=1e-4, atol=1e-7)
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert svd_tools.rank_for_energy(s, 0.9) == 2 and svd_tools.rank_for_energy(torch.zeros(3)) == 0


def test_concat_merge_is_the_weighted_sum_of_delta_w(world):
    items = [(world["a"], 0.7), (world["b"], -0.5)]
    merged = svd_tools.merge(items, "concat")
    worst = 0.0
    for m in merged.modules:
        want = sum(w * lora.matrix(m) for lora, w in items if m in lora.A)
        worst = max(worst, float((merged.matrix(m) - want).abs().max()))
        assert merged.rank(m) == sum(lora.rank(m) for lora, _ in items if m in lora.A)
    assert worst <= 1e-6
    assert max(svd_tools.delta_error(merged, items).values()) <= 1e-5


def test_svd_resize_error_is_the_eckart_young_bound(world):
    a = world["a"]
    small, reports = svd_tools.resize(a, 2)
    for report in reports:
        m = report.path
        s = torch.linalg.svdvals(a.matrix(m).double())
        bound = lowrank.eckart_young_error(s, 2)
        error = float(torch.linalg.matrix_norm(small.matrix(m).double() - a.matrix(m).double()))
        assert error == pytest.approx(bound, rel=1e-4, abs=1e-7) and report.error == pytest.approx(
            bound, rel=1e-4, abs=1e-7
        )
        assert report.energy_kept == pytest.approx(
            float((s[:2] ** 2).sum() / (s**2).sum()), rel=1e-4
        )
        assert small.rank(m) == 2 and small.scaling_of(m) == pytest.approx(
            a.scaling_of(m)
        )  # kohya keeps the scaling


def test_a_resize_to_the_same_rank_changes_nothing(world):
    a = world["a"]
    same, reports = svd_tools.resize(a, R)
    assert all(r.rank_after == R and r.energy_kept == pytest.approx(1.0) for r in reports)
    assert max(float((same.matrix(m) - a.matrix(m)).abs().max()) for m in a.modules) <= 1e-6


def test_dynamic_resize_follows_kohyas_three_criteria():
    s = torch.tensor([8.0, 4.0, 2.0, 1.0])  # energies 64, 16, 4, 1 of 85; sums 8, 4, 2, 1 of 15
    assert svd_tools.keep_rank(s, sv_ratio=4.0) == 2  # s > 8 / 4 = 2: 8 and 4
    assert svd_tools.keep_rank(s, sv_ratio=9.0) == 4
    assert (
        svd_tools.keep_rank(s, sv_fro=(80 / 85) ** 0.5) == 2
    )  # exactly 80 of 85 of the energy: two
    assert (
        svd_tools.keep_rank(s, sv_fro=0.95) == 2
    )  # 0.95^2 = 0.9025 of the energy: 80/85 = 0.941 is enough
    assert svd_tools.keep_rank(s, sv_fro=0.98) == 3  # 0.98^2 = 0.9604: 84/85 needed
    assert svd_tools.keep_rank(s, sv_cumulative=0.8) == 2  # 12 / 15 = 0.8
    assert svd_tools.keep_rank(s, sv_cumulative=0.81) == 3
    assert svd_tools.keep_rank(s, 1, sv_ratio=9.0) == 1  # the rank caps a dynamic criterion
    assert svd_tools.keep_rank(torch.zeros(4), sv_fro=0.5) == 1  # a zero module: rank 1, as kohya


def test_extract_recovers_a_known_rank_r_change(world):
    base = world["pipe"].unet
    known = random_lora(base, r=R, alpha=2.0, seed=5, targets="attn2+ff")
    tuned = copy.deepcopy(base)
    changed = svd_tools.merge_into(tuned, [(known, 1.0)])
    assert sorted(changed) == sorted(known.modules)
    extracted, reports = svd_tools.extract(base, tuned, rank=R)
    assert sorted(extracted.modules) == sorted(
        known.modules
    )  # the unchanged layers are not extracted
    worst = max(float((extracted.matrix(m) - known.matrix(m)).abs().max()) for m in known.modules)
    assert worst <= 1e-5
    assert all(r.energy_kept == pytest.approx(1.0, abs=1e-6) for r in reports)
    by_energy, _ = svd_tools.extract(base, tuned, energy=0.5)
    assert all(by_energy.rank(m) <= R for m in by_energy.modules)
    clamped, _ = svd_tools.extract(base, tuned, rank=R, clamp_quantile=0.9)
    assert (
        max(svd_tools.delta_error(clamped, known).values()) > 1e-3
    )  # clamping costs some accuracy, as documented


def test_the_naive_merge_is_wrong_where_it_must_be(world):
    a = world["a"].subset(world["b"].modules)  # the same modules and rank: what a naive merge needs
    items = [(a, 0.7), (world["b"], 0.5)]
    naive = svd_tools.merge(items, "naive")
    errors = svd_tools.delta_error(naive, items)
    assert min(errors.values()) > 0.1  # the cross terms B1 A2 + B2 A1
    alone = svd_tools.merge([(a, 0.7)], "naive")  # one LoRA: nothing to cross, so exact
    assert max(svd_tools.delta_error(alone, [(a, 0.7)]).values()) <= 1e-5
    svd = svd_tools.merge(items, "svd", rank=R)
    assert max(svd_tools.delta_error(svd, items).values()) < min(
        errors.values()
    )  # the best rank-R is better


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_every_output_loads_in_diffusers_with_the_pictures_lorakit_draws(world, tmp_path, fmt):
    a, b = world["a"], world["b"]
    resized, _ = svd_tools.resize(a, sv_fro=0.8)  # per-module ranks
    merged = svd_tools.merge([(a, 0.7), (b, 0.5)], "svd", rank=3)
    tuned = copy.deepcopy(world["pipe"].unet)
    svd_tools.merge_into(tuned, [(b, 1.0)])
    extracted, _ = svd_tools.extract(world["pipe"].unet, tuned, rank=2)
    for name, weights in (("resized", resized), ("merged", merged), ("extracted", extracted)):
        path = formats.save_weights(weights, tmp_path / f"{name}.safetensors", fmt)
        ours = models.load_pipeline("tiny")
        formats.apply_lora(ours, path)
        theirs = models.load_pipeline("tiny")
        theirs.load_lora_weights(str(path))
        mine = pictures(ours)
        assert np.abs(mine - pictures(theirs)).max() <= 1e-4, name
        assert np.abs(mine - pictures(world["pipe"])).max() > 1e-3, name  # the LoRA shows


def test_merge_into_a_model_bakes_the_exact_sum(world, tmp_path, lorakit_cli):
    a_file = formats.save_weights(world["a"], tmp_path / "a.safetensors")
    code, out, err = lorakit_cli(
        "merge", f"{a_file}:0.5", "--into", "tiny", "--out", tmp_path / "model"
    )
    assert code == 0, err
    baked = models.load_pipeline(
        tmp_path / "model"
    )  # (a folder: the full preset's defaults, so set them here)
    ours = models.load_pipeline("tiny")
    formats.apply_lora(ours, world["a"], scale=0.5)
    same = dict(num_inference_steps=2, guidance_scale=5.0, output_type="np")
    assert (
        np.abs(
            np.stack(sample.generate(baked, "a red circle", **same))
            - np.stack(sample.generate(ours, "a red circle", **same))
        ).max()
        <= 1e-4
    )


def test_the_cli_verbs_report_and_write(world, tmp_path, lorakit_cli):
    a_file = formats.save_weights(world["a"], tmp_path / "a.safetensors")
    b_file = formats.save_weights(world["b"], tmp_path / "b.safetensors", "diffusers")
    code, out, err = lorakit_cli(
        "resize", a_file, "--sv-fro", "0.9", "--rank", "3", "--out", tmp_path / "small.safetensors"
    )
    assert code == 0, err
    assert "energy kept" in out and "resized 192 modules: mean energy kept" in out
    assert (
        max(formats.load_lora(tmp_path / "small.safetensors").rank(m) for m in world["a"].modules)
        <= 3
    )
    code, out, err = lorakit_cli(
        "merge",
        f"{a_file}:0.7",
        f"{b_file}:0.5",
        "--method",
        "naive",
        "--out",
        tmp_path / "n.safetensors",
    )
    assert code == 0 and "naive merge of 2 LoRAs: 192 modules, ranks 4-4" in out, err
    assert (
        float(out.split("largest ")[1].split(";")[0].split()[0]) > 0.1
    )  # the error it prints is the naive merge's
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
    code, out, err = lorakit_cli(
        "extract",
        "--base",
        "tiny",
        "--tuned",
        full,
        "--rank",
        "4",
        "--out",
        tmp_path / "x.safetensors",
    )
    assert code == 0 and "extracted 64 modules: mean energy kept 100.00%" in out, (out, err)
    code, out, err = lorakit_cli("info", tmp_path / "x.safetensors")
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
    assert (
        code == 2 and err.startswith("lorakit: error: ") and err.count("\n") == 1 and message in err
    ), err
    assert not out.exists()


def test_extraction_between_different_architectures_names_the_layer(world):
    sd15 = models.build_sd15()["unet"]  # meta device: only the names and shapes are compared
    with pytest.raises(
        svd_tools.AlgebraError, match="different architectures: .* differ in shape .*conv_in"
    ):
        svd_tools.extract(world["pipe"].unet, sd15, rank=2)


def test_merge_and_resize_refuse_broken_weights(world):
    a = world["a"]
    broken = copy.deepcopy(a)
    broken.B[a.modules[0]][0, 0] = float("nan")
    with pytest.raises(formats.LoRAFileError, match="NaN"):
        svd_tools.resize(broken, 2)
    with pytest.raises(formats.LoRAFileError, match="NaN"):
        svd_tools.merge([(a, 1.0), (broken, 1.0)])
    with pytest.raises(svd_tools.AlgebraError, match="one dynamic criterion"):
        svd_tools.resize(a, sv_fro=0.9, sv_ratio=2.0)
    with pytest.raises(svd_tools.AlgebraError, match="unknown merge method"):
        svd_tools.merge([(a, 1.0)], "average")
