"""lorakit.train.caching: every picture encoded once (and mirrored with flip), the empty prompt
for caption dropout, and neither the VAE nor the text encoder in the loop."""

import copy

import pytest
import torch

from lorakit import inject, train


def test_flip_caches_every_picture_mirrored_too(pipe, dataset, quick):
    plain_latents, plain_embeddings, plain_rows = train.cache_dataset(pipe, dataset, 64)
    latents, embeddings, rows = train.cache_dataset(pipe, dataset, 64, flip=True)
    n = len(dataset)
    assert latents.shape == (2 * n, *plain_latents.shape[1:])
    # (encoded in other batches)
    torch.testing.assert_close(latents[:n], plain_latents, rtol=1e-4, atol=1e-4)
    assert torch.equal(embeddings, plain_embeddings) and torch.equal(rows, plain_rows.repeat(2))
    pixels = torch.stack([dataset[i][0].flip(-1) for i in range(n)])  # (N, 3, 64, 64) mirrored
    mirrored = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    torch.testing.assert_close(latents[n:], mirrored, rtol=1e-4, atol=1e-4)
    # the shapes sit elsewhere: not the same
    assert not torch.allclose(latents[n:], plain_latents, atol=1e-2)

    seen = []
    real = train.caching.cache_dataset

    def spy(*args, **kwargs):
        seen.append(kwargs.get("flip"))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.caching, "cache_dataset", spy)
        train.train_lora(copy.deepcopy(pipe), dataset, quick(steps=1))
        train.train_lora(copy.deepcopy(pipe), dataset, quick(steps=1, flip=True))
    assert seen == [False, True]  # flip is off unless turned on


def test_caption_dropout_shows_some_pictures_with_the_empty_prompt(
    pipe, dataset, quick, monkeypatch
):
    _, embeddings, _ = train.cache_dataset(pipe, dataset, 64, empty_prompt=True)
    ids = pipe.tokenizer(
        [""], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    # the last row: the empty prompt
    torch.testing.assert_close(embeddings[-1], pipe.text_encoder(ids)[0][0])

    def empty_fraction(dropout: float) -> float:
        seen, real = [], train.objective.epsilon_loss

        def spy(unet, scheduler, latents, context, *args):
            if unet.training:  # training steps, not the validation loss
                empty = torch.isclose(context, embeddings[-1], atol=1e-5).flatten(1).all(1)
                seen.extend(empty.tolist())
            return real(unet, scheduler, latents, context, *args)

        monkeypatch.setattr(train.objective, "epsilon_loss", spy)
        train.train_lora(
            copy.deepcopy(pipe), dataset, quick(steps=10, batch_size=8, caption_dropout=dropout)
        )
        return sum(seen) / len(seen)

    assert empty_fraction(0.0) == 0.0
    assert 0.3 < empty_fraction(0.5) < 0.7  # 80 pictures drawn at 1/2


def test_vae_and_text_encoder_never_run_in_the_loop(pipe, dataset, quick, monkeypatch):
    real_cache = train.caching.cache_dataset
    text_rows = []
    real_text_forward = pipe.text_encoder.forward

    def counting_text_forward(input_ids, *args, **kwargs):
        text_rows.append(len(input_ids))
        return real_text_forward(input_ids, *args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("the VAE or the text encoder ran inside the training loop")

    def cache_then_forbid(p, *args, **kwargs):
        out = real_cache(p, *args, **kwargs)
        p.vae.encode = p.vae.decode = p.vae.forward = p.text_encoder.forward = forbidden
        return out

    pipe.text_encoder.forward = counting_text_forward
    monkeypatch.setattr(train.caching, "cache_dataset", cache_then_forbid)
    result = train.train_lora(pipe, dataset, quick(steps=3, validation_every=3, num_validation=2))
    assert len(result.history) == 3
    distinct = {dataset.caption(i) for i in range(len(dataset))}
    assert sum(text_rows) == len(distinct)  # every distinct caption embedded once


def test_a_resolution_the_model_does_not_draw_says_what_to_set(pipe, dataset, quick):
    with pytest.raises(
        ValueError,
        match=r"training expects \(3, 512, 512\): build the dataset with resolution=512 "
        r"or set TrainConfig.resolution",
    ):
        train.train_lora(pipe, dataset, quick(resolution=512))
    assert next(inject.lora_layers(pipe.unet), None) is None, "nothing was injected"
