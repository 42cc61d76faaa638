"""lorakit.claims.many_kinds (claim 5): the same inject_lora in CLIP's text encoder, and on a toy
text classifier."""

import torch

from lorakit import claims
from lorakit.claims import text_side


def test_claim_5_the_text_encoder_lora_trains_the_text_encoder_alone(
    claims_pipe, unchanged, monkeypatch
):
    trained = {}
    real = text_side.train_text_side

    def spy(p, dataset, groups, *args, **kwargs):
        history = real(p, dataset, groups, *args, **kwargs)
        trained["text_encoder"] = {k: v.clone() for k, v in p.text_encoder.state_dict().items()}
        trained["unet"] = {k: v.clone() for k, v in p.unet.state_dict().items()}
        return history

    monkeypatch.setattr(text_side, "train_text_side", spy)
    run = claims.text_encoder_lora(steps=2, pipe=claims_pipe, seeds=(0,))
    assert run["settings"]["steps"] == 2 and run["settings"]["weight_decay"] == 0.0
    unchanged.check()
    assert all(torch.equal(v, unchanged.weights["unet"][k]) for k, v in trained["unet"].items()), (
        "the UNet must not change"
    )
    moved = [k for k, v in trained["text_encoder"].items() if ".lora_B." in k and torch.any(v != 0)]
    assert moved and all(k.split(".lora_")[0].endswith(claims.TEXT_TARGETS) for k in moved)
    assert run["trainable_params"] == sum(
        v.numel() for k, v in trained["text_encoder"].items() if ".lora_" in k
    )


def test_claim_5_the_classifier_is_adapted_by_the_same_inject_lora():
    study = claims.classifier_study(seed=0, r=2)
    assert study["base"]["names"] > 0.95  # it learnt its first task
    linears = [(32, 64), (64, 64), (64, 3)]
    assert study["lora"]["trainable_params"] == sum(2 * (i + o) for i, o in linears)
    assert study["head only"]["trainable_params"] == 64 * 3 + 3
    assert study["full"]["trainable_params"] == study["base"]["trainable_params"]
    for how in ("lora", "full"):
        assert study[how]["corners"] > study["base"]["corners"], how  # the shifted task is learnt
