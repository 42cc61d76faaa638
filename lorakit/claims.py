"""The article's claims about LoRA as experiments: one function per claim, on the tiny SD.

Introduced in notebooks/09_claims_advantages.ipynb (claims 1-6) and notebooks/10_claims_limitations.ipynb
(claims 7-9). ``python -m benchmarks.claims --claim N`` runs the same functions with full budgets and
several training seeds; its tables and verdicts are in docs/claims.md.

Every function trains with ``lorakit.train`` (LoRA, or a full fine-tune of the UNet with the same loop,
data, seeds and objective), judges with ``lorakit.metrics`` on pictures drawn with fixed seeds, and
returns a dict of plain figures (fractions of pictures, counts, seconds). Each leaves the pipeline it
was given as it found it (:func:`restored`), so a lesson can run one after another.

1. :func:`where_lora_sits`: the same budget on ``attn2``, ``attn1``, both, the feed-forward layers,
   ``attn2+ff``, every linear layer, or a full fine-tune, for a style or a new meaning of a word.
2-3. :func:`size_and_speed`: trainable parameters, file, optimizer state and step time, LoRA against
   a full fine-tune (the benchmark adds the process's peak memory and the steps to a style rate).
4. :func:`small_data`: 2 to 16 training pictures; generalising (style on held-out prompts),
   forgetting (plain prompts) and memorising (:func:`memorisation`: overlap with the nearest training picture).
5. :func:`text_encoder_lora` (LoRA in CLIP's text encoder teaches a word) and :func:`classifier_study`
   (the same ``inject_lora`` on a small text classifier that is not a diffusion model at all).
6. :func:`two_loras` (two style LoRAs applied together, with scales, and merged into the weights) and
   :func:`inversion_and_lora` (a learned token embedding, textual inversion, with and without a LoRA).
7. :func:`many_styles`: one LoRA holding 1, 2 or 3 styles, each under its own trigger, at a rank. For 6 and 7,
   :func:`vae_ceiling`: how much of a style survives the VAE alone, the most any LoRA can draw of it.
8. :func:`large_change`: a shape the tiny SD never saw (the cross), and the rank a full fine-tune's
   update really has (:func:`update_ranks`: the rank that keeps 90 % of each layer's energy).
9. :func:`sensitivity`: one point of the learning rate x rank x alpha map, named by :func:`outcome`.

Left out: the GPU (these are the tiny SD's figures; SD 1.5's are in benchmarks/RESULTS.md), and
experiments that need more than a few minutes of a CPU a run.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch import nn

from lorakit import config as course
from lorakit import imagefolder, inject, lowrank, metrics, models, sample, shapes, styles, train

EVAL_SEEDS = (0, 1, 2, 3)  # every prompt is drawn at these seeds
FULL_LR = (
    1e-4  # full fine-tuning's learning rate: LoRA's 1e-3 on every weight of the UNet wrecks it
)
# Claim 1: where the LoRA sits (inject.PRESETS names, suffix lists, "linear": every linear layer of the UNet).
WHERE = {
    "attn2": "attn2",
    "attn1": [f"attn1.{p}" for p in inject.PROJECTIONS],
    "attn1+attn2": "attn",
    "ff": list(inject.FEED_FORWARD),
    "attn2+ff": "attn2+ff",
    "every linear": "linear",
    "full fine-tune": "full",
}
STYLE_ORDER = ("outline", "striped", "double")  # claim 7 adds the styles in this order
TEXT_TARGETS = inject.TEXT_ENCODER  # CLIP's attention and MLP, as kohya trains them
INVERSION_WORD = "plim"  # claim 6: the reserved word textual inversion gives a meaning to
# claim 9: a run that reaches all three learned the style and kept the content, with and without the trigger
SAFE = {"style_rate": 0.6, "content": 0.6, "plain_content": 0.6}


PUBLISHED_DIR = (
    course.REPO_ROOT / "docs" / "claims"
)  # the benchmark's runs and tables, one JSON a claim


def published_name(claim: int | str) -> str:
    """The file a claim's benchmark writes in ``PUBLISHED_DIR``: claims 2 and 3 are one experiment."""
    label = "2-3" if str(claim) in ("2", "3", "2-3") else str(claim)
    if label not in ("1", "2-3", *map(str, range(4, 10))):
        raise ValueError(f"the article has claims 1 to 9, not {claim!r}.")
    return f"claim{label}.json"


def table_of(printed: str) -> str:
    """The table part of what ``benchmarks.claims`` printed: from its "claim N" heading on (no per-run lines)."""
    match = re.search(r"^claims? \d.*", printed, re.MULTILINE | re.DOTALL)
    lines = match.group(0).rstrip().splitlines() if match else []
    return "\n".join(
        line for line in lines if not re.match(r"  \w+ \{.*\} -> ", line)
    )  # a run's own line


