"""lorakit.svd_tools.extract: from a model changed by a known rank-r LoRA, it gives that LoRA's
delta W back; between two architectures it names the layer."""

import copy

import pytest

from lorakit import models, svd_tools

R = 4


def test_extract_recovers_a_known_rank_r_change(world, random_lora):
    base = world["pipe"].unet
    known = random_lora(base, r=R, alpha=2.0, seed=5, targets="attn2+ff")
    tuned = copy.deepcopy(base)
    changed = svd_tools.merge_into(tuned, [(known, 1.0)])
    assert sorted(changed) == sorted(known.modules)
    extracted, reports = svd_tools.extract(base, tuned, rank=R)
    # the unchanged layers are not extracted
    assert sorted(extracted.modules) == sorted(known.modules)
    worst = max(float((extracted.matrix(m) - known.matrix(m)).abs().max()) for m in known.modules)
    assert worst <= 1e-5
    assert all(r.energy_kept == pytest.approx(1.0, abs=1e-6) for r in reports)
    by_energy, _ = svd_tools.extract(base, tuned, energy=0.5)
    assert all(by_energy.rank(m) <= R for m in by_energy.modules)
    clamped, _ = svd_tools.extract(base, tuned, rank=R, clamp_quantile=0.9)
    # clamping costs some accuracy, as documented
    assert max(svd_tools.delta_error(clamped, known).values()) > 1e-3


def test_extraction_between_different_architectures_names_the_layer(world):
    sd15 = models.build_sd15()["unet"]  # meta device: only the names and shapes are compared
    with pytest.raises(
        svd_tools.AlgebraError, match="different architectures: .* differ in shape .*conv_in"
    ):
        svd_tools.extract(world["pipe"].unet, sd15, rank=2)
