"""Loading Stable Diffusion pipelines, and building SD-shaped models from configs.

Introduced in notebooks/03_stable_diffusion_anatomy.ipynb.

* :func:`load_pipeline` loads ``"tiny"`` (the tiny SD committed in ``data/models/tiny-sd``,
  offline), a local directory saved with ``save_pretrained``, or a hub id such as
  ``stable-diffusion-v1-5/stable-diffusion-v1-5``.
* :func:`build_tiny_sd` makes the tiny SD's parts with fresh weights (``lorakit.maintainer.pretrain``
  trains them). Its UNet has SD 1.5's block layout and ``layers_per_block=2``, so every
  module path (``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q``) and every
  kohya key is the same as in SD 1.5; only the widths are smaller.
* ``SD15_*_CONFIG`` are SD 1.5's real configs; :func:`build_sd15` builds its parts on the
  ``meta`` device (shapes and parameter counts, no download, no memory).

Left out: SDXL and SD 2.x layouts, safety checkers (the shapes world needs none).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections import Counter
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)
from diffusers.utils import deprecation_utils
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from lorakit import config, lora, shapes


@contextlib.contextmanager
def quiet():
    """Inside the block, diffusers and transformers print no notes, warnings or progress bars; errors still raise.

    For the notes a lesson expects and a student would take for errors (they print in red): the
    loading bars of every part, "No LoRA keys associated to CLIPTextModel" for a LoRA that has no
    text-encoder part, "truncated because CLIP can only handle sequences up to 77 tokens", and
    transformers' note about torchvision, which lorakit never needs (``feature_extractor=None``).
    """
    levels = (transformers_logging.get_verbosity(), diffusers_logging.get_verbosity())
    bars = (
        transformers_logging.is_progress_bar_enabled(),
        diffusers_logging.is_progress_bar_enabled(),
    )
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(levels[0])
        diffusers_logging.set_verbosity(levels[1])
        if bars[0]:
            transformers_logging.enable_progress_bar()
        if bars[1]:
            diffusers_logging.enable_progress_bar()


with quiet():
    from diffusers import StableDiffusionPipeline


# SD 1.5's real configs (the hub's unet/, text_encoder/, vae/ and scheduler/ config.json).
SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
)
SD15_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
SD15_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    scaling_factor=0.18215,
)
SD15_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)

# The tiny SD: SD 1.5's layout, small widths. Latents 16x16x4 for 64x64 images.
TINY_TEXT_WIDTH = 64
TINY_UNET_CONFIG = dict(
    SD15_UNET_CONFIG,
    sample_size=16,
    block_out_channels=(32, 64, 128, 128),
    cross_attention_dim=TINY_TEXT_WIDTH,
    attention_head_dim=4,
    norm_num_groups=16,
)
TINY_VAE_CONFIG = dict(
    SD15_VAE_CONFIG,
    layers_per_block=1,
    sample_size=64,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    norm_num_groups=16,
    scaling_factor=1.0,  # pretrain.py measures the real factor
)
# Words of the pretraining captions, then words the tiny SD never saw: reserved trigger
# words for "new concept" lessons, and everyday words a student may type.
CAPTION_WORDS = ["a", *shapes.SIZES, *shapes.COLOURS, *shapes.SHAPES]
RESERVED_WORDS = ["sks", "ohwx", "zorb", "quill", "vex", "plim"]
EXTRA_WORDS = [
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "style",
    "outline",
    "outlined",
    "hollow",
    "filled",
    "drawing",
    "picture",
    "photo",
    "shape",
    "big",
    "tiny",
]
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
# diffusers >= 0.36 renamed from_pretrained's torch_dtype to dtype; Colab may ship an older one.
DTYPE_KWARG = (
    "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges learned on ``words`` (CLIP style: the last letter carries ``</w>``).

    Each round merges the most frequent adjacent pair, ties broken alphabetically, until every
    word is one symbol: deterministic, so the vocabulary is the same on every machine.
    """
    corpus = [tuple(word[:-1]) + (word[-1] + "</w>",) for word in dict.fromkeys(words)]
    merges = []
    while True:
        counts = Counter(
            pair for symbols in corpus for pair in zip(symbols, symbols[1:], strict=False)
        )
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        corpus = [_merge(symbols, best) for symbols in corpus]


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def build_tokenizer(words: list[str] | None = None) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose vocabulary holds each word as one token.

    The merges are learned on the word list itself (:func:`learn_merges`), so applying them
    rebuilds every listed word whole; any other word falls back to letters.
    """
    words = words or CAPTION_WORDS + RESERVED_WORDS + EXTRA_WORDS
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    merges = learn_merges(words)
    tokens = (
        letters + [f"{c}</w>" for c in letters] + [a + b for a, b in merges] + list(SPECIAL_TOKENS)
    )
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        tokenizer = CLIPTokenizer(
            str(vocab_file), str(merges_file), pad_token="<|endoftext|>", model_max_length=77
        )
    for word in words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(
                f"the tiny tokenizer splits {word!r} into {ids}: its merges are wrong."
            )
    return tokenizer


def build_tiny_sd(seed: int = 0) -> dict:
    """The tiny SD's parts with fresh (untrained) weights, seeded: tokenizer, text_encoder, vae, unet, scheduler."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_TEXT_WIDTH,
        intermediate_size=4 * TINY_TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=TINY_TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return dict(
        tokenizer=tokenizer,
        text_encoder=CLIPTextModel(text_config),
        vae=AutoencoderKL(**TINY_VAE_CONFIG),
        unet=UNet2DConditionModel(**TINY_UNET_CONFIG),
        scheduler=tiny_scheduler(),
    )


