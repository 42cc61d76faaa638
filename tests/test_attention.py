"""lorakit.attention against diffusers' ``Attention``, and capturing maps on the tiny SD's UNet."""

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from lorakit import attention, config, imagefolder, models, sample

TOL = 1e-5


@pytest.fixture(scope="module")
def prompt_embeds(shared_pipe):
    """Real text embeddings (2, 77, 64): the empty prompt and a caption, as a CFG batch holds
    them."""
    ids = shared_pipe.tokenizer(
        ["", "a red circle"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return shared_pipe.text_encoder(ids)[0]


def random_attention(heads, dim_head=8, query_dim=32, context_dim=24, seed=0):
    """A diffusers cross-attention with random weights, biases included (zeros would hide a missing
    bias)."""
    torch.manual_seed(seed)
    attn = Attention(
        query_dim=query_dim,
        cross_attention_dim=context_dim,
        heads=heads,
        dim_head=dim_head,
        out_bias=True,
    ).eval()
    with torch.no_grad():
        attn.to_out[0].bias.normal_()
    return attn


# --- from scratch = diffusers' Attention -----------------------------------------------------


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
@pytest.mark.parametrize("processor", [AttnProcessor, AttnProcessor2_0])
def test_cross_attention_matches_diffusers_attention(heads, processor):
    attn = random_attention(heads)
    attn.set_processor(processor())
    x, context = torch.randn(3, 20, 32), torch.randn(3, 7, 24)  # (B, N, C), (B, T, D)
    with torch.no_grad():
        want = attn(x, encoder_hidden_states=context)
        scratch = attention.cross_attention(
            x, context, attn.to_q, attn.to_k, attn.to_v, attn.to_out[0], heads
        )
        from_module = attention.attention_from_module(attn, x, context)
    assert want.shape == scratch.shape == (3, 20, 32)
    assert (scratch - want).abs().max() <= TOL
    assert (from_module - want).abs().max() <= TOL


def test_wrong_head_count_gives_a_different_answer():
    """The check above can fail: splitting into the wrong number of heads changes the output."""
    attn = random_attention(heads=4)
    x, context = torch.randn(2, 10, 32), torch.randn(2, 7, 24)
    with torch.no_grad():
        want = attn(x, encoder_hidden_states=context)
        wrong = attention.cross_attention(
            x, context, attn.to_q, attn.to_k, attn.to_v, attn.to_out[0], heads=2
        )
    assert (wrong - want).abs().max() > 1e-3


def test_self_attention_when_context_is_none():
    attn = Attention(query_dim=32, heads=4, dim_head=8).eval()
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        assert (attention.attention_from_module(attn, x) - attn(x)).abs().max() <= TOL


def test_matches_every_attn2_of_the_tiny_sd(shared_pipe, prompt_embeds):
    modules = attention.attn2_modules(shared_pipe.unet)
    torch.manual_seed(0)
    for name, attn in modules.items():
        x = torch.randn(2, 16, attn.to_q.in_features)  # (B, N, C) at this block's width
        with torch.no_grad():
            want = attn(x, encoder_hidden_states=prompt_embeds)
            got = attention.attention_from_module(attn, x, prompt_embeds)
        assert (got - want).abs().max() <= TOL, name


def test_attention_probs_are_diffusers_softmax_and_sum_to_one(shared_pipe, prompt_embeds):
    attn = attention.attn2_modules(shared_pipe.unet)[
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    ]
    x = torch.randn(2, 64, attn.to_q.in_features)
    with torch.no_grad():
        probs = attention.attention_probs(attn, x, prompt_embeds)
        q, k = (
            attn.head_to_batch_dim(attn.to_q(x)),
            attn.head_to_batch_dim(attn.to_k(prompt_embeds)),
        )
        want = attn.get_attention_scores(q, k).reshape(
            2, attn.heads, 64, 77
        )  # (B * heads, N, T) -> (B, heads, N, T)
    assert probs.shape == (2, attn.heads, 64, 77)
    assert (probs - want).abs().max() <= 1e-6
    assert torch.allclose(probs.sum(dim=-1), torch.ones(2, attn.heads, 64), atol=1e-6)


def test_unsupported_attention_features_raise_clear_errors():
    attn = Attention(query_dim=32, heads=4, dim_head=8, residual_connection=True)
    with pytest.raises(NotImplementedError, match="residual_connection"):
        attention.attention_from_module(attn, torch.randn(1, 4, 32))
    with pytest.raises(ValueError, match="flatten"):
        attention.attention_from_module(
            random_attention(4), torch.randn(1, 32, 2, 2), torch.randn(1, 7, 24)
        )
    with pytest.raises(ValueError, match="heads"):
        attention.split_heads(torch.randn(1, 4, 30), heads=4)


# --- where attn2 sits -------------------------------------------------------------------------


def test_tiny_sd_has_sd15s_sixteen_attn2_paths(shared_pipe):
    tiny = attention.attn2_modules(shared_pipe.unet)
    sd15 = attention.attn2_modules(models.build_sd15()["unet"])
    assert len(tiny) == 16
    assert list(tiny) == list(sd15)
    assert {m.to_k.in_features for m in tiny.values()} == {
        shared_pipe.text_encoder.config.hidden_size
    }
    assert {m.to_k.in_features for m in sd15.values()} == {
        models.SD15_UNET_CONFIG["cross_attention_dim"]
    }


# --- capturing maps ---------------------------------------------------------------------------


def test_capture_leaves_the_unet_output_unchanged_and_restores_processors(
    shared_pipe, prompt_embeds
):
    unet = shared_pipe.unet
    before = unet.attn_processors
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        want = unet(latents, 500, prompt_embeds).sample
        with attention.capture_cross_attention(unet) as records:
            inside = {k: type(p) for k, p in unet.attn_processors.items()}
            got = unet(latents, 500, prompt_embeds).sample
        after = unet(latents, 500, prompt_embeds).sample
    assert (got - want).abs().max() <= TOL
    assert torch.equal(after, want)
    assert sum(t is attention.CrossAttentionRecorder for t in inside.values()) == 16
    assert all(t is not attention.CrossAttentionRecorder for k, t in inside.items() if "attn1" in k)
    assert unet.attn_processors.keys() == before.keys()
    assert all(unet.attn_processors[k] is before[k] for k in before)
    assert set(records) == set(attention.attn2_modules(unet))
    assert (
        list(records)[6] == "mid_block.attentions.0.transformer_blocks.0.attn2"
    )  # recorded in forward order
    sides = set()
    for name, steps in records.items():
        assert len(steps) == 1, name  # one UNet call
        ((b, n, t),) = {tuple(m.shape) for m in steps}
        assert (b, t) == (2, 77)
        sides.add(n)
        assert torch.allclose(steps[0].sum(dim=-1), torch.ones(b, n), atol=1e-5)
    assert sides == {256, 64, 16, 4}  # 16x16, 8x8, 4x4 and the mid block's 2x2


def test_capture_restores_processors_after_an_error(shared_pipe):
    before = shared_pipe.unet.attn_processors
    with (
        pytest.raises(RuntimeError, match="boom"),
        attention.capture_cross_attention(shared_pipe.unet),
    ):
        raise RuntimeError("boom")
    assert all(shared_pipe.unet.attn_processors[k] is before[k] for k in before)
    with (
        pytest.raises(TypeError, match="pipe.unet"),
        attention.capture_cross_attention(shared_pipe),
    ):
        pass


def test_keep_heads_records_every_head(shared_pipe, prompt_embeds):
    with (
        torch.no_grad(),
        attention.capture_cross_attention(shared_pipe.unet, keep_heads=True) as records,
    ):
        shared_pipe.unet(torch.randn(2, 4, 16, 16), 10, prompt_embeds)
    maps = records["mid_block.attentions.0.transformer_blocks.0.attn2"][0]
    assert maps.shape == (
        2,
        shared_pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn2.heads,
        4,
        77,
    )


def synthetic_records():
    """Two layers, two steps, a CFG batch of 2: the conditional half attends to token 2 at one
    spot."""
    records = {}
    for name, side in [("a.attn2", 4), ("b.attn2", 2)]:
        maps = torch.full((2, side * side, 77), 1 / 77)  # (B, N, T): uniform
        cond = torch.zeros(side * side, 77)
        cond[:, 5] = 1.0
        cond[0, 5], cond[0, 2] = 0.0, 1.0  # the top-left position reads token 2
        maps[1] = cond
        records[name] = [maps, maps]
    records["c.attn2"] = [torch.full((2, 6, 77), 1 / 77)] * 2  # a 2x3 grid: not square, skipped
    return records


def test_token_maps_takes_the_conditional_half_and_averages_layers():
    records = synthetic_records()
    maps = attention.token_maps(records, 2, resolution=8)
    assert maps.shape == (1, 8, 8)
    assert maps[0, 0, 0] > 0.5 and maps[0, -1, -1] == 0  # top-left lit, bottom-right dark
    assert maps[0].argmax() == 0
    both_halves = attention.token_maps(records, 2, resolution=8, cfg=False)
    assert both_halves.shape == (2, 8, 8)
    assert torch.allclose(both_halves[0], torch.full((8, 8), 1 / 77))
    assert torch.allclose(both_halves[1], maps[0])
    summed = attention.token_maps(records, [2, 5], resolution=8)
    assert torch.allclose(
        summed, torch.ones(1, 8, 8), atol=1e-6
    )  # the two tokens hold all the mass
    with pytest.raises(ValueError, match="square"):
        attention.token_maps({"c.attn2": records["c.attn2"]}, 2)
    with pytest.raises(ValueError, match="even batch"):
        attention.token_maps({"a.attn2": [records["a.attn2"][0][:1]]}, 2)


def test_token_indices_finds_words_after_the_start_token(shared_pipe):
    assert attention.token_indices(shared_pipe.tokenizer, "a red circle", "circle") == [3]
    assert attention.token_indices(shared_pipe.tokenizer, "a red circle", "red") == [2]
    with pytest.raises(ValueError, match="not in the prompt"):
        attention.token_indices(shared_pipe.tokenizer, "a red circle", "square")


def test_capture_on_a_real_run_changes_no_pixel_and_seeds_repeat(shared_pipe):
    def two_pictures():
        prompts = ["a red circle", "a blue square"]
        return sample.generate(shared_pipe, prompts, seeds=[3, 4], num_inference_steps=4)

    first = two_pictures()
    with attention.capture_cross_attention(shared_pipe.unet) as records:
        captured = two_pictures()
    again = two_pictures()
    other_seed = sample.generate(shared_pipe, "a red circle", seeds=5, num_inference_steps=4)
    assert [i.tobytes() for i in first] == [i.tobytes() for i in again]
    assert first[0].tobytes() != other_seed[0].tobytes()
    for a, b in zip(first, captured, strict=True):
        assert (
            imagefolder.to_tensor(a) - imagefolder.to_tensor(b)
        ).abs().max() <= 2 / 127.5  # at most one 8-bit level
    steps = len(next(iter(records.values())))
    assert steps == len(shared_pipe.scheduler.timesteps)  # one record per denoising step
    assert attention.token_maps(records, 3).shape == (2, 64, 64)


# --- plain diffusers ---------------------------------------------------------------------------


def test_plain_diffusers_loads_the_tiny_sd_and_capture_works_on_it():
    plain = StableDiffusionPipeline.from_pretrained(str(config.TINY_SD_DIR), local_files_only=True)
    plain.set_progress_bar_config(disable=True)
    with attention.capture_cross_attention(plain.unet) as records:
        image = plain(
            "a green triangle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)
        ).images[0]
    assert image.size == (64, 64)
    assert len(records) == 16
    assert attention.token_maps(records, 3).shape == (1, 64, 64)


def test_the_committed_tiny_sds_words_look_at_their_shape(shared_pipe):
    """Lesson 04's "circle lights up the shape": the colour and shape words' maps correlate with the
    drawn shape."""
    import numpy as np

    from lorakit import metrics

    prompts = ["a red circle", "a blue square", "a green triangle"]
    with attention.capture_cross_attention(shared_pipe.unet) as records:
        images = sample.generate(shared_pipe, prompts, seeds=[0, 1, 2], num_inference_steps=10)
    for position in (2, 3):  # the colour word, the shape word (0 is the start token)
        maps = attention.token_maps(records, position).numpy()  # (3, 64, 64)
        for m, image in zip(maps, images, strict=True):
            mask = metrics.ink_mask(image)
            assert np.corrcoef(m.ravel(), mask.ravel())[0, 1] > 0.5


def test_recording_with_keep_graph_lets_a_loss_on_the_maps_train_the_unet(pipe, prompt_embeds):
    unet = pipe.unet
    with attention.capture_cross_attention(unet, keep_graph=True) as records:
        unet(torch.randn(2, 4, 16, 16), 500, encoder_hidden_states=prompt_embeds)
    maps = records["mid_block.attentions.0.transformer_blocks.0.attn2"][0]  # (2, 4, 77)
    assert maps.requires_grad
    maps[..., 3].sum().backward()
    to_k = unet.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn2.to_k")
    assert to_k.weight.grad is not None and to_k.weight.grad.abs().sum() > 0
    unet.zero_grad(set_to_none=True)
