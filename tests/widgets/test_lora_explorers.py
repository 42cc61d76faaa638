"""Lesson 07's LoRA explorers driven headlessly: what they show is what lorakit draws and scores
with the same LoRA, each setting is computed once, errors surface, and the pipeline is left bare.
Then ``styles.train_or_load``, which trains the explorers' LoRAs once per setting."""

import shutil

import ipywidgets
import matplotlib
import numpy as np
import pytest
import torch

from lorakit import formats, inject, lora, metrics, sample, styles, train, widgets

matplotlib.use("Agg")

STEPS = {"num_inference_steps": 2}  # enough to exercise the pipeline; the tests compare pictures
COMBOS = (("red", "square"), ("blue", "circle"))


@pytest.fixture
def random_lora(pipe, randomize_lora):
    """``random_lora(r, alpha=None, seed=0)``: a LoRA of ``pipe``'s UNet whose B is not zero (so it
    changes pictures), as formats.LoRAWeights; pipe.unet is left bare."""

    def make(r, alpha=None, seed=0):
        torch.manual_seed(seed)  # A's initialisation too
        inject.inject_lora(pipe.unet, r=r, alpha=alpha)
        randomize_lora(pipe.unet, seed=seed)
        weights = formats.from_model(pipe.unet)
        inject.remove_lora(pipe.unet)
        return weights

    return make


def reference_images(pipe, weights, prompts, seeds, scale=1.0):
    """What lorakit draws with ``weights`` applied at ``scale`` (formats.apply_lora), the UNet
    restored after."""
    formats.apply_lora(pipe.unet, weights, scale)
    try:
        return sample.generate(pipe, prompts, seeds, **STEPS)
    finally:
        inject.remove_lora(pipe.unet)


