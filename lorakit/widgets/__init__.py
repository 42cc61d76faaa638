"""The course's ipywidgets UIs: sliders that redraw a figure when released, one file an explorer.

Introduced in notebooks/01_low_rank_intuition.ipynb (``svd_explorer``); lesson 07 adds the LoRA
explorers (``lora_scale_explorer``, ``rank_alpha_explorer``, ``alpha_ledger_explorer``).

Every UI follows ``widgets.base``'s rules, so it works in JupyterLab with ipywidgets 8.x and in
Colab with ipywidgets 7.7, with the default inline matplotlib backend: sliders redraw on release
(``continuous_update=False``); the UI is an ``ipywidgets.VBox`` that also exposes its controls and
what it shows (``.slider``, ``.shown``, ``.figure``, ``.updates``), so tests drive it headlessly;
heavy work (an SVD, a generation) is done once per setting and cached; an error in a callback is
shown in the UI, kept in ``.errors`` and raised, never swallowed.

Left out: ipympl/interactive figures, layout theming, previews during generation, and training
from a widget (the LoRA explorers take LoRAs trained beforehand: ``outline_loras.train_or_load``).
"""

from lorakit.widgets.applying import lora_applied
from lorakit.widgets.ledger import (
    KOHYA_DEFAULT_ALPHA,
    PEFT_DEFAULT_ALPHA,
    AlphaLedger,
    AlphaLedgerExplorer,
    alpha_ledger,
    alpha_ledger_explorer,
)
from lorakit.widgets.rank_alpha import RankAlphaExplorer, RankAlphaView, rank_alpha_explorer
from lorakit.widgets.scale import LoRAScaleExplorer, ScaleView, lora_scale_explorer
from lorakit.widgets.svd_explorer import SVDExplorer, SVDView, svd_explorer

__all__ = [
    "KOHYA_DEFAULT_ALPHA",
    "PEFT_DEFAULT_ALPHA",
    "AlphaLedger",
    "AlphaLedgerExplorer",
    "LoRAScaleExplorer",
    "RankAlphaExplorer",
    "RankAlphaView",
    "SVDExplorer",
    "SVDView",
    "ScaleView",
    "alpha_ledger",
    "alpha_ledger_explorer",
    "lora_applied",
    "lora_scale_explorer",
    "rank_alpha_explorer",
    "svd_explorer",
]
