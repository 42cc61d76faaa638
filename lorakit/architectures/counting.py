"""What a LoRA costs on each architecture, for the layers diffusers' own training scripts adapt.

Introduced in notebooks/12_beyond_sd15.ipynb.

``SCRIPT_TARGETS`` holds the default ``target_modules`` of diffusers' DreamBooth LoRA scripts
(``examples/dreambooth/train_dreambooth_lora_sdxl.py``, ``..._sd3.py``, ``..._flux.py``), and
``ARTICLE_TARGETS`` the course's own choice on SD 1.5, the cross-attention ``attn2``. PEFT matches
them by name suffix, as ``lorakit.targets`` does. :func:`lora_rows` counts, from the shapes of
(meta-built) modules alone, the LoRA parameters ``sum r * (in + out)`` of each, split by what the
adapted layer reads (``meeting.reads``), its file size in fp16 and fp32, and its share of the
base model's parameters; :func:`print_table` prints them.

Left out: the text encoders' LoRAs (``--train_text_encoder``), biases and DoRA's magnitudes, the
few kilobytes of a file's header and alphas.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lorakit import targets
from lorakit.architectures.meeting import reads
from lorakit.language import say

__all__ = ["ARTICLE_TARGETS", "SCRIPT_TARGETS", "LoRARow", "lora_rows", "print_table"]

ARTICLE_TARGETS = {  # the course's cross-attention LoRA, and the same idea carried to SDXL
    "sd15": ("the course: attn2 only", targets.PRESETS["attn2"]),
    "sdxl": ("the course's idea: attn2 only", targets.PRESETS["attn2"]),
}
SCRIPT_TARGETS = {  # name -> (the script, its default target_modules, in the script's order)
    "sdxl": ("train_dreambooth_lora_sdxl.py", ("to_k", "to_q", "to_v", "to_out.0")),
    "sd3": (
        "train_dreambooth_lora_sd3.py",
        ("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out")
        + ("attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v"),
    ),
    "flux": (
        "train_dreambooth_lora_flux.py",
        ("attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0")
        + ("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out")
        + ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"),
    ),
}


@dataclass
class LoRARow:
    """One architecture's LoRA: ``by_input`` splits ``parameters`` by what the layers read."""

    name: str
    source: str
    modules: int
    parameters: int
    by_input: dict[str, int]
    base_parameters: int

    @property
    def share(self) -> float:
        return self.parameters / self.base_parameters

    def megabytes(self, bytes_per_number: int) -> float:
        return self.parameters * bytes_per_number / 1e6


def lora_rows(models: dict[str, nn.Module], r: int) -> list[LoRARow]:
    """A :class:`LoRARow` per model of ``models`` ({name: model}) that ``ARTICLE_TARGETS`` or
    ``SCRIPT_TARGETS`` names, at rank ``r``, counted from the modules' shapes."""
    rows = []
    for name, model in models.items():
        layers = dict(model.named_modules())
        chosen = (ARTICLE_TARGETS.get(name), SCRIPT_TARGETS.get(name))
        for source, suffixes in [c for c in chosen if c]:
            by_input = {"image": 0, "text": 0, "both": 0, "timestep": 0}
            paths = targets.find_targets(model, list(suffixes))
            for path in paths:
                by_input[reads(model, path)] += r * sum(targets.shape_of(layers[path]))
            rows.append(
                LoRARow(
                    name,
                    source,
                    len(paths),
                    sum(by_input.values()),
                    by_input,
                    sum(p.numel() for p in model.parameters()),
                )
            )
    return rows


def print_table(rows: list[LoRARow], r: int) -> None:
    """The rows as a table: modules, LoRA parameters (reading image / text / both), fp16 and fp32
    megabytes, base parameters and the LoRA's share of them."""
    print(say("rank r = {r}", r=r))
    t = {w: say(w) for w in ("model", "targets", "modules", "LoRA params", "image", "text")}
    t |= {w: say(w) for w in ("both", "base params", "share")}
    head = f"{t['model']:<6}{t['targets']:<31}{t['modules']:>8}{t['LoRA params']:>13}"
    head += f"{t['image']:>12}{t['text']:>12}{t['both']:>12}{'fp16 MB':>9}{'fp32 MB':>9}"
    print(head + f"{t['base params']:>15}{t['share']:>8}")
    for row in rows:
        b = row.by_input
        print(
            f"{row.name:<6}{row.source:<31}{row.modules:>8}{row.parameters:>13,}{b['image']:>12,}"
            f"{b['text']:>12,}{b['both']:>12,}{row.megabytes(2):>9.1f}{row.megabytes(4):>9.1f}"
            f"{row.base_parameters:>15,}{row.share:>8.2%}"
        )
