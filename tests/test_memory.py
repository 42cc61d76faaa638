"""lorakit.memory: each part of the estimate against something computed independently."""

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import lorakit
from benchmarks import memory_table
from lorakit import inject, memory, models, train

SD15_UNET_PARAMETERS = 859_520_964  # as tests/test_models.py


@pytest.fixture(scope="module")
def pipe():
    return models.load_pipeline("tiny", device="cpu", dtype="float32")


def cfg(**overrides) -> train.TrainConfig:
    return train.TrainConfig(**{"batch_size": 2, "progress": False, **overrides})


@pytest.mark.parametrize(
    "r, targets", [(4, "attn2"), (8, "attn"), (8, "attn2+ff"), (2, ["attn2.to_k", "attn2.to_v"])]
)
def test_lora_parts_match_an_injected_unet(pipe, r, targets):
    unet = copy.deepcopy(pipe.unet)
    inject.inject_lora(unet, r=r, target_modules=targets)
    injected = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    estimate = memory.estimate_memory(cfg(r=r, target_modules=targets), pipe)
    assert estimate.lora_count == injected
    assert estimate.lora_params == estimate.lora_grads == 4 * injected  # float32
    assert estimate.optimizer == 2 * estimate.lora_params  # AdamW: exp_avg and exp_avg_sq


def test_weights_are_the_unets_parameter_bytes(pipe):
    estimate = memory.estimate_memory(cfg(), pipe)
    assert estimate.weights == sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
    vae_and_text = sum(
        p.numel() * p.element_size() for m in (pipe.vae, pipe.text_encoder) for p in m.parameters()
    )
    assert estimate.not_in_loop == vae_and_text  # named in the table, not counted
    sd15 = memory.estimate_memory(cfg(mixed_precision="bf16", resolution=256), "sd15")
    assert (
        sd15.weights == 2 * SD15_UNET_PARAMETERS
    )  # by name: half precision, as load_pipeline on a GPU
    assert (
        memory.estimate_memory(cfg(), "tiny").weights == estimate.weights
    )  # tiny in float32 by name
    assert sd15.total == sum(n for name, n in sd15.rows() if name != "total")


def test_lora_already_in_the_unet_is_not_counted_as_weights(pipe):
    unet = copy.deepcopy(pipe.unet)
    before = memory.estimate_memory(cfg(), unet, vae_scale_factor=4)
    inject.inject_lora(unet, r=4)
    assert memory.estimate_memory(cfg(), unet, vae_scale_factor=4).weights == before.weights


def test_activations_grow_with_batch_and_resolution_and_shrink_with_checkpointing():
    one = memory.estimate_memory(cfg(batch_size=1), "tiny")
    four = memory.estimate_memory(cfg(batch_size=4), "tiny")
    assert four.activations == 4 * one.activations
    assert (
        memory.estimate_memory(cfg(batch_size=1, resolution=128), "tiny").activations
        > 3 * one.activations
    )
    for model, extra in (("tiny", {}), ("sd15", dict(mixed_precision="bf16", resolution=256))):
        off = memory.estimate_memory(cfg(**extra), model)
        on = memory.estimate_memory(cfg(gradient_checkpointing=True, **extra), model)
        assert 0 < on.activations < off.activations / 2, (model, on.activations, off.activations)
    # LoRA dropout keeps its mask and the dropped input of every LoRA layer for backward.
    assert (
        memory.estimate_memory(cfg(lora_dropout=0.1), "tiny").activations
        > memory.estimate_memory(cfg(), "tiny").activations
    )
    bf16 = memory.estimate_memory(cfg(mixed_precision="bf16"), "tiny").activations
    assert bf16 < 0.7 * memory.estimate_memory(cfg(), "tiny").activations


def saved(fn) -> int:
    seen = {}

    def pack(t):
        seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_the_attention_stand_in_saves_what_real_sdpa_saves():
    """The meta-device stand-in keeps the bytes the fused CPU kernel keeps (not the N x N matrix)."""
    shapes = [(2, 4, 256, 16), (2, 4, 77, 16), (2, 4, 77, 16)]
    real = [torch.randn(s, requires_grad=True) for s in shapes]
    meta = [torch.empty(s, device="meta", requires_grad=True) for s in shapes]
    want = saved(lambda: F.scaled_dot_product_attention(*real))
    assert saved(lambda: memory._fused_sdpa(*meta)) == want
    assert want < 2 * 4 * 256 * 77 * 4  # far less than the attention matrix