def count_generations(monkeypatch):
    calls = []
    real = sample.generate
    monkeypatch.setattr(sample, "generate", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
    return calls


def shown_pixels(ax):
    return np.asarray(ax.images[0].get_array())


def test_scale_explorer_shows_what_lorakit_draws(pipe, random_lora):
    weights = random_lora(r=4, alpha=8)
    ui = widgets.lora_scale_explorer(
        pipe, weights, prompt="a blue circle in sks style", seed=3, scale=1.0, **STEPS
    )
    assert isinstance(ui, ipywidgets.VBox) and ui.output in ui.children
    assert (ui.slider.min, ui.slider.max, ui.slider.continuous_update) == (0.0, 1.5, False)
    assert ui.prompt_box.continuous_update is False
    updates = ui.updates
    ui.slider.value = 0.5
    assert ui.updates == updates + 1
    assert (ui.shown.scale, ui.shown.scaling, ui.shown.multiplier) == (0.5, 2.0, 1.0)
    assert "= <b>1</b>" in ui.summary.value
    [want] = reference_images(pipe, weights, "a blue circle in sks style", 3, scale=0.5)
    np.testing.assert_array_equal(np.asarray(ui.shown.image), np.asarray(want))
    # the figure: scale 0 (the base model), then the scales seen, the current one among them
    assert ui.strip == [0.0, 0.5, 1.0]
    np.testing.assert_array_equal(shown_pixels(ui.figure.axes[1]), np.asarray(want))
    assert "scale 0.50" in ui.figure.axes[1].get_title()
    [base] = sample.generate(pipe, "a blue circle in sks style", 3, **STEPS)
    np.testing.assert_array_equal(shown_pixels(ui.figure.axes[0]), np.asarray(base))
    assert (
        np.abs(np.asarray(want, float) - np.asarray(base, float)).max() > 0
    )  # the LoRA does something
    assert next(inject.lora_layers(pipe.unet), None) is None  # the pipeline is left as it was


def test_scale_explorer_caches_every_seen_setting(pipe, monkeypatch, random_lora):
    ui = widgets.lora_scale_explorer(
        pipe, random_lora(r=2), prompt="a red circle in sks style", **STEPS
    )
    calls = count_generations(monkeypatch)
    ui.slider.value = 1.5
    assert calls == [("a red circle in sks style", 0)]  # only the new scale; scale 0 is cached
    first = ui.shown.image
    ui.slider.value = 1.0
    ui.slider.value = 1.5
    assert (
        len(calls) == 1 and ui.shown.image is first and ui.updates == 4
    )  # redrawn, not regenerated
    ui.seed_box.value = 5
    assert calls[1:] == [("a red circle in sks style", 5)] * 2  # scale 1.5 and the base picture
    ui.prompt_box.value = "a green square in sks style"
    assert len(calls) == 5 and ui.generations == 2 + len(calls)  # 2 when it was built
    assert ui.strip == [0.0, 1.5]


def test_rank_alpha_explorer_shows_what_lorakit_computes(pipe, tmp_path, random_lora):
    paths = {
        r: formats.save_weights(random_lora(r, seed=r), tmp_path / f"r{r}.safetensors")
        for r in (1, 4)
    }
    ui = widgets.rank_alpha_explorer(pipe, paths, combos=COMBOS, seeds=(0, 1), rank=4, **STEPS)
    assert ui.slider.continuous_update is False and [v for _, v in ui.rank_buttons.options] == [
        1,
        4,
    ]
    assert (ui.shown.rank, ui.shown.alpha, ui.shown.scaling) == (4, 4.0, 1.0)
    updates = ui.updates
    ui.slider.value = 8.0
    assert ui.updates == updates + 1
    shown = ui.shown
    assert (shown.rank, shown.alpha, shown.trained_alpha, shown.scaling) == (4, 8.0, 4.0, 2.0)
    assert shown.parameters == inject.lora_parameter_count(pipe.unet, 4)
    assert shown.file_bytes == paths[4].stat().st_size
    # alpha 8 on a LoRA trained with alpha 4 is the same update as scale 2
    prompts = [styles.TEMPLATE.format(colour=c, shape=s) for c, s in COMBOS for _ in (0, 1)]
    want = reference_images(pipe, formats.load_lora(paths[4]), prompts, [0, 1, 0, 1], scale=2.0)
    got = np.stack([np.asarray(i, float) for i in shown.images])
    assert (
        np.abs(got - np.stack([np.asarray(i, float) for i in want])).max() <= 1
    )  # one level of rounding
    drawn = dict(zip(zip(prompts, [0, 1, 0, 1], strict=True), shown.images, strict=True))
    for colour, shape in COMBOS:  # the scores are evaluate_grid's on those pictures
        grid = metrics.evaluate_grid(
            lambda ps, ss: [drawn[p, s] for p, s in zip(ps, ss, strict=True)],
            [colour],
            [shape],
            (0, 1),
            styles.TEMPLATE,
            "outline",
        )
        mine = [r for r in shown.grid.records if (r["colour"], r["shape"]) == (colour, shape)]
        assert mine == grid.records
    # the figure: base row, LoRA row, then bars of (outline, colour, shape) for base and LoRA
    for i, image in enumerate(shown.images):
        np.testing.assert_array_equal(shown_pixels(ui.figure.axes[4 + i]), np.asarray(image))
    heights = [bar.get_height() for bar in ui.figure.axes[-1].patches]
    assert heights[:3] == [
        shown.grid.style_rate,
        shown.grid.colour_accuracy,
        shown.grid.shape_accuracy,
    ]
    assert heights[3:] == [
        ui.base_grid.style_rate,
        ui.base_grid.colour_accuracy,
        ui.base_grid.shape_accuracy,
    ]
    assert f"{shown.parameters:,} parameters" in ui.summary.value
    ui.rank_buttons.value = 1  # alpha stays 8: scaling 8 / 1
    assert (ui.shown.rank, ui.shown.scaling) == (1, 8.0)
    assert next(inject.lora_layers(pipe.unet), None) is None


def test_rank_alpha_explorer_never_recomputes_a_seen_setting(pipe, monkeypatch, random_lora):
    loras = [random_lora(r, seed=r) for r in (1, 2)]
    calls = count_generations(monkeypatch)
    ui = widgets.rank_alpha_explorer(pipe, loras, combos=COMBOS[:1], **STEPS)
    assert len(calls) == 2 and ui.shown.file_bytes is None  # the base model, then r=1 at alpha 1
    ui.rank_buttons.value = 2
    ui.slider.value = 3.0
    assert len(calls) == 4
    ui.rank_buttons.value = 1
    ui.slider.value = 1.0
    ui.rank_buttons.value = 2
    ui.slider.value = 3.0
    assert (
        len(calls) == 5
        and ui.updates == 7
        and sorted(ui.cache) == [(1, 1.0), (1, 3.0), (2, 1.0), (2, 3.0)]
    )


@pytest.mark.parametrize("build", ["scale", "rank_alpha", "ledger"])
def test_errors_in_the_lora_callbacks_surface_and_are_kept(pipe, monkeypatch, build, random_lora):
    if build == "ledger":
        ui, control, value = widgets.alpha_ledger_explorer(), "r_slider", 9
        monkeypatch.setattr(
            lora, "alpha_ledger", lambda r, alpha: (_ for _ in ()).throw(RuntimeError("boom"))
        )
    else:
        weights = random_lora(1)
        if build == "scale":
            ui, control, value = widgets.lora_scale_explorer(pipe, weights, **STEPS), "slider", 0.25
        else:
            ui, control, value = (
                widgets.rank_alpha_explorer(pipe, [weights], combos=COMBOS[:1], **STEPS),
                "slider",
                2.5,
            )

        def broken(*args):
            raise RuntimeError("boom")

        monkeypatch.setattr(ui, "view", broken)
    reported = []
    monkeypatch.setattr(ui.output, "append_stderr", reported.append)
    with pytest.raises(RuntimeError, match="boom"):
        getattr(ui, control).value = value
    assert len(reported) == 1 and "boom" in reported[0]
    assert len(ui.errors) == 1 and str(ui.errors[0]) == "boom"


def test_an_empty_prompt_is_an_error_the_student_sees(pipe, monkeypatch, random_lora):
    ui = widgets.lora_scale_explorer(pipe, random_lora(1), **STEPS)
    monkeypatch.setattr(ui.output, "append_stderr", lambda text: None)
    with pytest.raises(ValueError, match="prompt is empty"):
        ui.prompt_box.value = "  "
    assert isinstance(ui.errors[-1], ValueError)


def test_lora_explorers_refuse_bad_input(pipe, tmp_path, random_lora):
    weights = random_lora(2)
    with pytest.raises(TypeError, match="LoRA file path or formats.LoRAWeights"):
        widgets.lora_scale_explorer(pipe, {"A": 1})
    with pytest.raises(ValueError, match="two LoRAs of rank 2"):
        widgets.rank_alpha_explorer(pipe, [weights, weights])
    with pytest.raises(ValueError, match="at least one LoRA"):
        widgets.rank_alpha_explorer(pipe, [])
    with pytest.raises(ValueError, match=r"no LoRA of rank 4: the ranks given are \[2\]"):
        widgets.rank_alpha_explorer(pipe, [weights], rank=4)
    inject.inject_lora(pipe.unet, r=1)
    try:
        with pytest.raises(RuntimeError, match="already has LoRA layers"):
            widgets.lora_scale_explorer(pipe, weights)
    finally:
        inject.remove_lora(pipe.unet)


# --------------------------------------------------------------------------- train once, load after


def test_train_or_load_trains_once_per_setting(pipe, tmp_path, monkeypatch):
    calls = []
    real = train.train_lora
    monkeypatch.setattr(
        train, "train_lora", lambda *a, **k: calls.append(a[2].steps) or real(*a, **k)
    )
    path = styles.train_or_load(pipe, 2, 1, tmp_path, batch_size=2, warmup_steps=0)
    assert path.is_file() and "steps1" in path.parent.name and calls == [1]
    assert formats.load_lora(path).r == 2 and next(inject.lora_layers(pipe.unet), None) is None
    assert styles.train_or_load(
        pipe, 2, 1, tmp_path, batch_size=2, warmup_steps=0
    ) == path and calls == [1]
    other = styles.train_or_load(
        pipe, 2, 2, tmp_path, batch_size=2, warmup_steps=0
    )  # more steps: not the same LoRA
    assert other != path and calls == [1, 2]
    edited = (
        tmp_path / "edited_set"
    )  # the same settings on a set with one caption changed: not the same LoRA
    shutil.copytree(styles.OUTLINE_DIR, edited)
    metadata = edited / "metadata.jsonl"
    metadata.write_text(metadata.read_text().replace("a red circle", "a blue circle", 1))
    monkeypatch.setattr(styles, "OUTLINE_DIR", edited)
    retrained = styles.train_or_load(pipe, 2, 1, tmp_path, batch_size=2, warmup_steps=0)
    assert retrained not in (path, other) and calls == [1, 2, 1]
    inject.inject_lora(pipe.unet, r=1)
    try:
        with pytest.raises(RuntimeError, match="already has LoRA layers"):
            styles.train_or_load(pipe, 4, 1, tmp_path, batch_size=2)
    finally:
        inject.remove_lora(pipe.unet)