def published(claim: int | str) -> dict:
    """The benchmark's report for ``claim`` (every run's figures, and its printed ``table``) in docs/claims/.

    Raises FileNotFoundError, saying which command measures it, when that claim has not been published.
    """
    path = PUBLISHED_DIR / published_name(claim)
    if not path.is_file():
        raise FileNotFoundError(
            f"claim {claim} has no published figures ({path.name} is not in docs/claims/): "
            f"python -m benchmarks.claims --claim {claim} --train-seeds 0 1 2 3 --publish"
        )
    return json.loads(path.read_text())


def published_table(claim: int | str) -> str:
    """The table ``python -m benchmarks.claims --claim N --publish`` printed, over its training seeds."""
    return published(claim)["table"]


def load(pipe=None):
    """``pipe``, or the tiny SD in float32 (a full fine-tune needs float32 weights)."""
    return pipe if pipe is not None else models.load_pipeline("tiny", dtype="float32")


@contextmanager
def restored(pipe):
    """Run a block that may add LoRA layers or change weights, then put the pipeline back exactly as it was."""
    parts = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    saved = {
        name: (
            {k: v.detach().clone() for k, v in part.state_dict().items()},
            {k: p.requires_grad for k, p in part.named_parameters()},
        )
        for name, part in parts.items()
    }
    try:
        yield pipe
    finally:
        for name, part in parts.items():
            inject.remove_lora(part)
            state, flags = saved[name]
            part.load_state_dict(state)
            for key, p in part.named_parameters():
                p.requires_grad_(flags[key])
            part.zero_grad(set_to_none=True)


def config(**overrides) -> train.TrainConfig:
    """The small preset (what lesson 06 trains), quiet; ``method="full"`` defaults to ``FULL_LR``."""
    if overrides.get("method") == "full":
        overrides.setdefault("lr", FULL_LR)
    return train.TrainConfig.for_mode("small", progress=False, **overrides)


def style_set(style: str = "outline", size: int | None = None) -> list[tuple[torch.Tensor, str]]:
    """The first ``size`` (default: all) pictures and captions of a committed style set, as training pairs."""
    folder = styles.CROSS_DIR if style == "cross" else styles.style_dir(style)
    dataset = imagefolder.ImageFolderDataset(folder, resolution=styles.OUTLINE_RESOLUTION)
    count = len(dataset) if size is None else size
    if not 1 <= count <= len(dataset):
        raise ValueError(
            f"the {style} set has {len(dataset)} pictures, not {size}: ask for 1 to {len(dataset)}."
        )
    return [dataset[i] for i in range(count)]


def pairs_set(pairs: Sequence[tuple[shapes.ShapeSpec, str]]) -> list[tuple[torch.Tensor, str]]:
    """Training pairs drawn from (spec, caption) pairs, e.g. ``styles.concept_examples()``."""
    return [
        (imagefolder.to_tensor(shapes.render(spec, styles.OUTLINE_RESOLUTION)), text)
        for spec, text in pairs
    ]


def draw(pipe, prompts: Sequence[str], seeds: Sequence[int] = EVAL_SEEDS) -> tuple[list, list[str]]:
    """Every prompt at every seed: the pictures and, for each, its prompt."""
    asked = [p for p in prompts for _ in seeds]
    return sample.generate(pipe, asked, list(seeds) * len(prompts)), asked


def judge(
    pipe, prompts: Sequence[str], seeds: Sequence[int] = EVAL_SEEDS, style: str = "outline"
) -> metrics.GridResult:
    """Draw every prompt at every seed and score the pictures (prompts that start "a <colour> <shape>")."""
    images, asked = draw(pipe, prompts, seeds)
    return metrics.score_pictures(images, asked, style=style)


def read_all(
    images,
    asked: Sequence[str],
    style: str | None = None,
    shape: str | None = None,
    every: bool = True,
) -> dict:
    """Rates over pictures: how often each has the colour its prompt names (2nd word), ``shape`` (default: the
    prompt's 3rd word) and ``style``, read with every detector (``shapes.ALL_SHAPES``, ``ALL_STYLES``) or, with
    ``every=False``, those of the shapes and styles the tiny SD was pretrained on."""
    known = {"shapes": shapes.ALL_SHAPES, "styles": shapes.ALL_STYLES} if every else {}
    found = [metrics.detect(image, **known) for image in images]
    words = [p.split() for p in asked]
    colour = [f["colour"] == w[1] for f, w in zip(found, words, strict=True)]
    shape_ok = [f["shape"] == (shape or w[2]) for f, w in zip(found, words, strict=True)]
    out = {
        "colour": float(np.mean(colour)),
        "shape": float(np.mean(shape_ok)),
        "both": float(np.mean([c and s for c, s in zip(colour, shape_ok, strict=True)])),
    }
    if style is not None:
        out["style"] = float(np.mean([f["style"] == style for f in found]))
    return out


def plain_prompts() -> list[str]:
    """Eight prompts of the base model's own, without a trigger: the held-out combinations and four trained ones."""
    return [
        styles.caption(c, s, trigger=False)
        for c, s in styles.OUTLINE_HELD_OUT + styles.OUTLINE_TRAIN[:4]
    ]


