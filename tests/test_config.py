import pytest
import torch

from lorakit import config


def test_mode_defaults_to_small_without_cuda(monkeypatch):
    monkeypatch.delenv("LORAKIT_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.get_mode() == "small"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.get_mode() == "full"


@pytest.mark.parametrize("value, mode", [("small", "small"), ("FULL", "full"), (" full ", "full")])
def test_mode_from_environment(monkeypatch, value, mode):
    monkeypatch.setenv("LORAKIT_MODE", value)
    assert config.get_mode() == mode
    assert config.get_preset().mode == mode


def test_bad_mode_says_what_to_use(monkeypatch):
    monkeypatch.setenv("LORAKIT_MODE", "medium")
    with pytest.raises(ValueError, match="small, full"):
        config.get_mode()


def test_presets_of_the_two_worlds():
    assert config.get_preset("small").resolution == 64 and config.get_preset("small").model == "tiny"
    assert config.get_preset("full").resolution == 512
    assert config.get_preset("full").model == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_test_switch_shortens_only_under_make_test(monkeypatch):
    monkeypatch.setenv("LORAKIT_TEST", "1")
    assert config.steps_for(300, 20) == 20
    monkeypatch.delenv("LORAKIT_TEST")
    assert config.steps_for(300, 20) == 300


def test_device_and_dtype_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.get_device().type in ("cpu", "mps")
    assert config.get_dtype("cpu") == torch.float32
    assert config.get_dtype("cpu", "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        config.get_dtype("cpu", "float8")
