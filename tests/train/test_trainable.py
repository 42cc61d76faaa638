"""lorakit.train.trainable with method="full": every UNet weight trains and is saved, with the same
loop; a UNet with LoRA layers or in half precision is refused."""

import pytest
import safetensors.torch
import torch

from lorakit import inject, train


def test_full_fine_tuning_changes_every_unet_weight_and_saves_them(pipe, dataset, quick, tmp_path):
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    vae = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    result = train.train_lora(
        pipe, dataset, quick(method="full", steps=2, lr=1e-4, output_dir=str(tmp_path))
    )
    after = pipe.unet.state_dict()
    assert (
        result.lora_names == []
        and not list(inject.lora_layers(pipe.unet))
        and after.keys() == before.keys()
    )
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == [], f"{len(unchanged)} UNet tensors did not change, e.g. {unchanged[:3]}"
    # the VAE stays frozen
    assert all(torch.equal(v, pipe.vae.state_dict()[k]) for k, v in vae.items())
    saved = safetensors.torch.load_file(tmp_path / train.FULL_FILE)
    assert saved.keys() == after.keys() and all(torch.equal(saved[k], after[k]) for k in saved)
    assert not (tmp_path / "lora.safetensors").exists()


def test_full_fine_tuning_refuses_a_unet_with_lora_layers_or_in_half_precision(
    pipe, dataset, quick
):
    inject.inject_lora(pipe.unet, r=2)
    with pytest.raises(ValueError, match="has LoRA layers: call inject.remove_lora"):
        train.train_lora(pipe, dataset, quick(method="full", steps=1))
    inject.remove_lora(pipe.unet)
    pipe.unet.to(torch.bfloat16)
    with pytest.raises(ValueError, match="needs the UNet's weights in float32"):
        train.train_lora(pipe, dataset, quick(method="full", steps=1))
    with pytest.raises(ValueError, match="method must be one of lora, full"):
        train.train_lora(pipe, dataset, quick(method="dora", steps=1))
