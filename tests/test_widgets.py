"""lorakit.widgets driven headlessly: move the slider from code, read what the UI shows."""

import shutil

import ipywidgets
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from lorakit import lora, lowrank, sample, widgets

matplotlib.use("Agg")


def smooth_image(m=48, n=40, seed=0):
    """An RGB uint8 picture with structure (a few gradients and blobs) and some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:m, 0:n] / max(m, n)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], -1)  # (m, n, 3)
    picture = 0.5 + 0.4 * base + 0.05 * rng.standard_normal((m, n, 3))
    return (np.clip(picture, 0, 1) * 255).astype(np.uint8)


def reference_view(channels: list[torch.Tensor], k: int):
    """Error and energy of the rank-k reconstruction, per channel with lorakit.lowrank."""
    approx = [lowrank.low_rank_approx(c, k) for c in channels]
    err2 = sum(
        torch.linalg.matrix_norm(c - a).item() ** 2 for c, a in zip(channels, approx, strict=True)
    )
    norm2 = sum(torch.linalg.matrix_norm(c).item() ** 2 for c in channels)
    kept = sum(lowrank.singular_values(c)[:k].pow(2).sum().item() for c in channels)
    return torch.stack(approx, -1).squeeze(-1).numpy(), np.sqrt(err2 / norm2), kept / norm2


def test_matrix_explorer_shows_what_lowrank_computes():
    W = torch.randn(30, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ui = widgets.svd_explorer(W)
    assert isinstance(ui, ipywidgets.VBox) and ui.slider in ui.children and ui.output in ui.children
    assert ui.slider.max == 20 and ui.slider.continuous_update is False
    for k in (5, 1, 20):
        ui.slider.value = k
        shown = ui.shown
        assert shown.rank == k
        np.testing.assert_allclose(
            shown.reconstruction, lowrank.low_rank_approx(W, k).numpy(), atol=1e-10
        )
        S = lowrank.singular_values(W)
        assert shown.energy_kept == pytest.approx(lowrank.energy(S)[k - 1].item(), rel=1e-12)
        expected_error = lowrank.relative_error(W, lowrank.low_rank_approx(W, k))
        assert shown.relative_error == pytest.approx(expected_error, rel=1e-6, abs=1e-7)
        assert shown.relative_error == pytest.approx(
            lowrank.eckart_young_error(S, k) / torch.linalg.matrix_norm(W).item(), abs=1e-7
        )
        assert shown.storage_ratio == lowrank.storage_ratio(30, 20, k)
        assert f"{shown.relative_error:.2%}" in ui.summary.value
        assert f"{shown.energy_kept:.2%}" in ui.summary.value


def test_rgb_image_is_one_svd_per_channel():
    image = smooth_image()
    ui = widgets.svd_explorer(Image.fromarray(image), max_rank=15)
    assert ui.slider.max == 15
    channels = [torch.from_numpy(image[..., c]).double() / 255 for c in range(3)]
    for k in (2, 7):
        ui.slider.value = k
        reconstruction, error, kept = reference_view(channels, k)
        assert ui.shown.reconstruction.shape == (48, 40, 3)
        np.testing.assert_allclose(ui.shown.reconstruction, reconstruction, atol=1e-10)
        assert ui.shown.relative_error == pytest.approx(error, rel=1e-6)
        assert ui.shown.energy_kept == pytest.approx(kept, rel=1e-10)
        assert ui.shown.storage_ratio == pytest.approx(k * (48 + 40) / (48 * 40))
    # the channels are not mixed up: a one-channel (grey) SVD would give a different picture
    grey = lowrank.low_rank_approx(torch.from_numpy(image.mean(-1)) / 255, 7).numpy()
    assert np.abs(ui.shown.reconstruction - grey[..., None]).max() > 0.05


def test_one_slider_move_is_one_update_and_changes_the_picture():
    ui = widgets.svd_explorer(smooth_image(), rank=3)
    before, figure_before, updates = ui.shown, ui.figure, ui.updates
    ui.slider.value = 9
    assert ui.updates == updates + 1
    assert ui.shown is not before and ui.figure is not figure_before
    assert np.abs(ui.shown.reconstruction - before.reconstruction).max() > 1e-3
    assert ui.shown.relative_error < before.relative_error
    assert ui.shown.energy_kept > before.energy_kept
    # the figure displays the rank-9 reconstruction (clipped to [0, 1] for imshow)
    shown_pixels = np.asarray(ui.figure.axes[1].images[0].get_array())
    np.testing.assert_allclose(shown_pixels, np.clip(ui.shown.reconstruction, 0, 1))
    assert "rank 9" in ui.figure.axes[1].get_title()
    ui.slider.value = 9  # same value: traitlets does not fire, nothing is redrawn
    assert ui.updates == updates + 1


def test_the_svd_is_computed_once(monkeypatch):
    calls = []
    real_svd = torch.linalg.svd
    monkeypatch.setattr(
        torch.linalg, "svd", lambda *a, **k: calls.append(a[0].shape) or real_svd(*a, **k)
    )
    ui = widgets.svd_explorer(smooth_image())
    assert calls == [(48, 40)] * 3  # one SVD per colour channel, when the UI is built
    for k in (2, 4, 6):
        ui.slider.value = k
    assert len(calls) == 3 and ui.shown.rank == 6  # slider moves only multiply cached factors


def test_errors_in_the_callback_surface(monkeypatch):
    ui = widgets.svd_explorer(torch.randn(10, 8))

    def broken(rank):
        raise RuntimeError(f"boom at rank {rank}")

    monkeypatch.setattr(ui, "view", broken)
    reported = []
    monkeypatch.setattr(ui.output, "append_stderr", reported.append)
    with pytest.raises(RuntimeError, match="boom at rank 4"):
        ui.slider.value = 4
    assert len(reported) == 1 and "boom at rank 4" in reported[0]


def test_bad_inputs_say_what_to_do():
    with pytest.raises(ValueError, match=r"1 <= max_rank <= 8"):
        widgets.svd_explorer(torch.randn(10, 8), max_rank=9)
    with pytest.raises(ValueError, match=r"1 <= rank <= 4"):
        widgets.svd_explorer(torch.randn(10, 8), max_rank=4, rank=5)
    with pytest.raises(ValueError, match=r"permute\(1, 2, 0\)"):
        widgets.svd_explorer(torch.randn(3, 10, 8))
    with pytest.raises(TypeError, match="PIL image"):
        widgets.svd_explorer([[1.0, 2.0]])


# --------------------------------------------------------------------------- the LoRA explorers

STEPS = {
    "num_inference_steps": 2
}  # enough to exercise the pipeline; the tests compare, not judge, pictures
COMBOS = (("red", "square"), ("blue", "circle"))


@pytest.fixture(scope="module")
def pipe():
    from lorakit import models

    return models.load_pipeline("tiny", dtype="float32")


def random_lora(pipe, r, alpha=None, seed=0, std=0.05):
    """A LoRA whose B is not zero (so it changes pictures), as formats.LoRAWeights; pipe.unet left bare."""
    from lorakit import formats, inject

    torch.manual_seed(seed)
    inject.inject_lora(pipe.unet, r=r, alpha=alpha)
    with torch.no_grad():
        for _, layer in inject.lora_layers(pipe.unet):
            layer.lora_B.weight.normal_(0, std)
    weights = formats.from_model(pipe.unet)
    inject.remove_lora(pipe.unet)
    return weights


def reference_images(pipe, weights, prompts, seeds, scale=1.0):
    """What lorakit draws with ``weights`` applied at ``scale`` (formats.apply_lora), the UNet restored after."""
    from lorakit import formats, inject, sample

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


def test_scale_explorer_shows_what_lorakit_draws(pipe):
    from lorakit import inject

    weights = random_lora(pipe, r=4, alpha=8)
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
    from lorakit import sample

    [base] = sample.generate(pipe, "a blue circle in sks style", 3, **STEPS)
    np.testing.assert_array_equal(shown_pixels(ui.figure.axes[0]), np.asarray(base))
    assert (
        np.abs(np.asarray(want, float) - np.asarray(base, float)).max() > 0
    )  # the LoRA does something
    assert next(inject.lora_layers(pipe.unet), None) is None  # the pipeline is left as it was


def test_scale_explorer_caches_every_seen_setting(pipe, monkeypatch):
    ui = widgets.lora_scale_explorer(
        pipe, random_lora(pipe, r=2), prompt="a red circle in sks style", **STEPS
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


def test_rank_alpha_explorer_shows_what_lorakit_computes(pipe, tmp_path):
    from lorakit import formats, inject, metrics, styles

    paths = {
        r: formats.save_weights(random_lora(pipe, r, seed=r), tmp_path / f"r{r}.safetensors")
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


def test_rank_alpha_explorer_never_recomputes_a_seen_setting(pipe, monkeypatch):
    loras = [random_lora(pipe, r, seed=r) for r in (1, 2)]
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
def test_errors_in_the_lora_callbacks_surface_and_are_kept(pipe, monkeypatch, build):
    if build == "ledger":
        ui, control, value = widgets.alpha_ledger_explorer(), "r_slider", 9
        monkeypatch.setattr(
            lora, "alpha_ledger", lambda r, alpha: (_ for _ in ()).throw(RuntimeError("boom"))
        )
    else:
        weights = random_lora(pipe, 1)
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


def test_an_empty_prompt_is_an_error_the_student_sees(pipe, monkeypatch):
    ui = widgets.lora_scale_explorer(pipe, random_lora(pipe, 1), **STEPS)
    monkeypatch.setattr(ui.output, "append_stderr", lambda text: None)
    with pytest.raises(ValueError, match="prompt is empty"):
        ui.prompt_box.value = "  "
    assert isinstance(ui.errors[-1], ValueError)


def test_lora_explorers_refuse_bad_input(pipe, tmp_path):
    from lorakit import inject

    weights = random_lora(pipe, 2)
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


# --------------------------------------------------------------------------- the alpha ledger


def peft_scaling(r, alpha, use_rslora):
    """The scaling PEFT itself gives one LoRA layer (alpha=None: LoraConfig's default)."""
    peft = pytest.importorskip("peft")
    kwargs = {} if alpha is None else {"lora_alpha": alpha}
    config = peft.LoraConfig(r=r, target_modules=["0"], use_rslora=use_rslora, **kwargs)
    model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(64, 64)), config)
    return model.base_model.model[0].scaling["default"]


