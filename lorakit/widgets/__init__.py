"""The course's ipywidgets UIs: sliders that redraw a figure when released, one file a lesson.

* :mod:`lorakit.widgets.svd_explorer` (notebooks/01_low_rank_intuition.ipynb): :func:`svd_explorer`, the
  rank-k reconstruction of an image or matrix.
* :mod:`lorakit.widgets.lora_explorers` (notebooks/07_rank_alpha_lab.ipynb): :func:`lora_scale_explorer`
  (one prompt and seed at LoRA scales 0 to 1.5), :func:`rank_alpha_explorer` (LoRAs of several
  ranks, an alpha slider, pictures and the style figures of ``lorakit.metrics``) and
  :func:`alpha_ledger_explorer` (what one (r, alpha) means in PEFT, rsLoRA and kohya; the
  arithmetic itself is ``lora.alpha_ledger``, next to the scaling it describes).

Every UI follows the same rules (:mod:`lorakit.widgets._base`), so it works in JupyterLab with
ipywidgets 8.x and in Colab with ipywidgets 7.7, with the default inline matplotlib backend:

* sliders use ``continuous_update=False``: the expensive redraw runs once, on release; they are
  wide enough to aim at one rank in 200, with labels that fit;
* the UI is an ``ipywidgets.VBox`` subclass that also exposes its sliders and what it shows now
  (``.slider``, ``.shown``, ``.figure``, ``.updates``), so tests drive it headlessly with
  ``ui.slider.value = 5`` and read the result;
* heavy work (an SVD, a generation) is done once: an SVD when the UI is built, each picture the
  first time its setting is asked for (a cache keyed by the setting); a seen setting is instant;
* an error in a callback is printed into the UI's output area, recorded in ``.errors``, and raised:
  never swallowed.

The LoRA explorers put the LoRA into ``pipe.unet`` only while they draw (:func:`lora_applied`:
``formats.apply_lora``, then ``inject.remove_lora``), so the pipeline is left as it was given.

Left out: ipympl/interactive figures, layout theming, previews during generation, and training from a
widget (the LoRA explorers take LoRAs trained beforehand, e.g. by ``styles.train_or_load``).
"""

from lorakit.lora import KOHYA_DEFAULT_ALPHA, PEFT_DEFAULT_ALPHA, AlphaLedger, alpha_ledger
from lorakit.widgets.lora_explorers import (
    AlphaLedgerExplorer,
    LoRAScaleExplorer,
    RankAlphaExplorer,
    RankAlphaView,
    ScaleView,
    alpha_ledger_explorer,
    lora_applied,
    lora_scale_explorer,
    rank_alpha_explorer,
)
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
