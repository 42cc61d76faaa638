"""lorakit.claims.costs (claims 2 and 3): the file and AdamW's state, counted."""

from lorakit import claims, inject


def test_claims_2_and_3_count_the_file_and_adams_two_moments(claims_pipe, tmp_path):
    run = claims.size_and_speed("lora", steps=1, pipe=claims_pipe, output_dir=tmp_path)
    # exp_avg and exp_avg_sq, float32
    assert run["optimizer_bytes"] == 2 * 4 * run["trainable_params"]
    assert run["file_bytes"] == (tmp_path / "lora.safetensors").stat().st_size
    assert run["trainable_params"] == inject.lora_parameter_count(claims_pipe.unet, 8, "attn2+ff")
