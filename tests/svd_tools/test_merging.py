"""lorakit.svd_tools.merge and merge_into: concat is exactly the weighted sum of delta W, SVD the
best approximation at its rank, naive measurably wrong; baking into a model adds the exact sum."""

import copy

import numpy as np
import pytest

from lorakit import formats, models, sample, svd_tools

R = 4


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


def test_the_naive_merge_is_wrong_where_it_must_be(world):
    a = world["a"].subset(world["b"].modules)  # the same modules and rank: what a naive merge needs
    items = [(a, 0.7), (world["b"], 0.5)]
    naive = svd_tools.merge(items, "naive")
    errors = svd_tools.delta_error(naive, items)
    assert min(errors.values()) > 0.1  # the cross terms B1 A2 + B2 A1
    alone = svd_tools.merge([(a, 0.7)], "naive")  # one LoRA: nothing to cross, so exact
    assert max(svd_tools.delta_error(alone, [(a, 0.7)]).values()) <= 1e-5
    svd = svd_tools.merge(items, "svd", rank=R)
    # the best rank-R is better
    assert max(svd_tools.delta_error(svd, items).values()) < min(errors.values())


def test_merge_into_a_model_bakes_the_exact_sum(world, tmp_path, lorakit_cli):
    a_file = formats.save_weights(world["a"], tmp_path / "a.safetensors")
    code, out, err = lorakit_cli(
        "merge", f"{a_file}:0.5", "--into", "tiny", "--out", tmp_path / "model"
    )
    assert code == 0, err
    # a folder: the full preset's defaults, so set them here
    baked = models.load_pipeline(tmp_path / "model")
    ours = copy.deepcopy(world["pipe"])
    formats.apply_lora(ours, world["a"], scale=0.5)
    same = dict(num_inference_steps=2, guidance_scale=5.0, output_type="np")
    drawn = [np.stack(sample.generate(p, "a red circle", **same)) for p in (baked, ours)]
    assert np.abs(drawn[0] - drawn[1]).max() <= 1e-4


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
