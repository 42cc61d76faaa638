"""The original (LDM/SGM) UNet's names in kohya files, as diffusers' UNet names them.

Introduced in notebooks/05_inject_lora.ipynb, where kohya names are read; SDXL's files, which
use this layout, in notebooks/12_beyond_sd15.ipynb.

kohya's SDXL trainer names a module after Stability's UNet: ``input_blocks.N.J``,
``middle_block.J``, ``output_blocks.N.J``, with a block's ResNet at ``J`` 0 and its transformer at 1
(``lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k``). diffusers' UNet counts blocks
and layers instead (``down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k``).
:func:`diffusers_name` turns the first into the second's kohya spelling, from the UNet's
``layers_per_block`` alone, as diffusers' own loader does; the dots are then found in the model's
real module names (``kohya.kohya_name_map``).

Left out: names that are neither layout (kept as they are, and refused by name where applied).
"""

from __future__ import annotations

import re

__all__ = ["LDM_NAME", "RESNET_NAMES", "diffusers_name"]

LDM_NAME = re.compile(
    r"^lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_(?:(\d+)_)?(.*)$"
)
RESNET_NAMES = {  # inside a ResNet block: LDM's name -> diffusers'
    "in_layers_2": "conv1",
    "out_layers_3": "conv2",
    "emb_layers_1": "time_emb_proj",
    "skip_connection": "conv_shortcut",
}
TOP_NAMES = {  # outside the blocks
    "lora_unet_time_embed_0": "lora_unet_time_embedding_linear_1",
    "lora_unet_time_embed_2": "lora_unet_time_embedding_linear_2",
    "lora_unet_label_emb_0_0": "lora_unet_add_embedding_linear_1",
    "lora_unet_label_emb_0_2": "lora_unet_add_embedding_linear_2",
    "lora_unet_input_blocks_0_0": "lora_unet_conv_in",
    "lora_unet_out_2": "lora_unet_conv_out",
}


def _inner(kind: str, rest: str) -> str:
    """A module's name inside a diffusers block of ``kind`` (resnets, attentions, samplers)."""
    return RESNET_NAMES.get(rest, rest) if kind == "resnets" else rest


def _middle(index: int, rest: str) -> str:
    kind, layer = (("resnets", 0), ("attentions", 0), ("resnets", 1))[index]
    return f"mid_block_{kind}_{layer}_{_inner(kind, rest)}"


def _input(index: int, part: int, rest: str, per_block: int) -> str:
    block, layer = divmod(index - 1, per_block + 1)
    if layer == per_block:  # the block's downsampler: input_blocks_3_0_op
        return f"down_blocks_{block}_downsamplers_0_conv"
    kind = ("resnets", "attentions")[part]
    return f"down_blocks_{block}_{kind}_{layer}_{_inner(kind, rest)}"


def _output(index: int, part: int, rest: str, per_block: int) -> str:
    block, layer = divmod(index, per_block + 1)
    if part == 2 or (part == 1 and rest == "conv"):  # the upsampler (after or instead of attention)
        return f"up_blocks_{block}_upsamplers_0_conv"
    kind = ("resnets", "attentions")[part]
    return f"up_blocks_{block}_{kind}_{layer}_{_inner(kind, rest)}"


def diffusers_name(name: str, layers_per_block: int = 2) -> str:
    """A kohya module name of the LDM layout in the diffusers layout (another name: itself)."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    found = LDM_NAME.match(name)
    if found is None:
        return name
    where, index, part, rest = found.groups()
    index = int(index)
    if where == "middle_block":
        inner = rest if part is None else f"{part}_{rest}"
        return name if index > 2 else "lora_unet_" + _middle(index, inner)
    if part is None or int(part) > 2 or (where == "input_blocks" and index == 0):
        return name
    build = _input if where == "input_blocks" else _output
    return "lora_unet_" + build(index, int(part), rest, layers_per_block)
