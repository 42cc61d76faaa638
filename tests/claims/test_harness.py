"""lorakit.claims.harness: every experiment gives the pipeline back exactly as it was given."""

import torch

from lorakit import claims, inject


def test_restored_undoes_a_full_fine_tune_and_a_text_encoder_lora(claims_pipe, unchanged):
    pipe = claims_pipe
    flags = {k: p.requires_grad for k, p in pipe.unet.named_parameters()}
    with claims.restored(pipe):
        with torch.no_grad():
            next(pipe.unet.parameters()).add_(1.0)
        inject.inject_lora(pipe.text_encoder, r=2, target_modules=list(claims.TEXT_TARGETS))
        pipe.unet.requires_grad_(False)
    unchanged.check()
    assert {k: p.requires_grad for k, p in pipe.unet.named_parameters()} == flags
