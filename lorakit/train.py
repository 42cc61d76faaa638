"""Training a LoRA on Stable Diffusion's UNet: the loop behind ``lorakit train``.

Introduced in notebooks/06_train_style_lora.ipynb.

:func:`train_lora` injects LoRA into ``pipe.unet`` (``lorakit.inject``) and trains only
``lora_A`` and ``lora_B`` on SD's own objective: noise a cached latent to a random timestep
and predict the noise (epsilon MSE), with AdamW, warm-up then a constant or cosine learning
rate, gradient accumulation and clipping, and optionally min-SNR weighting, mixed precision
(``accelerate``) and gradient checkpointing. Latents and text embeddings are computed ONCE
before the loop, so the VAE and the text encoder never run in it.

Every step draws its randomness from a generator seeded by ``(seed, step)``, and a checkpoint
(LoRA, optimizer, schedule, history) is written atomically every ``checkpoint_every`` steps:
a run stopped and resumed ends with the same LoRA weights, bit for bit, as one that never stopped.

Several processes (``accelerate launch --multi_gpu --num_processes N -m lorakit.cli train ...``:
one per GPU, or CPU processes talking over gloo where no GPU is visible) train the same LoRA as one
process, up to float rounding: each draws the same global batch from ``(seed, step)`` and takes its
own contiguous slice of every micro-batch (``batch_size`` stays the global batch), and the LoRA
gradients and the loss are summed over the processes in one all-reduce before clipping, as DDP
would do, but for the few LoRA tensors only (the frozen UNet needs no wrapper). Only the main
process writes files, samples images and shows the progress bar.

Augmentation is one thing, ``flip``: every image is also cached mirrored (kohya's ``flip_aug``).
``caption_dropout`` shows a fraction of the pictures with the empty prompt (kohya's
``caption_dropout_rate``, diffusers' ``--proportion_empty_prompts``): the LoRA then also learns the
unconditional prediction, the other branch of classifier-free guidance, which it would otherwise
change untrained. ``ema_decay`` returns an exponential moving average of the LoRA over the steps
(diffusers' ``--use_ema``), less dependent on the last few noisy batches. The small preset turns on
``flip`` and caption dropout, which measured better on the outline set; EMA did not, and stays off
(docs/style-lora.md).

:func:`train_lora` reads as lesson 06 teaches it: one named function a step (prepare, cache the
data set, add the LoRA, make the optimizer, resume, then a training step, validation, samples and
checkpoints, and finish), sharing one :class:`TrainingRun`.

``text_encoder=True`` also trains a LoRA on CLIP's text encoder (its attention and MLP, the same rank and
alpha), as kohya's trainer does by default: the captions' embeddings are then computed in every step,
through the text encoder's LoRA, instead of once; the file holds both parts (``lora_te_...`` in kohya's
spelling, ``text_encoder....`` in diffusers'), and ``load_lora_weights`` applies both.

``method="full"`` fine-tunes every UNet weight with the same loop, data, seeds and objective (the
baseline that LoRA's claims are measured against, lessons 09-10) and saves ``unet.safetensors``.

Left out: other augmentations (crops, colour), prior preservation
(DreamBooth's class images), and sharding the model or the optimizer
over the processes (FSDP, DeepSpeed ZeRO): every process holds the whole UNet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from lorakit import config, files, formats, inject, memory, sample

CHECKPOINT = "checkpoint.pt"
METHODS = ("lora", "full")
FULL_FILE = "unet.safetensors"  # what a full fine-tune saves: every UNet weight
MIXED_PRECISIONS = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")
RESUME_KEYS = (
    "method",
    "r",
    "alpha",
    "target_modules",
    "text_encoder",
    "batch_size",
    "grad_accum",
    "seed",  # must match to resume
    "flip",
    "caption_dropout",
    "ema_decay",
    "lora_dropout",
    "lr",
    "lr_schedule",
    "warmup_steps",
    "min_snr_gamma",
    "max_grad_norm",
    "mixed_precision",
    "resolution",
)  # (steps may grow)


@dataclass
class TrainConfig:
    """Everything a LoRA training run needs.

    The field defaults are a plain LoRA run (rank 4 on ``attn2``, no extras). :meth:`for_mode` adds
    a world's preset on top: use it, as the CLI and the lessons do.
    """

    method: str = "lora"  # "lora" | "full": fine-tune every UNet weight instead, with the same loop
    r: int = 4
    alpha: float | None = None  # None: alpha = r (scaling 1)
    target_modules: str | Sequence[str] = "attn2"
    text_encoder: bool = False  # also a LoRA on the text encoder (inject.PRESETS["text"], same r and alpha), as kohya
    lora_dropout: float = (
        0.0  # dropout on the LoRA path's input while training (PEFT's lora_dropout)
    )
    steps: int = 300  # optimizer steps
    batch_size: int = (
        8  # images per micro-batch (over all processes); one step sees batch_size * grad_accum
    )
    lr: float = 1e-3
    warmup_steps: int = 10
    lr_schedule: str = "constant"  # "constant" | "cosine" (after warm-up)
    grad_accum: int = 1
    mixed_precision: str = "no"  # "no" | "fp16" (CUDA only) | "bf16"
    gradient_checkpointing: bool = False
    min_snr_gamma: float | None = None  # e.g. 5.0; None: plain epsilon MSE
    flip: bool = False  # also train on every image mirrored left-right (for subjects whose sides don't matter)
    caption_dropout: float = (
        0.0  # fraction of training pictures shown with the empty prompt instead of their caption
    )
    ema_decay: float | None = (
        None  # e.g. 0.99: the LoRA returned is an exponential moving average of its steps
    )
    max_grad_norm: float = 1.0  # 0 turns clipping off
    seed: int = 0
    resolution: int | None = None  # None: the UNet's own (sample_size * vae_scale_factor)
    validation_every: int = 0  # 0: no validation loss
    num_validation: int = 8  # fixed (image, timestep, noise) triples of the validation loss
    sample_every: int = 0  # 0: no sample images during training
    sample_prompts: Sequence[str] = field(default_factory=lambda: ["a red circle", "a blue square"])
    checkpoint_every: int = 0  # 0: a checkpoint only at the end (when output_dir is set)
    output_dir: str | None = None
    resume: bool = True  # continue from output_dir/checkpoint.pt when it exists
    save_format: str = "kohya"  # "kohya" | "diffusers" | "peft" (lorakit.formats)
    progress: bool = True  # a tqdm progress bar

    @classmethod
    def for_mode(cls, mode: str | None = None, **overrides) -> TrainConfig:
        """Training defaults of ``mode`` ("small": the tiny SD's; "full": SD 1.5's), then ``overrides``.

        ``mode`` defaults to ``config.get_mode()``; pass it, or ``config.preset_for(pipe).mode``, to
        train a given model with its own defaults. The resolution is left to the model
        (``resolution=None``: the UNet's own, 64 px for the tiny SD, 512 for SD 1.5), so either preset
        gives a valid run on either model; the full preset on the tiny SD is simply slower to learn
        (lr 1e-4 for 1,500 steps).

        The small preset is the best of the settings measured on the outline style set
        (``python -m benchmarks.style_lora --train-seeds 0 1 2 3 4 5``, docs/style-lora.md): LoRA on the
        cross-attention *and* the feed-forward layer after it in each transformer block (``"attn2+ff"``, as
        kohya trains them) learns the hollow drawing far more reliably than ``attn2`` alone, which kept
        breaking shapes; rank 8, min-SNR and mirrored pictures learn the style more often and keep more of
        the shapes than the plain run; caption dropout 0.3 keeps the colours (guidance's unconditional branch
        learns the style too); LoRA dropout 0.1 keeps a little more of the content. The full preset keeps
        ``attn2``: the ``ff`` result is the tiny SD's, not measured on SD 1.5.
        """
        preset = config.get_preset(mode)
        small = dict(
            r=8,
            target_modules="attn2+ff",
            min_snr_gamma=2.0,
            flip=True,
            caption_dropout=0.3,
            lora_dropout=0.1,
        )
        full = dict(
            r=16,
            steps=1500,
            batch_size=4,
            lr=1e-4,
            warmup_steps=100,
            lr_schedule="cosine",
            mixed_precision="bf16",
            gradient_checkpointing=True,
            min_snr_gamma=5.0,
            sample_prompts=["a photo of a sks dog"],
        )
        return cls(**{**(full if preset.mode == "full" else small), **overrides})


@dataclass
class TrainResult:
    """What :func:`train_lora` returns; the trained LoRA itself stays in ``pipe.unet``."""

    history: list[float]  # loss of every optimizer step (mean over its micro-batches)
    val_history: list[tuple[int, float]]  # (step, fixed-seed validation loss)
    samples: list[tuple[int, list]]  # (step, PIL images of cfg.sample_prompts); main process only
    lora_names: list[str]  # paths of the LoRA-wrapped modules (none for method="full")
    step_seconds: list[float] = field(
        default_factory=list
    )  # wall time of each step this call trained


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine from 1 down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning-rate multiplier at optimizer step ``step``: linear warm-up, then constant or cosine."""
    if cfg.lr_schedule == "constant" and step >= cfg.warmup_steps:
        return 1.0
    return warmup_cosine(step, cfg.warmup_steps, cfg.steps)


def min_snr_weights(
    alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as diffusers' train_text_to_image: min(snr, gamma) / snr."""
    a = alphas_cumprod.to(t.device)[t].float()  # (B,)
    snr = a / (1 - a)  # (B,) signal-to-noise ratio of each timestep
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def check_config(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse a bad setting before any work is done, naming every problem at once."""
    problems = [
        f"{name} must be a positive integer, got {getattr(cfg, name)!r}"
        for name in ("steps", "batch_size", "grad_accum", "num_validation")
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) <= 0
    ]
    problems += [
        f"{name} must be >= 0, got {getattr(cfg, name)!r}"
        for name in (
            "warmup_steps",
            "validation_every",
            "sample_every",
            "checkpoint_every",
            "max_grad_norm",
        )
        if getattr(cfg, name) < 0
    ]
    if not (isinstance(cfg.r, int) and not isinstance(cfg.r, bool) and cfg.r > 0):
        problems.append(f"r must be a positive integer, got {cfg.r!r}")
    if cfg.alpha is not None and not (
        isinstance(cfg.alpha, (int, float)) and math.isfinite(cfg.alpha) and cfg.alpha > 0
    ):
        problems.append(
            f"alpha must be a positive finite number or None (alpha = r), got {cfg.alpha!r}"
        )
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        problems.append(f"lr must be a positive finite number, got {cfg.lr!r}")
    if cfg.resolution is not None and not (
        isinstance(cfg.resolution, int) and cfg.resolution > 0 and cfg.resolution % 64 == 0
    ):
        problems.append(
            f"resolution must be a positive multiple of 64 (the UNet halves the latents three times) "
            f"or None, got {cfg.resolution!r}"
        )
    if not (isinstance(cfg.seed, int) and 0 <= cfg.seed < 2**63):
        problems.append(f"seed must be an integer from 0 to 2**63 - 1, got {cfg.seed!r}")
    if cfg.method not in METHODS:
        problems.append(f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        problems.append(
            f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {cfg.lr_schedule!r}"
        )
    if cfg.mixed_precision not in MIXED_PRECISIONS:
        problems.append(
            f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {cfg.mixed_precision!r}"
        )
    elif cfg.mixed_precision == "fp16" and device.type != "cuda":
        problems.append(
            f"mixed_precision='fp16' needs a CUDA GPU (its loss scaling is CUDA-only), but the "
            f"pipeline is on {device.type}: use 'bf16' or 'no'"
        )
    if cfg.save_format not in formats.FORMATS:
        problems.append(
            f"save_format must be one of {', '.join(formats.FORMATS)}, got {cfg.save_format!r}"
        )
    if not 0 <= cfg.lora_dropout < 1:
        problems.append(f"lora_dropout must be in [0, 1), got {cfg.lora_dropout!r}")
    if not 0 <= cfg.caption_dropout < 1:
        problems.append(f"caption_dropout must be in [0, 1), got {cfg.caption_dropout!r}")
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        problems.append(f"ema_decay must be in (0, 1) or None, got {cfg.ema_decay!r}")
    if cfg.min_snr_gamma is not None and not cfg.min_snr_gamma > 0:
        problems.append(f"min_snr_gamma must be positive or None, got {cfg.min_snr_gamma!r}")
    if not isinstance(cfg.text_encoder, bool):
        problems.append(f"text_encoder must be True or False, got {cfg.text_encoder!r}")
    elif cfg.text_encoder and cfg.method == "full":
        problems.append(
            "text_encoder=True trains a text-encoder LoRA, but method='full' fine-tunes the UNet alone"
        )
    if problems:
        raise ValueError("bad TrainConfig: " + "; ".join(problems) + ".")


@torch.no_grad()
def cache_dataset(
    pipe,
    dataset,
    resolution: int,
    batch_size: int = 16,
    flip: bool = False,
    empty_prompt: bool = False,
):
    """Latents (N, 4, h, w) of every image, embeddings (C, 77, D) of every distinct caption, each image's caption row (N,).

    ``h = w = resolution / pipe.vae_scale_factor`` (16 for the tiny SD, 64 for SD 1.5). With
    ``flip``, the mirror image of every picture follows them (2N latents, the same captions):
    drawing rows uniformly then flips each training picture with probability 1/2. With
    ``empty_prompt``, the last embedding row is the empty prompt's (for caption dropout).
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: add some images (and captions) before training.")
    device, vae = pipe.device, pipe.vae
    images, captions = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    for i, image in enumerate(images):
        if tuple(image.shape) != (3, resolution, resolution):
            raise ValueError(
                f"dataset image {i} has shape {tuple(image.shape)} but training expects (3, {resolution}, "
                f"{resolution}): build the dataset with resolution={resolution} or set TrainConfig.resolution."
            )
    pixels = torch.stack(images)  # (N, 3, R, R) in [-1, 1]
    if flip:
        pixels, captions = (
            torch.cat([pixels, pixels.flip(-1)]),
            captions + captions,
        )  # (2N, 3, R, R)
    latents = (
        torch.cat(
            [
                vae.encode(pixels[i : i + batch_size].to(device, vae.dtype)).latent_dist.mode()
                for i in range(0, len(pixels), batch_size)
            ]
        ).float()
        * vae.config.scaling_factor
    )  # (N, 4, h, w)
    distinct = distinct_captions(captions, empty_prompt)
    sample.warn_if_cut(pipe.tokenizer, distinct, "caption")
    ids = token_ids(pipe, distinct)  # (C, 77)
    embeddings = torch.cat(
        [
            pipe.text_encoder(ids[i : i + batch_size].to(device))[0]
            for i in range(0, len(ids), batch_size)
        ]
    ).float()  # (C, 77, D)
    rows = torch.tensor([distinct.index(c) for c in captions], device=device)  # (N,)
    return latents, embeddings, rows


def distinct_captions(captions, empty_prompt: bool = False) -> list[str]:
    """The captions once each, in order; the empty prompt last with ``empty_prompt`` (for caption dropout)."""
    distinct = list(dict.fromkeys(captions))
    if empty_prompt:
        distinct.append("")  # (even if a caption is empty too: the last row is the empty prompt's)
    return distinct


def token_ids(pipe, captions: list[str]) -> torch.Tensor:
    """The token ids (C, 77) of ``captions``, as the pipeline encodes a prompt."""
    return pipe.tokenizer(
        captions,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def embed(run: TrainingRun, rows: torch.Tensor) -> torch.Tensor:
    """The text embeddings (B, 77, D) of caption ``rows``: cached, or through the text encoder's LoRA (with the
    gradient) when it trains too."""
    if not run.cfg.text_encoder:
        return run.embeddings[rows]
    return run.pipe.text_encoder(run.ids[rows])[0].float()


def epsilon_loss(unet, scheduler, latents, context, t, noise, gamma: float | None) -> torch.Tensor:
    """SD's training loss on one batch: noise ``latents`` to ``t``, predict the noise (or v), weighted MSE."""
    noisy = scheduler.add_noise(latents, noise, t)  # (B, 4, h, w)
    pred = unet(noisy.to(unet.dtype), t, context.to(unet.dtype)).sample.float()  # (B, 4, h, w)
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"lorakit trains epsilon or v_prediction models, this one predicts {kind!r}."
        )
    target = noise if kind == "epsilon" else scheduler.get_velocity(latents, noise, t)
    per_image = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))  # (B,)
    if gamma is not None:
        per_image = per_image * min_snr_weights(scheduler.alphas_cumprod, t, gamma, kind)
    return per_image.mean()


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save, written atomically: a crash or a full disk never leaves half a checkpoint."""
    files.write_atomically(path, lambda f: torch.save(state, f))


def save_loss_plot(result: TrainResult, path: str | Path) -> Path:
    """A PNG of the training loss (and the validation loss, if any) per step."""
    # No pyplot: needs no display and leaves the notebook's own figures alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(range(1, len(result.history) + 1), result.history, lw=0.8, label="training loss")
    if result.val_history:
        ax.plot(*zip(*result.val_history, strict=True), "o-", label="validation loss (fixed seed)")
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend()
    fig.tight_layout()
    return files.write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))


def process_rows(batch_size: int, num_processes: int, index: int) -> slice:
    """The contiguous rows of a ``batch_size`` micro-batch that process ``index`` of ``num_processes`` trains on."""
    if batch_size < num_processes:
        raise ValueError(
            f"batch_size {batch_size} is smaller than the number of processes ({num_processes}): every "
            f"process needs at least one image per micro-batch; use batch_size >= {num_processes}."
        )
    return slice(index * batch_size // num_processes, (index + 1) * batch_size // num_processes)


def all_reduce_grads(accelerator, params: list[torch.Tensor], step_loss: float) -> float:
    """Sum the LoRA gradients and this step's loss over all processes (one all-reduce of a flat buffer, as DDP).

    Each process's loss was already weighted by its share of the batch, so the sums are the gradient
    and the loss of the whole batch. Returns the summed loss; a no-op with one process.
    """
    if accelerator.num_processes == 1:
        return step_loss
    with_grad = [p for p in params if p.grad is not None]  # the same parameters in every process
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # (sum of numel,)
    loss = torch.tensor([step_loss], dtype=torch.float64, device=flat.device)  # (1,)
    flat, loss = accelerator.reduce([flat, loss], reduction="sum")
    for p, g in zip(with_grad, flat.split([p.numel() for p in with_grad]), strict=True):
        p.grad.copy_(g.view_as(p.grad))
    return loss.item()


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _make_accelerator(cfg: TrainConfig, device: torch.device):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # accelerate keeps one global state per process; a notebook trains several times with different settings.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=device.type == "cpu",
    )


def preflight(cfg: TrainConfig, pipe, device: torch.device) -> None:
    """On a GPU, refuse a run whose memory estimate does not fit, naming settings that would (``lorakit.memory``).

    On the CPU the budget is the machine's RAM, which the tiny SD never comes near; estimating
    costs a second or two per new setting there, so the check runs on CUDA devices only.
    (``lorakit.memory`` estimates LoRA runs; a full fine-tune is not checked.)
    """
    if device.type == "cuda" and cfg.method == "lora":
        memory.check_fits(cfg, pipe, device=device)


# --------------------------------------------------------------------------- the steps of a run, in order


@dataclass
class TrainingRun:
    """What the steps of :func:`train_lora` share: the model, the cached data, the optimizer, the history."""

    pipe: object
    cfg: TrainConfig
    accelerator: object
    mine: slice  # this process's rows of every micro-batch
    resolution: int
    latents: torch.Tensor  # (N, 4, h, w)
    embeddings: torch.Tensor  # (C, 77, D)
    rows: torch.Tensor  # (N,) embedding row of each latent
    names: list[str]  # the LoRA-wrapped module paths (the text encoder's as text_encoder.<path>)
    params: list[torch.Tensor]  # every lora_A and lora_B weight, in module order
    optimizer: object
    lr_scheduler: object
    noise_scheduler: DDPMScheduler
    ema: list[torch.Tensor]  # the moving average of params (empty without ema_decay)
    out: Path | None
    history: list[float] = field(default_factory=list)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    samples: list[tuple[int, list]] = field(default_factory=list)
    start: int = 0  # the first step to train (after a resume, the checkpoint's)
    ids: torch.Tensor | None = (
        None  # (C, 77) token ids of the captions, when the text encoder trains
    )
    step_seconds: list[float] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def prepare(pipe, cfg: TrainConfig):
    """Step 1: refuse bad settings and runs that won't fit, before any work; start accelerate.

    Returns ``(accelerator, mine)``: accelerate's view of the processes and this process's rows.
    """
    device = pipe.device
    check_config(cfg, device)
    preflight(cfg, pipe, device)
    accelerator = _make_accelerator(cfg, device)
    world = accelerator.num_processes
    mine = process_rows(
        cfg.batch_size, world, accelerator.process_index
    )  # (all rows with one process)
    if world > 1 and device.type != "cpu" and device != accelerator.device:
        raise ValueError(
            f"process {accelerator.process_index} of {world} has the pipeline on {device} but accelerate "
            f"gave it {accelerator.device}: load the pipeline on accelerate.PartialState().device."
        )
    return accelerator, mine


def add_lora(unet, cfg: TrainConfig) -> list[str]:
    """Step 3: wrap ``cfg.target_modules`` in LoRA layers (A drawn from ``cfg.seed``), unless the UNet has them already.

    Returns the wrapped module paths.
    """
    names = [n for n, _ in inject.lora_layers(unet)]
    if names:
        return names
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the LoRA A init depends on the seed only
        return inject.inject_lora(
            unet,
            r=cfg.r,
            alpha=cfg.alpha,
            target_modules=cfg.target_modules,
            dropout=cfg.lora_dropout,
        )


def add_text_lora(text_encoder, cfg: TrainConfig) -> list[str]:
    """Step 3 with ``cfg.text_encoder``: the same rank and alpha on CLIP's attention and MLP (A drawn from the seed);
    returns the wrapped paths as ``text_encoder.<path>``."""
    names = [n for n, _ in inject.lora_layers(text_encoder)]
    if not names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)  # another draw than the UNet's
            names = inject.inject_lora(
                text_encoder,
                r=cfg.r,
                alpha=cfg.alpha,
                target_modules="text",
                dropout=cfg.lora_dropout,
            )
    return [inject.TEXT_PREFIX + n for n in names]


def lora_holder(pipe, cfg: TrainConfig):
    """What holds the LoRA that trains: the UNet, or the whole pipeline when the text encoder trains too."""
    return pipe if cfg.text_encoder else pipe.unet


def unfreeze(unet) -> list[torch.Tensor]:
    """Step 3 of a full fine-tune (``method="full"``): every UNet weight trainable; returns them, in module order.

    The weights must be float32: AdamW's tiny updates would round away in float16 or bfloat16
    (mixed precision still computes in them, with ``mixed_precision``).
    """
    if next(inject.lora_layers(unet), None) is not None:
        raise ValueError(
            "method='full' fine-tunes the UNet itself, but it has LoRA layers: call "
            "inject.remove_lora(pipe.unet) first."
        )
    dtypes = {p.dtype for p in unet.parameters()}
    if dtypes != {torch.float32}:
        raise ValueError(
            f"method='full' needs the UNet's weights in float32, they are {sorted(map(str, dtypes))}: "
            "load the pipeline with dtype='float32' (mixed_precision='bf16' still computes in bf16)."
        )
    unet.requires_grad_(True)
    return list(unet.parameters())


def trainable_state(model, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the model: the LoRA weights (:func:`lora_holder`), or (full fine-tune) every
    UNet weight."""
    state = inject.lora_state_dict(model) if cfg.method == "lora" else model.state_dict()
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def make_optimizer(params: list[torch.Tensor], cfg: TrainConfig, accelerator):
    """Step 4: AdamW on the trained parameters alone (LoRA's A and B), and its learning-rate schedule (:func:`lr_factor`)."""
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    return accelerator.prepare_optimizer(
        optimizer
    ), lr_scheduler  # fp16: loss scaling via its GradScaler


def resume_state(cfg: TrainConfig) -> dict | None:
    """The checkpoint in ``cfg.output_dir`` that a run of ``cfg`` would resume from (None: a new run), checked:
    written with the same settings (``RESUME_KEYS``), at a step no later than ``cfg.steps``."""
    out = Path(cfg.output_dir) if cfg.output_dir else None
    if out is None or not cfg.resume or not (out / CHECKPOINT).exists():
        return None
    try:
        state = torch.load(
            out / CHECKPOINT, map_location="cpu", weights_only=True
        )  # our own file, no pickled code
    except Exception as error:  # a torn or foreign file: torch raises many kinds
        raise ValueError(
            f"{out / CHECKPOINT} cannot be read ({type(error).__name__}): delete it to start "
            "again, or resume=False."
        ) from None
    changed = [
        f"{k}: {state['config'][k]!r} -> {v!r}"
        for k, v in asdict(cfg).items()
        if k in RESUME_KEYS and _plain(state["config"].get(k)) != _plain(v)
    ]
    if state["step"] > cfg.steps or (
        cfg.lr_schedule == "cosine" and state["config"]["steps"] != cfg.steps
    ):
        changed.append(
            f"steps: {state['config']['steps']!r} -> {cfg.steps!r} (the checkpoint is at step "
            f"{state['step']}; steps may only grow, and not under the cosine schedule)"
        )
    if changed:
        raise ValueError(
            f"{out / CHECKPOINT} was trained with other settings ({'; '.join(changed)}): "
            "resume with the checkpoint's settings, use another output_dir, or resume=False to "
            "start again (the checkpoint is overwritten)."
        )
    return state


def resume(run: TrainingRun, state: dict | None) -> None:
    """Step 5: continue from ``state``, the checkpoint :func:`resume_state` read and checked (None: a new run).

    The LoRA (or, for a full fine-tune, the UNet), the optimizer, the schedule, the random state and the
    history continue exactly.
    """
    if state is None:
        return
    if run.cfg.method == "lora":
        inject.load_lora_state_dict(lora_holder(run.pipe, run.cfg), state["lora"])
    else:
        with torch.no_grad():
            run.pipe.unet.load_state_dict(state["unet"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.lr_scheduler.load_state_dict(state["lr_scheduler"])
    if run.accelerator.scaler is not None and "scaler" in state:
        run.accelerator.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    run.history, run.start = state["history"], state["step"]
    for e, saved in zip(run.ema, state.get("ema", []), strict=True):
        e.copy_(saved)
    run.val_history = [tuple(v) for v in state["val_history"]]


def draw_batch(run: TrainingRun, step: int):
    """The randomness of one step, all from ``(seed, step)``: which pictures, timesteps, noise and captions.

    A resumed run, and every process of a several-process run, draws the same. Returns
    ``(idx, t, noise, context)``: latent rows, timesteps, noise and embedding rows of the
    ``batch_size * grad_accum`` pictures of the step.
    """
    cfg, device = run.cfg, run.pipe.device
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    total = cfg.batch_size * cfg.grad_accum
    num_timesteps = run.noise_scheduler.config.num_train_timesteps
    idx = torch.randint(len(run.latents), (total,), generator=gen).to(device)  # (B*A,)
    t = torch.randint(0, num_timesteps, (total,), generator=gen).to(device)  # (B*A,)
    noise = torch.randn((total, *run.latents.shape[1:]), generator=gen).to(device)  # (B*A, 4, h, w)
    context = run.rows[idx]  # (B*A,) embedding row of each picture
    if (
        cfg.caption_dropout > 0
    ):  # some pictures get the empty prompt (last row), as guidance's other branch
        dropped = (torch.rand(total, generator=gen) < cfg.caption_dropout).to(device)  # (B*A,)
        context = torch.where(dropped, len(run.embeddings) - 1, context)
    return idx, t, noise, context


def training_step(run: TrainingRun, step: int) -> float:
    """Step 6: one optimizer step on the LoRA: noise, predict, loss, backward (all processes), clip, AdamW, EMA.

    Returns the step's loss (the mean over its micro-batches and processes).
    """
    cfg, accelerator, unet, device = run.cfg, run.accelerator, run.pipe.unet, run.pipe.device
    idx, t, noise, context = draw_batch(run, step)
    micro, mine, step_loss = cfg.batch_size, run.mine, 0.0
    # LoRA dropout draws from torch's global generator: seed it from (seed, step, process) as well,
    # and give it back as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed * 1_000_003 + step + 7_919 * accelerator.process_index)
        for k in range(cfg.grad_accum):
            part = slice(
                k * micro + mine.start, k * micro + mine.stop
            )  # this process's rows of micro-batch k
            with accelerator.accumulate(unet), accelerator.autocast():
                loss = epsilon_loss(
                    unet,
                    run.noise_scheduler,
                    run.latents[idx[part]],
                    embed(run, context[part]),
                    t[part],
                    noise[part],
                    cfg.min_snr_gamma,
                )
                loss = loss * (
                    (mine.stop - mine.start) / micro
                )  # its share of the batch's mean (x 1.0 alone)
                accelerator.backward(loss)  # divides by grad_accum
            step_loss += loss.item() / cfg.grad_accum
    step_loss = all_reduce_grads(
        accelerator, run.params, step_loss
    )  # the whole batch's gradient and loss
    if not math.isfinite(step_loss):  # checked after the all-reduce, so that every process stops
        lr = run.lr_scheduler.get_last_lr()[0]
        raise RuntimeError(
            f"the loss became {step_loss} at step {step + 1} of {cfg.steps} (lr {lr:.3g}): "
            "training diverged. Lower the learning rate, or train in float32 "
            "(mixed_precision='no')."
        )
    if cfg.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.params, cfg.max_grad_norm)
    run.optimizer.step()
    if run.ema:  # diffusers' EMAModel warm-up: the average forgets its start quickly
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(run.ema, [p.detach() for p in run.params], 1 - decay)
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss


def validation_indices(run: TrainingRun):
    """The fixed (pictures, timesteps, noise) of the validation loss: the same every time, so its curve is smooth."""
    cfg, device = run.cfg, run.pipe.device
    num_timesteps = run.noise_scheduler.config.num_train_timesteps
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    idx = torch.arange(cfg.num_validation) % len(run.latents)  # (V,)
    t = torch.linspace(0, num_timesteps - 1, cfg.num_validation).long().to(device)  # (V,)
    noise = torch.randn((cfg.num_validation, *run.latents.shape[1:]), generator=gen).to(
        device
    )  # (V, 4, h, w)
    return idx, t, noise


@torch.no_grad()
def validation_loss(run: TrainingRun, fixed) -> float:
    """Step 7a: the loss on the fixed validation triples, without LoRA dropout."""
    unet, text_encoder = run.pipe.unet, run.pipe.text_encoder
    idx, t, noise = fixed
    unet.eval()  # no LoRA dropout: the same number for the same weights
    text_encoder.eval()
    try:
        with run.accelerator.autocast():
            return epsilon_loss(
                unet,
                run.noise_scheduler,
                run.latents[idx],
                embed(run, run.rows[idx]),
                t,
                noise,
                run.cfg.min_snr_gamma,
            ).item()
    finally:
        unet.train()
        text_encoder.train(run.cfg.text_encoder)


def sample_during_training(run: TrainingRun, done: int) -> None:
    """Step 7b: pictures of ``cfg.sample_prompts`` after ``done`` steps (main process; saved with ``output_dir``)."""
    cfg, unet = run.cfg, run.pipe.unet
    unet.eval()
    run.pipe.text_encoder.eval()
    images = sample.generate(
        run.pipe,
        list(cfg.sample_prompts),
        seeds=list(range(len(cfg.sample_prompts))),
        resolution=run.resolution,
    )
    unet.train()
    run.pipe.text_encoder.train(cfg.text_encoder)
    run.samples.append((done, images))
    if run.out is not None:
        grid = sample.image_grid(images, labels=cfg.sample_prompts)
        files.write_atomically(
            run.out / f"samples_{done:06d}.png", lambda f: grid.save(f, format="PNG")
        )


def checkpoint(run: TrainingRun, step: int) -> None:
    """Step 8: everything :func:`resume` needs, written atomically to ``output_dir/checkpoint.pt``."""
    model = lora_holder(run.pipe, run.cfg) if run.cfg.method == "lora" else run.pipe.unet
    state = {
        "lora" if run.cfg.method == "lora" else "unet": trainable_state(model, run.cfg),
        "optimizer": run.optimizer.state_dict(),
        "lr_scheduler": run.lr_scheduler.state_dict(),
        "step": step,
        "history": run.history,
        "val_history": [list(v) for v in run.val_history],
        "rng": torch.get_rng_state(),
        "config": {k: _plain(v) for k, v in asdict(run.cfg).items()},
    }
    if run.accelerator.scaler is not None:
        state["scaler"] = run.accelerator.scaler.state_dict()
    if run.ema:
        state["ema"] = [e.cpu().clone() for e in run.ema]
    save_checkpoint(state, run.out / CHECKPOINT)


def finish(run: TrainingRun) -> TrainResult:
    """Step 9: the EMA into the LoRA (if any), and the LoRA file and loss plot (main process, with ``output_dir``)."""
    cfg, unet = run.cfg, run.pipe.unet
    if run.ema:
        with torch.no_grad():
            torch._foreach_copy_(
                run.params, run.ema
            )  # the LoRA left in the UNet and saved is the average
    result = TrainResult(
        history=run.history,
        val_history=run.val_history,
        samples=run.samples,
        lora_names=run.names,
        step_seconds=run.step_seconds,
    )
    if run.out is not None and run.main:
        if cfg.method == "lora":
            formats.save_lora(
                lora_holder(run.pipe, cfg),
                run.out / ("lora" if cfg.save_format == "peft" else "lora.safetensors"),
                cfg.save_format,
            )
        else:
            files.write_atomically(
                run.out / FULL_FILE,
                formats.safetensors_bytes(trainable_state(unet, cfg), {"lorakit_method": "full"}),
            )
        save_loss_plot(result, run.out / "loss.png")
    run.accelerator.wait_for_everyone()  # every process returns once the files are there
    return result


def train_lora(pipe, dataset, config: TrainConfig | None = None) -> TrainResult:
    """Inject LoRA into ``pipe.unet`` (unless it already has LoRA layers) and train it on ``dataset``.

    ``dataset`` yields ``(image (3, R, R) in [-1, 1], caption)``. The trained LoRA stays in
    ``pipe.unet``; with ``cfg.output_dir`` it is also saved (``lora.safetensors``, or ``lora/``
    for PEFT), with ``loss.png`` and a checkpoint to resume from. Under ``accelerate launch`` with
    several processes, every process calls it, with the pipeline on ``accelerate.PartialState().device``.

    The steps, as lesson 06 teaches them: :func:`prepare`, :func:`cache_dataset`, :func:`add_lora`,
    :func:`make_optimizer`, :func:`resume`, then :func:`training_step` for every step with
    :func:`validation_loss`, :func:`sample_during_training` and :func:`checkpoint` when they are due,
    and :func:`finish`.
    """
    cfg = config or TrainConfig()  # (the parameter hides the lorakit.config module, unused in here)
    unet, device = pipe.unet, pipe.device
    checkpoint_state = resume_state(
        cfg
    )  # read once; a checkpoint of other settings is refused before anything changes
    accelerator, mine = prepare(pipe, cfg)  # 1
    resolution = cfg.resolution or unet.config.sample_size * pipe.vae_scale_factor
    latents, embeddings, rows = cache_dataset(
        pipe,
        dataset,
        resolution,
        flip=cfg.flip,  # 2
        empty_prompt=cfg.caption_dropout > 0,
    )
    ids = (
        token_ids(
            pipe,
            distinct_captions(
                [
                    dataset.caption(i) if hasattr(dataset, "caption") else dataset[i][1]
                    for i in range(len(dataset))
                ],
                cfg.caption_dropout > 0,
            ),
        ).to(device)
        if cfg.text_encoder
        else None
    )
    if cfg.method == "lora":
        names = add_lora(unet, cfg)  # 3
        if cfg.text_encoder:
            names += add_text_lora(pipe.text_encoder, cfg)
        params = [
            p
            for _, layer in inject.lora_layers(lora_holder(pipe, cfg))
            for p in (layer.lora_A.weight, layer.lora_B.weight)
        ]
    else:
        names, params = (
            [],
            unfreeze(unet),
        )  # 3, a full fine-tune: the baseline LoRA is measured against
    optimizer, lr_scheduler = make_optimizer(params, cfg, accelerator)  # 4
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    out = Path(cfg.output_dir) if cfg.output_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files.remove_stale(out)  # what killed runs left half-written
    run = TrainingRun(
        pipe=pipe,
        cfg=cfg,
        accelerator=accelerator,
        mine=mine,
        resolution=resolution,
        latents=latents,
        embeddings=embeddings,
        rows=rows,
        names=names,
        params=params,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        noise_scheduler=noise_scheduler,
        ema=[p.detach().clone() for p in params] if cfg.ema_decay else [],
        out=out,
        ids=ids,
    )
    resume(run, checkpoint_state)  # 5
    fixed = validation_indices(run)

    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    was_training, text_was_training = unet.training, pipe.text_encoder.training
    unet.train()  # diffusers' checkpointing and LoRA dropout act in train mode only
    pipe.text_encoder.train(cfg.text_encoder)
    try:
        if cfg.validation_every and run.start == 0:
            run.val_history.append((0, validation_loss(run, fixed)))
        bar = tqdm(
            range(run.start, cfg.steps),
            desc="LoRA",
            initial=run.start,
            total=cfg.steps,
            disable=not (cfg.progress and run.main),
        )
        for step in bar:
            started = time.perf_counter()
            run.history.append(training_step(run, step))  # 6
            run.step_seconds.append(time.perf_counter() - started)
            done = step + 1
            bar.set_postfix(
                loss=f"{run.history[-1]:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2g}"
            )
            if cfg.validation_every and done % cfg.validation_every == 0:  # 7
                run.val_history.append((done, validation_loss(run, fixed)))
            if cfg.sample_every and done % cfg.sample_every == 0 and run.main:
                sample_during_training(run, done)
            if (
                out is not None
                and run.main
                and (
                    (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps
                )
            ):
                checkpoint(run, done)  # 8
    finally:
        unet.train(was_training)
        pipe.text_encoder.train(text_was_training)
        if cfg.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
    return finish(run)  # 9