def kept(pipe, seeds: Sequence[int] = EVAL_SEEDS) -> dict:
    """Does the model still draw its own plain prompts right ("content"), and filled (``1 - hollow``)?"""
    found = judge(pipe, plain_prompts(), seeds)
    return {"plain_content": found.both_accuracy, "plain_outline": found.style_rate}


def base_model(pipe=None, seeds: Sequence[int] = EVAL_SEEDS) -> dict:
    """:func:`kept` of the untrained tiny SD: the reference for every "plain prompts right" figure."""
    return kept(load(pipe), seeds)


def lora_weights(model: nn.Module) -> list[torch.Tensor]:
    """Every ``lora_A`` and ``lora_B`` weight of ``model``, in module order."""
    return [
        p
        for _, layer in inject.lora_layers(model)
        for p in (layer.lora_A.weight, layer.lora_B.weight)
    ]


def lora_params(model: nn.Module) -> int:
    return sum(p.numel() for p in lora_weights(model))


def _targets(pipe, where: str | Sequence[str]):
    if where == "linear":
        return [n for n, m in pipe.unet.named_modules() if isinstance(m, nn.Linear)]
    return where


def fit(pipe, dataset, where: str | Sequence[str] = "attn2+ff", **overrides) -> dict:
    """Train ``where`` (a target for LoRA, "linear": every linear layer, or "full") on ``dataset``; seconds and size."""
    if where == "full":
        cfg = config(method="full", **overrides)
    else:
        cfg = config(target_modules=_targets(pipe, where), **overrides)
    start = time.perf_counter()
    result = train.train_lora(pipe, dataset, cfg)
    seconds = time.perf_counter() - start
    trained = (
        sum(p.numel() for p in pipe.unet.parameters())
        if where == "full"
        else lora_params(pipe.unet)
    )
    return {
        "train_seconds": seconds,
        "trainable_params": trained,
        "final_loss": float(np.mean(result.history[-20:])),
        "step_seconds": result.step_seconds,
    }


# 1 -------------------------------------------------------------------------------------------------------------


def concept_prompts(word: str = styles.CONCEPT_WORD) -> list[str]:
    return [f"a {c} {word}" for c in shapes.COLOURS]


def where_lora_sits(
    variant: str = "attn2",
    task: str = "style",
    seed: int = 0,
    steps: int = 300,
    pipe=None,
    seeds: Sequence[int] = EVAL_SEEDS,
) -> dict:
    """Claim 1, one run: train ``variant`` (a key of ``WHERE``) on ``task`` for ``steps``, then judge it.

    ``task="style"``: the outline set, judged on the held-out prompts (style rate, content).
    ``task="concept"``: "a red vex" for red triangles and so on (``styles.concept_examples``): how often
    "a <colour> vex" draws a triangle, and of its colour. Both: whether the plain prompts stay right and filled.
    """
    if variant not in WHERE:
        raise ValueError(f"no variant {variant!r}: use one of {', '.join(WHERE)}.")
    if task not in ("style", "concept"):
        raise ValueError(f"no task {task!r}: use 'style' or 'concept'.")
    pipe = load(pipe)
    with restored(pipe):
        dataset = style_set() if task == "style" else pairs_set(styles.concept_examples())
        result = {"variant": variant, "task": task, "seed": seed, "steps": steps}
        result |= {
            k: v
            for k, v in fit(pipe, dataset, WHERE[variant], seed=seed, steps=steps).items()
            if k in ("train_seconds", "trainable_params")
        }
        result |= kept(pipe, seeds)
        if task == "style":
            found = judge(pipe, styles.style_prompts(), seeds)
            result |= {"style_rate": found.style_rate, "content": found.both_accuracy}
        else:
            images, asked = draw(pipe, concept_prompts(), seeds)
            rates = read_all(
                images, asked, shape=styles.CONCEPT_SHAPE, every=False
            )  # a triangle: the base shapes
            result |= {"concept_shape": rates["shape"], "concept_colour": rates["colour"]}
    return result


# 2 and 3 -------------------------------------------------------------------------------------------------------


def optimizer_bytes(optimizer_state: dict) -> int:
    """Bytes of AdamW's moments in an optimizer ``state_dict()["state"]`` (the step counters left out)."""
    return sum(
        t.numel() * t.element_size()
        for s in optimizer_state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )


def size_and_speed(
    method: str = "lora", seed: int = 0, steps: int = 20, pipe=None, output_dir=None
) -> dict:
    """Claims 2 and 3 in small: train ``method`` ("lora": the small preset; "full") for ``steps`` and measure
    its trainable parameters, the file it saves, AdamW's state and the median step time."""
    import tempfile
    from pathlib import Path

    if method not in ("lora", "full"):
        raise ValueError(f"method is 'lora' or 'full', not {method!r}.")
    pipe = load(pipe)
    with restored(pipe), tempfile.TemporaryDirectory() as scratch:
        out = Path(output_dir or scratch)
        cfg = config(method=method, seed=seed, steps=steps, output_dir=str(out))
        result = train.train_lora(pipe, style_set(), cfg)
        return {
            "method": method,
            "seed": seed,
            "lr": cfg.lr,
            **saved_sizes(pipe, method, out),
            "step_seconds_median": float(np.median(result.step_seconds)),
        }