@pytest.mark.parametrize("r", [1, 4, 16])
@pytest.mark.parametrize("alpha", [None, 2.0, 32.0])
def test_alpha_ledger_matches_peft_kohya_files_and_lorakit(r, alpha, tmp_path):
    from lorakit import formats, lora

    ledger = widgets.alpha_ledger(r, alpha)
    assert ledger.peft == pytest.approx(peft_scaling(r, alpha, use_rslora=False), rel=1e-12)
    assert ledger.rslora == pytest.approx(peft_scaling(r, alpha, use_rslora=True), rel=1e-12)
    assert ledger.lorakit == pytest.approx(
        lora.LoRALinear(torch.nn.Linear(64, 64), r=r, alpha=alpha).scaling
    )
    # kohya: the alpha stored in the file over r (kohya's trainer stores 1 when not told)
    stored = widgets.KOHYA_DEFAULT_ALPHA if alpha is None else alpha
    weights = formats.LoRAWeights(
        "lorakit", r, stored, {"m": torch.zeros(r, 8)}, {"m": torch.zeros(8, r)}
    )
    path = formats.save_weights(weights, tmp_path / "k.safetensors", "kohya")
    import safetensors.torch

    file_alpha = safetensors.torch.load_file(path)["lora_unet_m.alpha"].item()
    assert (
        ledger.kohya
        == pytest.approx(file_alpha / r)
        == pytest.approx(formats.load_lora(path).scaling)
    )
    if (
        alpha is not None
    ):  # the same numbers: PEFT, kohya and lorakit agree, rsLoRA is sqrt(r) times stronger
        assert ledger.peft == ledger.kohya == ledger.lorakit
        assert ledger.rslora == pytest.approx(ledger.peft * r**0.5)
    assert [row[3] for row in ledger.rows()] == [
        ledger.peft,
        ledger.rslora,
        ledger.kohya,
        ledger.lorakit,
    ]


