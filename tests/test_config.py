import pytest
import torch

from lorakit import config


def test_mode_defaults_to_small_without_cuda(monkeypatch):
    monkeypatch.delenv("LORAKIT_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.get_mode() == "small" and not config.gpu_present()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.get_mode() == "full" and config.gpu_present()


def test_the_tiny_sd_keeps_its_own_settings_whatever_the_mode(monkeypatch):
    monkeypatch.delenv("LORAKIT_MODE", raising=False)
    monkeypatch.setattr(config, "gpu_present", lambda: True)  # a GPU runtime: full mode
    assert config.get_mode() == "full"
    for model in ("tiny", config.TINY_SD_DIR, str(config.TINY_SD_DIR / ".." / "tiny-sd")):
        preset = config.preset_for(model)
        assert (preset.mode, preset.resolution, preset.num_inference_steps, preset.dtype) == (
            "small",
            64,
            10,
            "float32",
        )
    for model in (config.SD15_HUB_ID, "some/other-model", "/nowhere/sd15"):
        assert config.preset_for(model).mode == "full" and config.preset_for(model).dtype is None


def test_full_mode_loads_sd15_from_where_lorakit_sd15_says(monkeypatch, tmp_path):
    monkeypatch.delenv("LORAKIT_SD15", raising=False)
    assert config.get_preset("full").model == config.SD15_HUB_ID
    monkeypatch.setenv("LORAKIT_SD15", str(tmp_path))
    assert config.get_preset("full").model == str(tmp_path)
    assert config.get_preset("small").model == "tiny"


class FakePipe:
    """Just what sample.generate reads of a pipeline, and a record of what it asked."""

    def __init__(self, name_or_path, sample_size):
        self.name_or_path, self.device, self.vae_scale_factor = name_or_path, torch.device("cpu"), 4
        self.unet = type("UNet", (), {"config": type("Config", (), {"sample_size": sample_size})})()
        self.calls = []

    def __call__(self, prompts, **kwargs):
        self.calls.append(kwargs)
        return type("Out", (), {"images": [None] * len(prompts)})()


def test_sampling_settings_come_from_the_model_not_the_gpu(monkeypatch):
    from lorakit import sample

    monkeypatch.setattr(config, "gpu_present", lambda: True)
    tiny, other = FakePipe(str(config.TINY_SD_DIR), 16), FakePipe("a/copy-of-sd15", 64)
    sample.generate(tiny, "a red circle")
    sample.generate(other, "a red circle")
    assert [
        (c["num_inference_steps"], c["guidance_scale"], c["height"])
        for c in tiny.calls + other.calls
    ] == [(10, 5.0, 64), (30, 7.5, 256)]


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
    assert (
        config.get_preset("small").resolution == 64 and config.get_preset("small").model == "tiny"
    )
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
