"""Beyond SD 1.5: where text meets image in SDXL, SD3 and Flux, and what a LoRA there costs.

Introduced in notebooks/12_beyond_sd15.ipynb.

* ``architectures.configs``: the published configs, meta builds, tiny seeded twins;
* ``architectures.calling``: one denoiser call for each (``denoise``), Flux's packed latents;
* ``architectures.meeting``: the kinds of attention (self, cross, joint with two streams or one)
  and what each adapted layer reads;
* ``architectures.counting``: diffusers' scripts' LoRA targets, their parameters and file sizes;
* ``architectures.joint_maps``: joint attention with an explicit softmax, its per-token maps;
* ``architectures.fitting``: one training example of each objective, a few Adam steps.

Left out: text encoders, VAEs, samplers and pictures of these models (no weights are loaded).
"""

from lorakit.architectures.calling import denoise, image_ids, pack_latents, unpack_latents
from lorakit.architectures.configs import (
    ARCHITECTURES,
    FLUX_DEV_TRANSFORMER_CONFIG,
    SD3_MEDIUM_TRANSFORMER_CONFIG,
    SDXL_UNET_CONFIG,
    TEXT_ENCODERS,
    TINY_CONFIGS,
    build,
    build_tiny,
)
from lorakit.architectures.counting import (
    ARTICLE_TARGETS,
    SCRIPT_TARGETS,
    LoRARow,
    lora_rows,
    print_table,
)
from lorakit.architectures.fitting import fit_one_example, one_example
from lorakit.architectures.joint_maps import (
    JointAttentionRecorder,
    JointRecords,
    capture_joint_attention,
    image_rows,
    joint_qkv,
    token_map,
)
from lorakit.architectures.meeting import (
    CROSS,
    JOINT_ONE_STREAM,
    JOINT_TWO_STREAMS,
    SELF,
    TEXT_STREAM,
    TIMESTEP_PARTS,
    attention_kind,
    attention_modules,
    meeting_table,
    reads,
)

__all__ = [
    "ARCHITECTURES",
    "ARTICLE_TARGETS",
    "CROSS",
    "FLUX_DEV_TRANSFORMER_CONFIG",
    "JOINT_ONE_STREAM",
    "JOINT_TWO_STREAMS",
    "SCRIPT_TARGETS",
    "SD3_MEDIUM_TRANSFORMER_CONFIG",
    "SDXL_UNET_CONFIG",
    "SELF",
    "TEXT_ENCODERS",
    "TEXT_STREAM",
    "TIMESTEP_PARTS",
    "TINY_CONFIGS",
    "JointAttentionRecorder",
    "JointRecords",
    "LoRARow",
    "attention_kind",
    "attention_modules",
    "build",
    "build_tiny",
    "capture_joint_attention",
    "denoise",
    "fit_one_example",
    "image_ids",
    "image_rows",
    "joint_qkv",
    "lora_rows",
    "meeting_table",
    "one_example",
    "pack_latents",
    "print_table",
    "reads",
    "token_map",
    "unpack_latents",
]
