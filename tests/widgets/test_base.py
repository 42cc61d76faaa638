"""What every explorer shares: sliders wide enough to aim with, labels that are not cut short."""

import torch

from lorakit import widgets
from lorakit.widgets import base


def test_sliders_are_wide_enough_to_aim_and_labels_are_not_cut():
    """ipywidgets' default slider is ~120 px of track for 1-200 ranks; the ledger's checkbox label
    was cut short."""
    svd, ledger = (
        widgets.svd_explorer(torch.randn(48, 40), max_rank=40),
        widgets.alpha_ledger_explorer(r=16),
    )
    for control in (svd.slider, ledger.r_slider, ledger.slider):
        assert (
            control.layout.width == base.SLIDER_LAYOUT["width"]
            and control.layout.max_width == "640px"
        )
        assert control.style.description_width == base.LABEL_STYLE["description_width"]
        assert not control.continuous_update
    assert ledger.defaults.indent is False and ledger.defaults.layout.width == "auto"
    assert ledger.defaults in ledger.children, (
        "the checkbox has a row of its own, not squeezed beside two sliders"
    )