@pytest.mark.parametrize(
    "batch, checkpointing, dropout, targets",
    [
        (4, False, 0.0, "attn2"),
        (4, True, 0.0, "attn2"),
        (4, False, 0.1, "attn2"),
        (4, False, 0.1, "attn2+ff"),
    ],
)
def test_estimate_is_within_a_factor_of_the_measured_cpu_peak(
    pipe, batch, checkpointing, dropout, targets
):
    """Stated factor: the estimate is within 1.5x of the peak the CPU allocator reports for a real step."""
    unet = copy.deepcopy(pipe.unet).requires_grad_(False)
    config = cfg(
        batch_size=batch,
        gradient_checkpointing=checkpointing,
        lora_dropout=dropout,
        target_modules=targets,
    )
    estimate = memory.estimate_memory(config, pipe)
    measured, _ = memory_table.measure_step(unet, pipe.scheduler, config, 16, torch.device("cpu"))
    assert measured > estimate.weights  # the step itself allocated something
    assert 1 / 1.5 < estimate.total / measured < 1.5, (estimate.total, measured)


def test_check_fits_passes_a_run_that_fits_and_refuses_one_that_does_not(pipe):
    big = cfg(batch_size=16)
    estimate = memory.check_fits(big, pipe, budget_bytes=10 * 2**30)
    assert estimate.total == memory.estimate_memory(big, pipe).total
    budget = (
        memory.estimate_memory(cfg(batch_size=16, gradient_checkpointing=True), pipe).total
        + estimate.weights
    ) // 2 + 1  # between the weights and the checkpointed run
    with pytest.raises(memory.WontFitError, match="Settings that would fit") as info:
        memory.check_fits(big, pipe, budget_bytes=budget)
    error = info.value
    assert error.budget == budget and error.estimate.total > budget and error.suggestions
    for change in error.suggestions:  # every suggestion really fits, estimated again
        assert (
            memory.estimate_memory(train.TrainConfig(**{**vars(big), **change}), pipe).total
            <= budget
        )
        assert all(f"{k}={v!r}" in str(error) for k, v in change.items())
    with pytest.raises(memory.WontFitError, match="No smaller batch"):
        memory.check_fits(big, pipe, budget_bytes=estimate.weights // 2)


def test_sd15_full_mode_defaults_fit_a_t4_budget():
    """lesson 08's settings (bf16, checkpointing, batch 4 at 512) on a 15 GiB card."""
    full = train.TrainConfig.for_mode("full")
    estimate = memory.check_fits(full, "sd15", budget_bytes=int(15 * 2**30 * memory.HEADROOM))
    assert estimate.settings["resolution"] == 512 and estimate.settings["dtype"] == "bfloat16"
    assert "SD 1.5" in estimate.table() and "activations" in str(estimate)


def test_clear_errors_for_bad_input(pipe):
    with pytest.raises(ValueError, match="unknown model 'sdxl'"):
        memory.estimate_memory(cfg(), "sdxl")
    with pytest.raises(TypeError, match="model must be"):
        memory.estimate_memory(cfg(), 42)
    with pytest.raises(ValueError, match="mixed_precision"):
        memory.estimate_memory(cfg(mixed_precision="fp8"), "tiny")
    with pytest.raises(ValueError, match="multiple of 4"):
        memory.estimate_memory(cfg(resolution=66), pipe)
    with pytest.raises(ValueError, match="batch_size"):
        memory.estimate_memory(cfg(batch_size=0), "tiny")


def test_package_exposes_estimate_memory_lazily():
    assert lorakit.estimate_memory is memory.estimate_memory
    code = "import sys, lorakit; assert 'torch' not in sys.modules and 'lorakit.memory' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        lorakit.nothing  # noqa: B018


def test_memory_table_runs(capsys):
    result = memory_table.main(["--repeats", "1", "--settings", "2:1:4"])
    out = capsys.readouterr().out
    assert "torch.profiler CPU allocations" in out and "ratio" in out
    (row,) = result["rows"]
    assert (row["batch"], row["checkpointing"], row["r"]) == (2, True, 4)
    assert 1 / 1.5 < row["ratio"] < 1.5
    with pytest.raises(SystemExit):
        memory_table.main(["--settings", "eight"])


def test_check_fits_uses_the_models_device_memory(pipe):
    ram = memory.device_memory("cpu")
    assert ram is None or ram > 2**30
    estimate = memory.check_fits(cfg(), pipe)  # the tiny SD fits in any machine's RAM
    assert estimate.total == memory.estimate_memory(cfg(), pipe).total
    assert memory.device_memory("meta") is None  # unknown: no check, no error
