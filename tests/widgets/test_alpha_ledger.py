"""The alpha ledger against PEFT, kohya's files and lorakit, and its explorer's table and figure."""

import pytest
import safetensors.torch
import torch

from lorakit import formats, lora, widgets


def peft_scaling(r, alpha, use_rslora):
    """The scaling PEFT itself gives one LoRA layer (alpha=None: LoraConfig's default)."""
    peft = pytest.importorskip("peft")
    kwargs = {} if alpha is None else {"lora_alpha": alpha}
    config = peft.LoraConfig(r=r, target_modules=["0"], use_rslora=use_rslora, **kwargs)
    model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(64, 64)), config)
    return model.base_model.model[0].scaling["default"]


@pytest.mark.parametrize("r", [1, 4, 16])
@pytest.mark.parametrize("alpha", [None, 2.0, 32.0])
def test_alpha_ledger_matches_peft_kohya_files_and_lorakit(r, alpha, tmp_path):
    ledger = widgets.alpha_ledger(r, alpha)
    assert ledger.peft == pytest.approx(peft_scaling(r, alpha, use_rslora=False), rel=1e-12)
    assert ledger.rslora == pytest.approx(peft_scaling(r, alpha, use_rslora=True), rel=1e-12)
    assert ledger.lorakit == pytest.approx(
        lora.LoRALinear(torch.nn.Linear(64, 64), r=r, alpha=alpha).scaling
    )
    # kohya: the alpha stored in the file over r (kohya's trainer stores 1 when not told)
    stored = widgets.KOHYA_DEFAULT_ALPHA if alpha is None else alpha
    weights = formats.LoRAWeights(
        "lorakit", r, stored, {"m": torch.zeros(r, 8)}, {"m": torch.zeros(8, r)}
    )
    path = formats.save_weights(weights, tmp_path / "k.safetensors", "kohya")
    file_alpha = safetensors.torch.load_file(path)["lora_unet_m.alpha"].item()
    assert (
        ledger.kohya
        == pytest.approx(file_alpha / r)
        == pytest.approx(formats.load_lora(path).scaling)
    )
    if (
        alpha is not None
    ):  # the same numbers: PEFT, kohya and lorakit agree, rsLoRA is sqrt(r) times stronger
        assert ledger.peft == ledger.kohya == ledger.lorakit
        assert ledger.rslora == pytest.approx(ledger.peft * r**0.5)
    assert [row[3] for row in ledger.rows()] == [
        ledger.peft,
        ledger.rslora,
        ledger.kohya,
        ledger.lorakit,
    ]


def test_alpha_ledger_explorer_updates_its_table():
    ui = widgets.alpha_ledger_explorer(r=4)
    assert ui.shown == widgets.alpha_ledger(4, None) and ui.r_slider.continuous_update is False
    assert "<b>0.25</b>" in ui.table.value  # kohya's default alpha 1 over r = 4
    ui.defaults.value = False
    ui.r_slider.value = 16
    assert ui.updates == 3 and ui.shown == widgets.alpha_ledger(16, 4.0)
    ui.slider.value = 8.0
    assert ui.shown.rslora == 2.0 and "<b>2</b>" in ui.table.value
    lines = ui.figure.axes[0].get_lines()
    assert lines[1].get_ydata()[0] == ui.shown.peft  # the marker at the current r


def test_alpha_ledger_refuses_bad_input():
    with pytest.raises(ValueError, match="positive integer"):
        widgets.alpha_ledger(0, 1.0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        widgets.alpha_ledger(4, -1.0)