def tiny_scheduler() -> DPMSolverMultistepScheduler:
    """SD 1.5's noise schedule with the DPM-Solver++ (2M) sampler: as good in 10 steps as SD 1.5's
    own PNDM sampler in 25 on the tiny SD (benchmarks/tiny_sd_quality.py), so a CPU grid takes seconds."""
    return DPMSolverMultistepScheduler.from_config(PNDMScheduler(**SD15_SCHEDULER_CONFIG).config)


def make_pipeline(parts: dict) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` from parts, without a safety checker."""
    return StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def build_sd15(device: str = "meta") -> dict:
    """SD 1.5's UNet, text encoder and VAE from its real configs, on ``device`` (default: meta, no memory)."""
    with torch.device(device):
        return dict(
            unet=UNet2DConditionModel(**SD15_UNET_CONFIG),
            text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG)),
            vae=AutoencoderKL(**SD15_VAE_CONFIG),
        )


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module``, all of them by default (works on the meta device)."""
    return lora.count_parameters(module, trainable_only=trainable_only)


def resolve(name_or_path: str | Path) -> str:
    """``"tiny"`` -> the committed tiny SD; a directory -> itself (checked); anything else -> a hub id."""
    if str(name_or_path) == "tiny":
        name_or_path = config.TINY_SD_DIR
        if not (Path(name_or_path) / "model_index.json").is_file():
            raise FileNotFoundError(
                f"the tiny SD is missing from {name_or_path}: restore data/models/tiny-sd from the "
                "repository (git checkout -- data/models) or retrain it with `python -m lorakit.maintainer.pretrain`."
            )
    path = Path(name_or_path).expanduser()
    looks_local = (
        path.exists()
        or str(name_or_path).startswith((".", "/", "~"))
        or str(name_or_path).count("/") > 1
    )
    if looks_local:
        if not path.is_dir():
            raise FileNotFoundError(
                f"no model directory at {path}: give 'tiny', a hub id such as "
                f"{config.SD15_HUB_ID!r}, or a directory saved with save_pretrained."
            )
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"{path} is not a diffusers pipeline (it has no model_index.json): save one with "
                "`pipe.save_pretrained(path)` or point at the pipeline's top folder."
            )
        return str(path)
    return str(name_or_path)


def load_pipeline(
    name_or_path: str | Path = "tiny",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> StableDiffusionPipeline:
    """Load a Stable Diffusion pipeline: ``"tiny"``, a local directory, or a hub id.

    ``device`` defaults to CUDA when present. ``dtype`` defaults to the model's own
    (``config.preset_for``): float32 for the tiny SD on every device, so that a GPU draws what the
    lessons' CPU draws; for SD 1.5, float32 on the CPU and bfloat16/float16 on a GPU
    (``config.get_dtype``). The tiny SD loads offline.
    """
    source = resolve(name_or_path)
    device = config.get_device(device)
    dtype = config.get_dtype(device, dtype or config.preset_for(source).dtype)
    local = Path(source).is_dir()
    with quiet():
        pipe = StableDiffusionPipeline.from_pretrained(
            source,
            **{DTYPE_KWARG: dtype},
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=local,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
