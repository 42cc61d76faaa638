"""lorakit.claims.judging: the most of each style that any LoRA can draw, through the VAE."""

import pytest

from lorakit import claims


def test_the_vae_keeps_every_style_set(claims_pipe):
    """The ceiling of claims 6 and 7: the UNet draws latents, and the VAE decodes what it can.
    Every style set survives it (the striped and double styles are drawn large, with strokes a
    latent wide), so a LoRA's style rate on them measures the LoRA, not the VAE. The thin strokes
    lose some colour: content is the lower ceiling."""
    outline, striped, double = (
        claims.vae_ceiling(s, claims_pipe) for s in ("outline", "striped", "double")
    )
    assert outline["style_rate"] == 1.0 and outline["pictures"] == 16
    assert striped["style_rate"] >= 0.9 and double["style_rate"] >= 0.9
    assert min(striped["content"], double["content"]) >= 0.75
    with pytest.raises(ValueError, match="no style set"):
        claims.vae_ceiling("cross", claims_pipe)