def test_alpha_ledger_explorer_updates_its_table():
    ui = widgets.alpha_ledger_explorer(r=4)
    assert ui.shown == widgets.alpha_ledger(4, None) and ui.r_slider.continuous_update is False
    assert "<b>0.25</b>" in ui.table.value  # kohya's default alpha 1 over r = 4
    ui.defaults.value = False
    ui.r_slider.value = 16
    assert ui.updates == 3 and ui.shown == widgets.alpha_ledger(16, 4.0)
    ui.slider.value = 8.0
    assert ui.shown.rslora == 2.0 and "<b>2</b>" in ui.table.value
    lines = ui.figure.axes[0].get_lines()
    assert lines[1].get_ydata()[0] == ui.shown.peft  # the marker at the current r


def test_alpha_ledger_refuses_bad_input():
    with pytest.raises(ValueError, match="positive integer"):
        widgets.alpha_ledger(0, 1.0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        widgets.alpha_ledger(4, -1.0)


# --------------------------------------------------------------------------- train once, load after


def test_train_or_load_trains_once_per_setting(pipe, tmp_path, monkeypatch):
    from lorakit import formats, inject, styles, train

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


def test_sliders_are_wide_enough_to_aim_and_labels_are_not_cut():
    """ipywidgets' default slider is ~120 px of track for 1-200 ranks; the ledger's checkbox label was cut short."""
    from lorakit.widgets import _base

    svd, ledger = (
        widgets.svd_explorer(smooth_image(), max_rank=40),
        widgets.alpha_ledger_explorer(r=16),
    )
    for control in (svd.slider, ledger.r_slider, ledger.slider):
        assert (
            control.layout.width == _base.SLIDER_LAYOUT["width"]
            and control.layout.max_width == "640px"
        )
        assert control.style.description_width == _base.LABEL_STYLE["description_width"]
        assert not control.continuous_update
    assert ledger.defaults.indent is False and ledger.defaults.layout.width == "auto"
    assert ledger.defaults in ledger.children, (
        "the checkbox has a row of its own, not squeezed beside two sliders"
    )
