"""lorakit.memory.fit: the pre-flight check passes a run that fits, refuses one that does not and
names settings that really fit."""

import pytest

from lorakit import memory, train


def cfg(**overrides) -> train.TrainConfig:
    return train.TrainConfig(**{"batch_size": 2, "progress": False, **overrides})


def test_check_fits_passes_a_run_that_fits_and_refuses_one_that_does_not(shared_pipe):
    big = cfg(batch_size=16)
    estimate = memory.check_fits(big, shared_pipe, budget_bytes=10 * 2**30)
    assert estimate.total == memory.estimate_memory(big, shared_pipe).total
    budget = (
        memory.estimate_memory(cfg(batch_size=16, gradient_checkpointing=True), shared_pipe).total
        + estimate.weights
    ) // 2 + 1  # between the weights and the checkpointed run
    with pytest.raises(memory.WontFitError, match="Settings that would fit") as info:
        memory.check_fits(big, shared_pipe, budget_bytes=budget)
    error = info.value
    assert error.budget == budget and error.estimate.total > budget and error.suggestions
    for change in error.suggestions:  # every suggestion really fits, estimated again
        assert (
            memory.estimate_memory(train.TrainConfig(**{**vars(big), **change}), shared_pipe).total
            <= budget
        )
        assert all(f"{k}={v!r}" in str(error) for k, v in change.items())
    with pytest.raises(memory.WontFitError, match="No smaller batch"):
        memory.check_fits(big, shared_pipe, budget_bytes=estimate.weights // 2)


def test_sd15_full_mode_defaults_fit_a_t4_budget():
    """lesson 08's settings (bf16, checkpointing, batch 4 at 512) on a 15 GiB card."""
    full = train.TrainConfig.for_mode("full")
    estimate = memory.check_fits(full, "sd15", budget_bytes=int(15 * 2**30 * memory.HEADROOM))
    assert estimate.settings["resolution"] == 512 and estimate.settings["dtype"] == "bfloat16"
    assert "SD 1.5" in estimate.table() and "activations" in str(estimate)


def test_check_fits_uses_the_models_device_memory(shared_pipe):
    ram = memory.device_memory("cpu")
    assert ram is None or ram > 2**30
    estimate = memory.check_fits(cfg(), shared_pipe)  # the tiny SD fits in any machine's RAM
    assert estimate.total == memory.estimate_memory(cfg(), shared_pipe).total
    assert memory.device_memory("meta") is None  # unknown: no check, no error
