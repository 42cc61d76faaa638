"""The article's claims about LoRA as experiments on the tiny SD: one function a claim.

Introduced in notebooks/09_claims_advantages.ipynb (claims 1-6) and
notebooks/10_claims_limitations.ipynb (claims 7-9).

First the harness: the benchmark's published figures (``figures``), settings, data, training and
giving the pipeline back (``harness``), drawing and judging (``judging``), and a second training
loop with the text encoder in it (``text_side``). Then one file a section of lessons 09-10:
``where`` (claim 1), ``costs`` (2-3), ``overfitting`` (4), ``curves`` (3-4 over training),
``many_kinds`` and its ``text_classifier`` (5), ``combining`` (6), ``complex_data`` (7),
``large_changes`` (8), ``sensitivity_map`` (9). Every experiment returns a dict of plain figures
(fractions of pictures, counts, seconds); ``python -m benchmarks.claims --claim N`` runs them
with full budgets and several training seeds. Every name is here: ``claims.two_loras``.

Left out: the GPU (these are the tiny SD's figures), runs longer than a few CPU minutes.
"""

from lorakit.claims.combining import (
    INVERSION_WORD,
    alone_at,
    combined_state,
    inversion_and_lora,
    one_lora_each,
    trainable_groups,
    two_loras,
    two_loras_at_scales,
)
from lorakit.claims.complex_data import STYLE_ORDER, many_styles
from lorakit.claims.costs import (
    count_step,
    optimizer_bytes,
    saved_sizes,
    size_and_speed,
    step_flops,
)
from lorakit.claims.curves import (
    VALIDATION_SEEDS,
    first_reaching,
    learning_curve,
    unet_dropout,
    validation_prompts,
)
from lorakit.claims.figures import (
    PUBLISHED_DIR,
    STUDY_FILES,
    published,
    published_name,
    published_path,
    published_table,
    table_of,
)
from lorakit.claims.harness import (
    FULL_LR,
    config,
    count_lora_weights,
    fit,
    load,
    lora_weights,
    pairs_set,
    restored,
    settings_of,
    style_set,
    unet_targets,
)
from lorakit.claims.intervals import (
    KINDS,
    VERDICTS,
    Interval,
    Threshold,
    bootstrap_interval,
    paired_differences,
    standard_error,
    t_interval,
    verdict,
)
from lorakit.claims.judging import (
    EVAL_SEEDS,
    base_model,
    draw,
    judge,
    kept,
    plain_prompts,
    read_all,
    style_rates,
    vae_ceiling,
)
from lorakit.claims.large_changes import LARGE_CHANGE_VARIANTS, large_change, update_ranks
from lorakit.claims.many_kinds import (
    TEXT_TARGETS,
    adapted_classifier,
    classifier_study,
    text_encoder_lora,
)
from lorakit.claims.overfitting import (
    base_memorisation,
    memorisation,
    small_data,
    training_captions,
)
from lorakit.claims.rank_study import (
    ANCHOR_RANK,
    CONVENTIONS,
    alpha_for,
    lora_update_ratios,
    rank_run,
)
from lorakit.claims.sensitivity_map import DIVERGED_RUN, SAFE, outcome, sensitivity
from lorakit.claims.text_classifier import (
    CORNERS,
    FILLERS,
    TextClassifier,
    accuracy,
    fit_classifier,
    sentences,
)
from lorakit.claims.text_side import train_text_side
from lorakit.claims.truncation import (
    SCOPES,
    full_update_ratios,
    scoped_layers,
    truncate,
    truncated_update,
)
from lorakit.claims.where import (
    CONTROL_WORD,
    WHERE,
    concept_prompts,
    where_lora_sits,
    word_base,
    word_pictures,
    word_run,
)

__all__ = [
    "ANCHOR_RANK",
    "CONTROL_WORD",
    "CONVENTIONS",
    "CORNERS",
    "DIVERGED_RUN",
    "EVAL_SEEDS",
    "FILLERS",
    "FULL_LR",
    "INVERSION_WORD",
    "Interval",
    "KINDS",
    "LARGE_CHANGE_VARIANTS",
    "PUBLISHED_DIR",
    "SAFE",
    "SCOPES",
    "STUDY_FILES",
    "STYLE_ORDER",
    "TEXT_TARGETS",
    "TextClassifier",
    "Threshold",
    "VALIDATION_SEEDS",
    "VERDICTS",
    "WHERE",
    "accuracy",
    "adapted_classifier",
    "alone_at",
    "alpha_for",
    "base_memorisation",
    "base_model",
    "bootstrap_interval",
    "classifier_study",
    "combined_state",
    "concept_prompts",
    "config",
    "count_lora_weights",
    "count_step",
    "draw",
    "first_reaching",
    "fit",
    "fit_classifier",
    "full_update_ratios",
    "inversion_and_lora",
    "judge",
    "kept",
    "large_change",
    "learning_curve",
    "load",
    "lora_update_ratios",
    "lora_weights",
    "many_styles",
    "memorisation",
    "one_lora_each",
    "optimizer_bytes",
    "outcome",
    "paired_differences",
    "pairs_set",
    "plain_prompts",
    "published",
    "published_name",
    "published_path",
    "published_table",
    "rank_run",
    "read_all",
    "restored",
    "saved_sizes",
    "scoped_layers",
    "sensitivity",
    "sentences",
    "settings_of",
    "size_and_speed",
    "small_data",
    "standard_error",
    "step_flops",
    "style_rates",
    "style_set",
    "t_interval",
    "table_of",
    "text_encoder_lora",
    "train_text_side",
    "trainable_groups",
    "training_captions",
    "truncate",
    "truncated_update",
    "two_loras",
    "two_loras_at_scales",
    "unet_dropout",
    "unet_targets",
    "update_ranks",
    "vae_ceiling",
    "validation_prompts",
    "verdict",
    "where_lora_sits",
    "word_base",
    "word_pictures",
    "word_run",
]
