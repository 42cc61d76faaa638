"""Lesson 01's SVD explorer driven headlessly: move the slider from code, read what the UI shows,
and compare it with what ``lorakit.lowrank`` computes."""

import ipywidgets
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from lorakit import lowrank, widgets

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
