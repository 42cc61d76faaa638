"""Training a LoRA on Stable Diffusion's UNet: the loop behind ``lorakit train``.

Introduced in notebooks/06_train_style_lora.ipynb.

One file a part, in the order lesson 06 meets them: ``settings`` (``TrainConfig`` and the checks
that refuse a bad one), ``objective`` (SD's epsilon loss, min-SNR, the learning-rate schedule),
``caching`` (latents and caption embeddings, computed once before the loop), ``trainable`` (the
LoRA added, or every UNet weight for ``method="full"``), ``processes`` (several GPUs under
``accelerate launch``), ``training_run`` (the state the steps share, and the result),
``checkpoints`` (resume bit for bit), ``steps`` and ``loop``
(``train_lora``, one named function a step), ``plot`` (``loss.png``). Import the package, not
its files: ``from lorakit import train; train.train_lora(pipe, dataset, cfg)``.

Left out: sharding the model or the optimizer over the processes (FSDP, DeepSpeed ZeRO), prior
preservation, augmentations other than mirroring.
"""

from lorakit.train.caching import cache_dataset, caption_ids, distinct_captions, token_ids
from lorakit.train.checkpoints import (
    CHECKPOINT,
    RESUME_KEYS,
    checkpoint,
    resume,
    resume_state,
    save_checkpoint,
)
from lorakit.train.loop import FULL_FILE, finish, start_run, train_lora, when_due
from lorakit.train.objective import (
    epsilon_loss,
    lr_factor,
    min_snr_weights,
    noise_scheduler,
    warmup_cosine,
)
from lorakit.train.plot import save_loss_plot
from lorakit.train.processes import all_reduce_grads, make_accelerator, process_rows
from lorakit.train.settings import (
    LR_SCHEDULES,
    METHODS,
    MIXED_PRECISIONS,
    TrainConfig,
    check_config,
)
from lorakit.train.steps import (
    draw_batch,
    embed,
    make_optimizer,
    preflight,
    prepare,
    sample_during_training,
    training_step,
    validation_indices,
    validation_loss,
)
from lorakit.train.trainable import (
    add_lora,
    add_text_lora,
    lora_holder,
    lora_parameters,
    trainable_state,
    unfreeze,
)
from lorakit.train.training_run import TrainingRun, TrainResult

__all__ = [
    "CHECKPOINT",
    "FULL_FILE",
    "LR_SCHEDULES",
    "METHODS",
    "MIXED_PRECISIONS",
    "RESUME_KEYS",
    "TrainConfig",
    "TrainResult",
    "TrainingRun",
    "add_lora",
    "add_text_lora",
    "all_reduce_grads",
    "cache_dataset",
    "caption_ids",
    "check_config",
    "checkpoint",
    "distinct_captions",
    "draw_batch",
    "embed",
    "epsilon_loss",
    "finish",
    "lora_holder",
    "lora_parameters",
    "lr_factor",
    "make_accelerator",
    "make_optimizer",
    "min_snr_weights",
    "noise_scheduler",
    "preflight",
    "prepare",
    "process_rows",
    "resume",
    "resume_state",
    "sample_during_training",
    "save_checkpoint",
    "save_loss_plot",
    "start_run",
    "token_ids",
    "train_lora",
    "trainable_state",
    "training_step",
    "unfreeze",
    "validation_indices",
    "validation_loss",
    "warmup_cosine",
    "when_due",
]