def saved_sizes(pipe, method: str, output_dir) -> dict:
    """What a finished run of ``method`` ("lora" or "full") left in ``output_dir``: its trainable parameters, the
    size of the file it saved (the LoRA, or the whole UNet) and of AdamW's state in its last checkpoint."""
    from pathlib import Path

    out = Path(output_dir)
    params = list(pipe.unet.parameters()) if method == "full" else lora_weights(pipe.unet)
    saved = out / (train.FULL_FILE if method == "full" else "lora.safetensors")
    state = torch.load(out / train.CHECKPOINT, weights_only=True)["optimizer"][
        "state"
    ]  # our own checkpoint
    return {
        "trainable_params": sum(p.numel() for p in params),
        "file_bytes": saved.stat().st_size,
        "optimizer_bytes": optimizer_bytes(state),
    }


# 4 -------------------------------------------------------------------------------------------------------------


def training_captions(size: int) -> list[str]:
    """The distinct captions of the first ``size`` outline pictures: what claim 4 draws again to look for copies."""
    return list(dict.fromkeys(text for _, text in styles.outline_examples()[:size]))


def memorisation(images, size: int) -> float:
    """Mean overlap (IoU of the drawn pixels) of each picture with the nearest of the first ``size`` training
    pictures of the outline set: 1.0 is a copy of one of them."""
    train_masks = [
        metrics.ink_mask(shapes.render(spec, styles.OUTLINE_RESOLUTION))
        for spec, _ in styles.outline_examples()[:size]
    ]
    best = []
    for image in images:
        mask = metrics.ink_mask(image)
        best.append(max(float((mask & t).sum() / max(1, (mask | t).sum())) for t in train_masks))
    return float(np.mean(best))


def small_data(
    method: str = "lora",
    size: int = 16,
    seed: int = 0,
    steps: int = 300,
    lr: float | None = None,
    r: int = 8,
    pipe=None,
    seeds: Sequence[int] = EVAL_SEEDS,
) -> dict:
    """Claim 4, one run: train on the first ``size`` outline pictures (LoRA of rank ``r`` with the small preset,
    or ``method="full"``) and measure what it learnt, forgot and memorised.

    * ``style_rate`` and ``content``: the held-out prompts with the trigger (generalising);
    * ``plain_content``: the plain prompts still drawn right (forgetting is ``1 - plain_content``);
    * ``memorised``: the training captions drawn at ``seeds``, and their overlap with the nearest training
      picture (:func:`memorisation`; the base model's own overlap is the reference).
    """
    if method not in ("lora", "full"):
        raise ValueError(f"method is 'lora' or 'full', not {method!r}.")
    pipe = load(pipe)
    with restored(pipe):
        overrides = {"seed": seed, "steps": steps} | ({"lr": lr} if lr else {})
        if method == "lora":
            overrides["r"] = r
        done = fit(
            pipe, style_set(size=size), "full" if method == "full" else "attn2+ff", **overrides
        )
        found = judge(pipe, styles.style_prompts(), seeds)
        images, _ = draw(pipe, training_captions(size), seeds)
        return {
            "method": method,
            "size": size,
            "seed": seed,
            "steps": steps,
            "r": r if method == "lora" else None,
            "lr": lr or config(method=method).lr,
            "trainable_params": done["trainable_params"],
            "style_rate": found.style_rate,
            "content": found.both_accuracy,
            **kept(pipe, seeds),
            "memorised": memorisation(images, size),
            "train_seconds": done["train_seconds"],
        }


def base_memorisation(size: int, pipe=None, seeds: Sequence[int] = EVAL_SEEDS) -> float:
    """:func:`memorisation` of the untrained model on the training captions of a ``size``-picture set."""
    pipe = load(pipe)
    return memorisation(draw(pipe, training_captions(size), seeds)[0], size)


# 5 -------------------------------------------------------------------------------------------------------------


