"""LoRA algebra: a LoRA file as matrices, and the SVD tools practitioners use on them.

Introduced in notebooks/11_lora_algebra.ipynb.

Every module of a LoRA is one matrix of rank at most r, so lesson 01's Eckart-Young theorem does
the rest: its spectrum from the factors (``factors``), a smaller LoRA by truncation with kohya's
criteria (``resizing``), a LoRA from a full fine-tune (``extraction``), several LoRAs as one or
baked into a model (``merging``). Every function checks its input first and changes nothing it
was given; outputs are :class:`lorakit.formats.LoRAWeights` that ``formats.save_weights`` writes
in any format. ``rank_for_energy`` is ``lorakit.lowrank``'s.

Left out: LyCORIS's algorithms (LoHa, LoKr), DyLoRA, randomised SVD. The command line
(``lorakit resize``, ``extract``, ``merge``) is ``lorakit.cli``; docs/shared-loras.md has more.
"""

from lorakit.lowrank import rank_for_energy
from lorakit.svd_tools.extraction import extract
from lorakit.svd_tools.factors import (
    MIN_SV,
    AlgebraError,
    ModuleReport,
    factored_svd,
    spectra,
    spectrum,
)
from lorakit.svd_tools.merging import METHODS, delta_error, merge, merge_into
from lorakit.svd_tools.resizing import CRITERIA, keep_rank, resize

__all__ = [
    "CRITERIA",
    "METHODS",
    "MIN_SV",
    "AlgebraError",
    "ModuleReport",
    "delta_error",
    "extract",
    "factored_svd",
    "keep_rank",
    "merge",
    "merge_into",
    "rank_for_energy",
    "resize",
    "spectra",
    "spectrum",
]
