"""A second training loop, with the text encoder in it: for claims 5 and 6.

Introduced in notebooks/09_claims_advantages.ipynb.

:func:`train_text_side` trains any parameter groups (a LoRA in CLIP's text encoder, one row of the
token embedding table, UNet LoRA weights) on SD's own loss, the text encoder running in every step.
It takes ``lorakit.train``'s pieces (the cached latents, the captions' token ids, the noise
schedule, the loss) but not its loop: ``train_lora`` trains one set of parameters at one learning
rate with weight decay, on text embeddings cached before the loop. Here the groups have their own
learning rates, nothing decays (the table's other rows must stay exactly as they were) and a mask
keeps the gradient of one row; its random draws are those the published figures were made with.

Left out: what ``train_lora`` adds (schedules, accumulation, checkpoints, several processes).
"""

from __future__ import annotations

import torch

from lorakit import styles, train

__all__ = ["train_text_side"]


def train_text_side(
    pipe,
    dataset,
    groups: list[dict],
    steps: int,
    seed: int = 0,
    batch_size: int = 8,
    grad_mask: dict | None = None,
) -> list[float]:
    """Train parameter ``groups`` (``{"params": [...], "lr": ...}``, as torch's optimizers take
    them) with the text encoder in the loop: SD's noise-prediction loss (min-SNR 2, as the small
    preset), AdamW without weight decay, gradients clipped to norm 1.

    ``grad_mask`` maps a parameter to a 0/1 tensor of its shape: only its 1 entries train (one row
    of the token embedding: without weight decay, the other rows then stay exactly as they were).
    Returns the loss of every step.
    """
    params = [p for group in groups for p in group["params"]]
    gen = torch.Generator().manual_seed(seed)
    latents, _, rows = train.cache_dataset(pipe, dataset, styles.OUTLINE_RESOLUTION)
    ids = train.caption_ids(pipe, dataset, empty_prompt=False)  # (C, 77), in the rows' order
    scheduler = train.noise_scheduler(pipe)
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