def train_text_side(
    pipe,
    dataset,
    groups: list[dict],
    steps: int,
    seed: int = 0,
    batch_size: int = 8,
    grad_mask: dict | None = None,
) -> list[float]:
    """Train parameter ``groups`` (``{"params": [...], "lr": ...}``, as torch's optimizers take them: LoRA in the
    text encoder, a token embedding, UNet LoRA weights) with the text encoder in the loop: SD's noise-prediction
    loss (min-SNR 2, as the small preset), AdamW without weight decay, gradients clipped to norm 1.

    ``grad_mask`` maps a parameter to a 0/1 tensor of its shape: only its 1 entries train (one row of the
    token embedding: without weight decay, the other rows then stay exactly as they were). Returns the loss
    of every step.
    """
    params = [p for group in groups for p in group["params"]]
    gen = torch.Generator().manual_seed(seed)
    latents, _, rows = train.cache_dataset(pipe, dataset, styles.OUTLINE_RESOLUTION)
    captions = list(dict.fromkeys(text for _, text in dataset))
    ids = pipe.tokenizer(
        captions,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids  # (C, 77)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    for part in (pipe.unet, pipe.text_encoder):
        part.train()
    history = []
    try:
        for _ in range(steps):
            idx = torch.randint(len(latents), (batch_size,), generator=gen)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
            noise = torch.randn((batch_size, *latents.shape[1:]), generator=gen)
            context = pipe.text_encoder(ids[rows[idx]])[0]  # (B, 77, D), with the gradient
            loss = train.epsilon_loss(
                pipe.unet, scheduler, latents[idx], context, t, noise, gamma=2.0
            )
            loss.backward()
            for p, mask in (grad_mask or {}).items():
                p.grad *= mask
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            history.append(loss.item())
    finally:
        for part in (pipe.unet, pipe.text_encoder):
            part.eval()
    return history


def text_encoder_lora(
    seed: int = 0,
    steps: int = 300,
    r: int = 8,
    lr: float = 1e-3,
    pipe=None,
    seeds: Sequence[int] = EVAL_SEEDS,
) -> dict:
    """Claim 5 (a): the same ``inject_lora`` on CLIP's text encoder (attention and MLP, as kohya's text-encoder
    LoRA), the UNet untouched, to teach "a red vex" = a red triangle. Figures as claim 1's concept task."""
    pipe = load(pipe)
    with restored(pipe):
        pipe.unet.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject.inject_lora(pipe.text_encoder, r=r, target_modules=list(TEXT_TARGETS))
        params = lora_weights(pipe.text_encoder)
        start = time.perf_counter()
        history = train_text_side(
            pipe, pairs_set(styles.concept_examples()), [{"params": params, "lr": lr}], steps, seed
        )
        seconds = time.perf_counter() - start
        images, asked = draw(pipe, concept_prompts(), seeds)
        rates = read_all(
            images, asked, shape=styles.CONCEPT_SHAPE, every=False
        )  # as claim 1 reads it
        return {
            "where": "text encoder",
            "seed": seed,
            "steps": steps,
            "trainable_params": lora_params(pipe.text_encoder),
            "concept_shape": rates["shape"],
            "concept_colour": rates["colour"],
            **kept(pipe, seeds),
            "final_loss": float(np.mean(history[-20:])),
            "train_seconds": seconds,
        }


CORNERS = {
    "circle": "no",
    "square": "four",
    "triangle": "three",
}  # the shifted task's words for the shapes
FILLERS = ("look", "here", "is", "the", "picture", "shows", "see", "this")


class TextClassifier(nn.Module):
    """A small text classifier (not a diffusion model): mean of word embeddings, two hidden layers, a head."""

    def __init__(self, vocabulary: Sequence[str], classes: int, dim: int = 32, hidden: int = 64):
        super().__init__()
        self.index = {w: i for i, w in enumerate(vocabulary)}
        self.embed = nn.EmbeddingBag(len(vocabulary), dim, mode="mean")
        self.body = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, classes)

    def encode(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [[self.index[w] for w in s.split()] for s in sentences]
        flat = torch.tensor([i for row in ids for i in row])
        offsets = torch.tensor([0, *np.cumsum([len(row) for row in ids])[:-1].tolist()])
        return flat, offsets

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        return self.head(self.body(self.embed(*self.encode(sentences))))


def sentences(task: str, count: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """``count`` sentences naming a shape and their labels (indices into ``shapes.SHAPES``).

    ``task="names"`` says the shape's name ("look here a red circle"); ``task="corners"``, the shifted task,
    says how many corners it has ("the picture shows a red thing with three corners").
    """
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for _ in range(count):
        label = int(rng.integers(len(shapes.SHAPES)))
        colour = str(rng.choice(list(shapes.COLOURS)))
        shape = shapes.SHAPES[label]
        filler = " ".join(rng.choice(FILLERS, size=int(rng.integers(0, 4))))
        what = (
            f"a {colour} {shape}"
            if task == "names"
            else f"a {colour} thing with {CORNERS[shape]} corners"
        )
        out.append(f"{filler} {what}".strip())
        labels.append(label)
    return out, torch.tensor(labels)


def _fit_classifier(model: nn.Module, task: str, steps: int, lr: float, seed: int) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        text, labels = sentences(task, 32, seed * 100_003 + step)
        loss = nn.functional.cross_entropy(model(text), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, task: str, count: int = 600, seed: int = 999) -> float:
    text, labels = sentences(task, count, seed)
    return float((model(text).argmax(-1) == labels).float().mean())


def classifier_study(seed: int = 0, r: int = 2, steps: int = 150, lr: float = 1e-2) -> dict:
    """Claim 5 (b): a text classifier trained on the "names" task, then adapted to the shifted "corners" task
    three ways: LoRA of rank ``r`` on its linear layers (``inject.inject_lora``, the UNet's code), a full
    fine-tune, and the head alone. Accuracy on both tasks (held-out sentences) and the trained parameters."""
    words = sorted(
        {w for task in ("names", "corners") for s in sentences(task, 400, 0)[0] for w in s.split()}
        | set(FILLERS)
        | set(CORNERS.values())
        | set(shapes.SHAPES)
        | set(shapes.COLOURS)
    )
    torch.manual_seed(seed)
    base = TextClassifier(words, len(shapes.SHAPES))
    _fit_classifier(base, "names", steps, lr, seed)
    result = {
        "seed": seed,
        "r": r,
        "base": {
            "names": accuracy(base, "names"),
            "corners": accuracy(base, "corners"),
            "trainable_params": sum(p.numel() for p in base.parameters()),
        },
    }
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for how in ("lora", "full", "head only"):
        model = TextClassifier(words, len(shapes.SHAPES))
        model.load_state_dict(state)
        if how == "lora":
            torch.manual_seed(seed)
            inject.inject_lora(model, r=r, target_modules=["body.0", "body.2", "head"])
        elif how == "head only":
            model.requires_grad_(False)
            model.head.requires_grad_(True)
        _fit_classifier(model, "corners", steps, lr, seed + 1)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        result[how] = {
            "names": accuracy(model, "names"),
            "corners": accuracy(model, "corners"),
            "trainable_params": trained,
        }
    return result


# 6 -------------------------------------------------------------------------------------------------------------


def style_prompts(style: str, held_out: bool = True) -> list[str]:
    """The outline set's held-out prompts with ``style``'s trigger ("a blue circle in ohwx style")."""
    combos = styles.OUTLINE_HELD_OUT if held_out else styles.OUTLINE_TRAIN
    return [styles.style_caption(style, c, s) for c, s in combos]


@torch.no_grad()
def vae_ceiling(style: str, pipe=None) -> dict:
    """How much of ``style`` survives the tiny SD's VAE alone: its set's pictures encoded to latents and decoded
    again, then read with every detector. A LoRA trains the UNet, which only ever draws latents: what the VAE
    cannot decode, no LoRA (nor full fine-tune) can draw, so this is the ceiling of any style rate."""
    styles.style_dir(style)  # one of the style sets
    pipe = load(pipe)
    pairs = style_set(style)
    pixels = torch.stack([image for image, _ in pairs])  # (N, 3, 64, 64) in [-1, 1]
    latents = pipe.vae.encode(pixels.to(pipe.device, pipe.vae.dtype)).latent_dist.mode()
    decoded = pipe.vae.decode(latents).sample.clamp(-1, 1).float().cpu()  # (N, 3, 64, 64)
    pictures = [
        ((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8) for x in decoded
    ]
    captions = [text for _, text in pairs]
    rates = read_all(pictures, captions, style=style)
    return {
        "style": style,
        "pictures": len(pictures),
        "style_rate": rates["style"],
        "content": rates["both"],
    }


def combined_state(first: dict, second: dict, scales: tuple[float, float] = (1.0, 1.0)) -> dict:
    """One LoRA state (``inject.lora_state_dict`` keys) that adds ``scales[0]`` x the first LoRA's update and
    ``scales[1]`` x the second's: A stacked, B side by side and scaled, rank r1 + r2 (both with alpha = r)."""
    out = {}
    for key in first:
        if key.endswith("lora_A.weight"):
            out[key] = torch.cat([first[key], second[key]])  # (r1 + r2, in)
        else:
            out[key] = torch.cat(
                [scales[0] * first[key], scales[1] * second[key]], dim=1
            )  # (out, r1 + r2)
    return out


def style_rates(pipe, style_list: Sequence[str], seeds: Sequence[int] = EVAL_SEEDS) -> dict:
    """For each style, how often its held-out prompts come out in it (and with colour and shape right)."""
    out = {}
    for style in style_list:
        images, asked = draw(pipe, style_prompts(style), seeds)
        rates = read_all(images, asked, style=style)
        out[style] = {"style": rates["style"], "content": rates["both"]}
    return out


def two_loras(
    seed: int = 0,
    steps: int = 300,
    scales: tuple[float, float] = (1.0, 1.0),
    pipe=None,
    seeds: Sequence[int] = EVAL_SEEDS,
    pair: tuple[str, str] = ("outline", "striped"),
) -> dict:
    """Claim 6 (a): two style LoRAs trained apart, then used at once: applied together with their scales
    (one rank r1 + r2 LoRA, :func:`combined_state`), and merged into the UNet's weights. Each style's rate
    under its own trigger, alone and together, and the largest pixel difference of applied against merged."""
    pipe = load(pipe)
    states, result = (
        {},
        {
            "seed": seed,
            "steps": steps,
            "scales": list(scales),
            "vae_ceiling": {style: vae_ceiling(style, pipe)["style_rate"] for style in pair},
        },
    )
    with restored(pipe):
        for style in pair:
            with restored(pipe):
                fit(pipe, style_set(style), seed=seed, steps=steps)
                states[style] = {k: v.clone() for k, v in inject.lora_state_dict(pipe.unet).items()}
                result[f"{style} alone"] = style_rates(pipe, pair, seeds)
        r = config().r
        inject.inject_lora(pipe.unet, r=2 * r, alpha=2 * r, target_modules=config().target_modules)
        inject.load_lora_state_dict(
            pipe.unet, combined_state(states[pair[0]], states[pair[1]], scales)
        )
        result["together"] = style_rates(pipe, pair, seeds)
        result["together"] |= kept(pipe, seeds)
        applied, _ = draw(pipe, style_prompts(pair[0])[:2], seeds[:2])
        inject.merge_lora(
            pipe.unet
        )  # W0 + the sum of both updates, in the weights themselves: no LoRA path runs
        merged, _ = draw(pipe, style_prompts(pair[0])[:2], seeds[:2])
        result["merged_vs_applied_max_pixel"] = int(
            max(
                np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()
                for a, b in zip(applied, merged, strict=True)
            )
        )
    return result


def inversion_and_lora(
    method: str = "both",
    seed: int = 0,
    steps: int = 300,
    lr_embedding: float = 5e-3,
    pipe=None,
    seeds: Sequence[int] = EVAL_SEEDS,
) -> dict:
    """Claim 6 (b): teach "a red plim" = a red cross (a shape the tiny SD never saw) by textual inversion (the
    word's token embedding alone), a UNet LoRA (the small preset) or both trained together. How often
    "a <colour> plim" draws a cross, and of its colour."""
    if method not in ("inversion", "lora", "both"):
        raise ValueError(f"method is 'inversion', 'lora' or 'both', not {method!r}.")
    pipe = load(pipe)
    with restored(pipe):
        pipe.unet.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        groups, mask = [], None
        if method in ("lora", "both"):
            cfg = config(seed=seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                inject.inject_lora(pipe.unet, r=cfg.r, target_modules=cfg.target_modules)
            groups.append({"params": lora_weights(pipe.unet), "lr": cfg.lr})
        if method in ("inversion", "both"):
            table = pipe.text_encoder.get_input_embeddings().weight
            table.requires_grad_(True)
            row = pipe.tokenizer.convert_tokens_to_ids(INVERSION_WORD + "</w>")
            mask = torch.zeros_like(table)
            mask[row] = 1.0
            groups.append({"params": [table], "lr": lr_embedding})
        pairs = styles.concept_examples(
            INVERSION_WORD, "cross", styles.CROSS_SIZE, styles.CROSS_SEED
        )
        start = time.perf_counter()
        history = train_text_side(
            pipe,
            pairs_set(pairs),
            groups,
            steps,
            seed,
            grad_mask={table: mask} if mask is not None else None,
        )
        seconds = time.perf_counter() - start
        images, asked = draw(pipe, concept_prompts(INVERSION_WORD), seeds)
        rates = read_all(images, asked, shape="cross")
        trained = lora_params(pipe.unet) + (
            pipe.text_encoder.config.hidden_size if mask is not None else 0
        )  # one row
        return {
            "method": method,
            "seed": seed,
            "steps": steps,
            "trainable_params": trained,
            "cross": rates["shape"],
            "colour": rates["colour"],
            **kept(pipe, seeds),
            "final_loss": float(np.mean(history[-20:])),
            "train_seconds": seconds,
        }


# 7 -------------------------------------------------------------------------------------------------------------


def many_styles(
    count: int = 2,
    r: int = 8,
    seed: int = 0,
    steps_per_style: int = 300,
    pipe=None,
    seeds: Sequence[int] = EVAL_SEEDS,
) -> dict:
    """Claim 7, one run: one LoRA of rank ``r`` trained on the first ``count`` of ``STYLE_ORDER`` at once (each
    set under its own trigger) for ``steps_per_style`` x ``count`` steps; each style's rate on its held-out prompts."""
    if not 1 <= count <= len(STYLE_ORDER):
        raise ValueError(f"count is 1 to {len(STYLE_ORDER)} styles, not {count}.")
    chosen = STYLE_ORDER[:count]
    pipe = load(pipe)
    with restored(pipe):
        dataset = [pair for style in chosen for pair in style_set(style)]
        done = fit(pipe, dataset, r=r, seed=seed, steps=steps_per_style * count)
        rates = style_rates(pipe, chosen, seeds)
        return {
            "count": count,
            "r": r,
            "seed": seed,
            "steps": steps_per_style * count,
            "trainable_params": done["trainable_params"],
            "styles": rates,
            "mean_style": float(np.mean([v["style"] for v in rates.values()])),
            "mean_content": float(np.mean([v["content"] for v in rates.values()])),
            **kept(pipe, seeds),
            "train_seconds": done["train_seconds"],
        }


# 8 -------------------------------------------------------------------------------------------------------------


def update_ranks(
    before: dict[str, torch.Tensor], model: nn.Module, fraction: float = 0.9
) -> list[dict]:
    """For every 2-D weight (linear layers) of ``model``: the rank that keeps ``fraction`` of the energy of its
    update ``W - before[name]`` (``lowrank.rank_for_energy``), against the layer's largest possible rank and the
    rank a random (Gaussian) matrix of its shape needs (``noise_rank``: what an update with no structure needs)."""
    rows = []
    for name, weight in model.state_dict().items():
        if weight.dim() != 2 or not name.endswith(".weight"):
            continue
        delta = weight.float() - before[name].float()
        if not torch.any(delta):
            continue
        noise = torch.randn(delta.shape, generator=torch.Generator().manual_seed(0))
        rows.append(
            {
                "name": name,
                "shape": list(delta.shape),
                "max_rank": min(delta.shape),
                "rank": lowrank.rank_for_energy(delta, fraction),
                "noise_rank": lowrank.rank_for_energy(noise, fraction),
            }
        )  # an update with no structure at all
    return rows


def large_change(
    variant: str = "attn2",
    r: int = 8,
    seed: int = 0,
    steps: int = 300,
    pipe=None,
    seeds: Sequence[int] = EVAL_SEEDS,
) -> dict:
    """Claim 8, one run: teach the cross (``data/styles/cross``: "a red cross") with a LoRA of rank ``r`` on
    ``variant`` ("attn2", "attn2+ff", "every linear") or a full fine-tune ("full fine-tune"). How often
    "a <colour> cross" draws one; for the full fine-tune, also :func:`update_ranks` of its update."""
    if variant not in ("attn2", "attn2+ff", "every linear", "full fine-tune"):
        raise ValueError(
            f"no variant {variant!r} for claim 8: use 'attn2', 'attn2+ff', 'every linear' or 'full fine-tune'."
        )
    where = WHERE[variant]
    pipe = load(pipe)
    with restored(pipe):
        before = (
            {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
            if where == "full"
            else None
        )
        done = fit(
            pipe,
            style_set("cross"),
            where,
            seed=seed,
            steps=steps,
            **({} if where == "full" else {"r": r}),
        )
        images, asked = draw(pipe, concept_prompts("cross"), seeds)
        rates = read_all(images, asked, shape="cross")
        result = {
            "variant": variant,
            "r": None if where == "full" else r,
            "seed": seed,
            "steps": steps,
            "trainable_params": done["trainable_params"],
            "cross": rates["shape"],
            "colour": rates["colour"],
            **kept(pipe, seeds),
            "train_seconds": done["train_seconds"],
        }
        if before is not None:
            result["update_ranks"] = update_ranks(before, pipe.unet)
    return result


# 9 -------------------------------------------------------------------------------------------------------------


def outcome(run: dict) -> str:
    """Name a claim-9 run: "NaN", "content destroyed", "nothing learned", "style learned" or "partial"."""
    if run.get("diverged"):
        return "NaN"
    if run["content"] < 0.25 and run["plain_content"] < 0.5:
        return "content destroyed"
    if run["style_rate"] < 0.25:
        return "nothing learned"
    if all(run[key] >= floor for key, floor in SAFE.items()):
        return "style learned"
    return "partial"


def sensitivity(
    lr: float = 1e-3,
    r: int = 8,
    alpha: float | None = None,
    seed: int = 0,
    steps: int = 150,
    pipe=None,
    seeds: Sequence[int] = EVAL_SEEDS,
) -> dict:
    """Claim 9, one point of the map: the outline LoRA (the small preset) at ``lr``, ``r`` and ``alpha``
    (None: alpha = r), judged on the held-out prompts and the plain ones, and named by :func:`outcome`."""
    pipe = load(pipe)
    scaling = (r if alpha is None else alpha) / r
    result = {
        "lr": lr,
        "r": r,
        "alpha": r if alpha is None else alpha,
        "seed": seed,
        "steps": steps,
        "lr_x_scaling": lr * scaling,
        "diverged": False,
    }
    with restored(pipe):
        try:
            done = fit(pipe, style_set(), r=r, alpha=alpha, lr=lr, seed=seed, steps=steps)
            found = judge(pipe, styles.style_prompts(), seeds)
            result |= {
                "style_rate": found.style_rate,
                "content": found.both_accuracy,
                **kept(pipe, seeds),
                "final_loss": done["final_loss"],
            }
        except (RuntimeError, ValueError) as error:  # the loss or the pictures became NaN
            if "the loss became" not in str(error) and "NaN or infinite" not in str(error):
                raise
            result |= {
                "diverged": True,
                "style_rate": 0.0,
                "content": 0.0,
                "plain_content": 0.0,
                "plain_outline": 0.0,
                "final_loss": float("nan"),
            }
    result["outcome"] = outcome(result)
    return result
