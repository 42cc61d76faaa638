"""The data set, encoded once before the loop: latents, caption embeddings, token ids.

Introduced in notebooks/06_train_style_lora.ipynb.

:func:`cache_dataset` runs the VAE on every picture and the text encoder on every distinct caption
ONCE, so that neither runs in the loop. Augmentation is one thing, ``flip``: every picture is also
cached mirrored (kohya's ``flip_aug``). Caption dropout (kohya's ``caption_dropout_rate``,
diffusers' ``--proportion_empty_prompts``) needs the empty prompt's embedding, cached last: the
LoRA then also learns the unconditional prediction, the other branch of classifier-free guidance,
which it would otherwise change untrained. When the text encoder trains a LoRA too, the captions'
token ids (:func:`caption_ids`) are kept instead, and embedded in every step.

Left out: other augmentations (crops, colour), prior preservation (DreamBooth's class images).
"""

from __future__ import annotations

import torch

from lorakit import sample

__all__ = ["cache_dataset", "caption_ids", "distinct_captions", "token_ids"]


def _checked_images(dataset, resolution: int) -> tuple[tuple, tuple]:
    """``(images, captions)`` of ``dataset``, refused if it is empty or of another resolution."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: add some images (and captions) before training.")
    images, captions = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    for i, image in enumerate(images):
        if tuple(image.shape) != (3, resolution, resolution):
            raise ValueError(
                f"dataset image {i} has shape {tuple(image.shape)} but training expects (3, "
                f"{resolution}, {resolution}): build the dataset with resolution={resolution} "
                "or set TrainConfig.resolution."
            )
    return images, captions


@torch.no_grad()
def cache_dataset(
    pipe,
    dataset,
    resolution: int,
    batch_size: int = 16,
    flip: bool = False,
    empty_prompt: bool = False,
):
    """Latents (N, 4, h, w) of every image, embeddings (C, 77, D) of every distinct caption, each
    image's caption row (N,).

    ``h = w = resolution / pipe.vae_scale_factor`` (16 for the tiny SD, 64 for SD 1.5). With
    ``flip``, the mirror image of every picture follows them (2N latents, the same captions):
    drawing rows uniformly then flips each training picture with probability 1/2. With
    ``empty_prompt``, the last embedding row is the empty prompt's (for caption dropout).
    """
    device, vae = pipe.device, pipe.vae
    images, captions = _checked_images(dataset, resolution)
    pixels = torch.stack(images)  # (N, 3, R, R) in [-1, 1]
    if flip:
        pixels = torch.cat([pixels, pixels.flip(-1)])  # (2N, 3, R, R)
        captions = captions + captions
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
    """The captions once each, in order; the empty prompt last with ``empty_prompt`` (for caption
    dropout)."""
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


def caption_ids(pipe, dataset, empty_prompt: bool) -> torch.Tensor:
    """The token ids (C, 77) of the data set's distinct captions, in :func:`cache_dataset`'s
    embedding rows, on the pipeline's device: what the text encoder's LoRA trains on."""
    captions = [
        dataset.caption(i) if hasattr(dataset, "caption") else dataset[i][1]
        for i in range(len(dataset))
    ]
    return token_ids(pipe, distinct_captions(captions, empty_prompt)).to(pipe.device)
