"""lorakit.memory's estimate: each part against something computed independently, and the whole
within a stated factor of the peak a real step allocates on the CPU."""

import copy
import subprocess
import sys

import pytest
import torch

import lorakit
from benchmarks import memory_table
from lorakit import inject, memory, train

SD15_UNET_PARAMETERS = 859_520_964  # as tests/test_models.py


def cfg(**overrides) -> train.TrainConfig:
    return train.TrainConfig(**{"batch_size": 2, "progress": False, **overrides})


@pytest.mark.parametrize(
    "r, targets", [(4, "attn2"), (8, "attn"), (8, "attn2+ff"), (2, ["attn2.to_k", "attn2.to_v"])]
)
def test_lora_parts_match_an_injected_unet(shared_pipe, r, targets):
    unet = copy.deepcopy(shared_pipe.unet)
    inject.inject_lora(unet, r=r, target_modules=targets)
    injected = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    estimate = memory.estimate_memory(cfg(r=r, target_modules=targets), shared_pipe)
    assert estimate.lora_count == injected
    assert estimate.lora_params == estimate.lora_grads == 4 * injected  # float32
    assert estimate.optimizer == 2 * estimate.lora_params  # AdamW: exp_avg and exp_avg_sq


def test_weights_are_the_unets_parameter_bytes(shared_pipe):
    estimate = memory.estimate_memory(cfg(), shared_pipe)
    assert estimate.weights == sum(
        p.numel() * p.element_size() for p in shared_pipe.unet.parameters()
    )
    vae_and_text = sum(
        p.numel() * p.element_size()
        for m in (shared_pipe.vae, shared_pipe.text_encoder)
        for p in m.parameters()
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


def test_lora_already_in_the_unet_is_not_counted_as_weights(shared_pipe):
    unet = copy.deepcopy(shared_pipe.unet)
    before = memory.estimate_memory(cfg(), unet, vae_scale_factor=4)
    inject.inject_lora(unet, r=4)
    assert memory.estimate_memory(cfg(), unet, vae_scale_factor=4).weights == before.weights


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
    shared_pipe, batch, checkpointing, dropout, targets
):
    """Stated factor: the estimate is within 1.5x of the peak the CPU allocator reports for a real
    step."""
    unet = copy.deepcopy(shared_pipe.unet).requires_grad_(False)
    config = cfg(
        batch_size=batch,
        gradient_checkpointing=checkpointing,
        lora_dropout=dropout,
        target_modules=targets,
    )
    estimate = memory.estimate_memory(config, shared_pipe)
    measured, _ = memory_table.measure_step(
        unet, shared_pipe.scheduler, config, 16, torch.device("cpu")
    )
    assert measured > estimate.weights  # the step itself allocated something
    assert 1 / 1.5 < estimate.total / measured < 1.5, (estimate.total, measured)


def test_clear_errors_for_bad_input(shared_pipe):
    with pytest.raises(ValueError, match="unknown model 'sdxl'"):
        memory.estimate_memory(cfg(), "sdxl")
    with pytest.raises(TypeError, match="model must be"):
        memory.estimate_memory(cfg(), 42)
    with pytest.raises(ValueError, match="mixed_precision"):
        memory.estimate_memory(cfg(mixed_precision="fp8"), "tiny")
    with pytest.raises(ValueError, match="multiple of 4"):
        memory.estimate_memory(cfg(resolution=66), shared_pipe)
    with pytest.raises(ValueError, match="batch_size"):
        memory.estimate_memory(cfg(batch_size=0), "tiny")


def test_package_exposes_estimate_memory_lazily():
    assert lorakit.estimate_memory is memory.estimate_memory
    code = (
        "import sys, lorakit; "
        "assert 'torch' not in sys.modules and 'lorakit.memory' not in sys.modules"
    )
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
