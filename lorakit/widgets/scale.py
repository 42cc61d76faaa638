"""Lesson 07's scale explorer: one prompt and seed with a LoRA at scales 0 to 1.5.

Introduced in notebooks/07_rank_alpha_lab.ipynb.

:func:`lora_scale_explorer` shows the picture at scale 0 (the base model), at the slider's scale
and at the other scales already seen, and the effective multiplier ``scale * alpha / r`` of B A in
every layer. Each (prompt, seed, scale) is drawn once and cached; the LoRA is in the pipeline only
while a picture is drawn (``applying.lora_applied``).

Left out: several LoRAs at once, negative prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

from lorakit import sample, styles
from lorakit.language import say
from lorakit.widgets.applying import as_lora_weights, check_no_lora, lora_applied, scaling_text
from lorakit.widgets.base import Explorer, labelled, slider

__all__ = ["LoRAScaleExplorer", "ScaleView", "lora_scale_explorer"]


@dataclass(frozen=True)
class ScaleView:
    """What the scale explorer shows for one (prompt, seed, scale)."""

    prompt: str
    seed: int
    scale: float  # the runtime multiplier ("LoRA weight" in A1111 and ComfyUI)
    scaling: float  # alpha / r of the LoRA (alpha / sqrt(r) with rsLoRA)
    multiplier: float  # scale * scaling: what multiplies B @ A in every layer
    image: Image.Image


class LoRAScaleExplorer(Explorer):
    """A prompt, a seed and a scale slider over one LoRA; built by :func:`lora_scale_explorer`."""

    MAX_PANELS = 8

    def __init__(
        self, pipe, lora, prompt: str, seed: int = 0, scale: float = 1.0, **generate_kwargs
    ):
        self._setup()
        check_no_lora(pipe)
        self.pipe, self.weights, self.generate_kwargs = pipe, as_lora_weights(lora), generate_kwargs
        self.cache: dict[
            tuple[str, int, float], Image.Image
        ] = {}  # (prompt, seed, scale) -> picture
        self.generations = 0  # pictures actually drawn (cache misses)
        self.shown: ScaleView | None = None
        self.figure: Figure | None = None
        self.strip: list[float] = []  # the scales of the figure's panels, left to right
        self._visited: list[float] = []
        self.prompt_box = labelled(
            ipywidgets.Text,
            value=prompt,
            description=say("prompt"),
            continuous_update=False,
            layout=ipywidgets.Layout(width="60%", max_width="480px"),
        )
        self.seed_box = labelled(
            ipywidgets.BoundedIntText,
            value=seed,
            min=0,
            max=2**31 - 1,
            description=say("seed"),
            layout=ipywidgets.Layout(width="14em"),
        )
        self.slider = slider(
            ipywidgets.FloatSlider,
            value=scale,
            min=0.0,
            max=1.5,
            step=0.05,
            description=say("LoRA scale"),
            readout_format=".2f",
        )
        self.summary = ipywidgets.HTML()
        super().__init__(
            [
                ipywidgets.HBox([self.prompt_box, self.seed_box]),
                self.slider,
                self.summary,
                self.output,
            ]
        )
        self._watch(self.prompt_box, self.seed_box, self.slider)
        self.refresh()

    def image(self, prompt: str, seed: int, scale: float) -> Image.Image:
        """The picture of ``prompt`` and ``seed`` with the LoRA at ``scale``: drawn once, cached."""
        key = (prompt, int(seed), round(float(scale), 4))
        if key not in self.cache:
            with lora_applied(self.pipe, self.weights, key[2]):
                self.cache[key] = sample.generate(
                    self.pipe, prompt, key[1], **self.generate_kwargs
                )[0]
            self.generations += 1
        return self.cache[key]

    def view(self, prompt: str, seed: int, scale: float) -> ScaleView:
        scale = round(float(scale), 4)
        return ScaleView(
            prompt=prompt,
            seed=int(seed),
            scale=scale,
            scaling=self.weights.scaling,
            multiplier=scale * self.weights.scaling,
            image=self.image(prompt, seed, scale),
        )

    def refresh(self) -> None:
        """Draw (or fetch) the picture of the widgets' prompt, seed and scale; redraw the strip."""
        self.updates += 1
        prompt = self.prompt_box.value.strip()
        if not prompt:
            raise ValueError("the prompt is empty: type one, e.g. 'a blue circle in sks style'.")
        shown = self.view(prompt, self.seed_box.value, self.slider.value)
        self.image(prompt, shown.seed, 0.0)  # the base picture, for comparison
        self._visited = [s for s in self._visited if s != shown.scale] + [shown.scale]
        seen = [s for s in reversed(self._visited) if (prompt, shown.seed, s) in self.cache]
        self.strip = sorted({0.0, shown.scale} | set(seen[: self.MAX_PANELS - 2]))
        self._present(
            shown,
            say(
                "effective multiplier of B&middot;A = scale &times; {scaling} = {scale} &times; "
                "{value} = <b>{multiplier}</b> in each of {layers} layers &nbsp;|&nbsp; "
                "{cached} pictures cached, {drawn} drawn",
                scaling=scaling_text(self.weights),
                scale=f"{shown.scale:.2f}",
                value=f"{shown.scaling:.3g}",
                multiplier=f"{shown.multiplier:.3g}",
                layers=len(self.weights.modules),
                cached=len(self.cache),
                drawn=self.generations,
            ),
        )

    def _draw(self, shown: ScaleView) -> Figure:
        fig, axes = plt.subplots(
            1,
            len(self.strip),
            figsize=(1.9 * len(self.strip), 2.3),
            squeeze=False,
            layout="constrained",
        )
        for ax, scale in zip(axes[0], self.strip, strict=True):
            ax.imshow(self.cache[shown.prompt, shown.seed, scale])
            ax.set_xticks([])
            ax.set_yticks([])
            current = scale == shown.scale
            ax.set_title(
                say("scale {scale}", scale=f"{scale:.2f}") + f"\n(x{scale * shown.scaling:.3g})",
                fontsize=9,
                color="tab:red" if current else "black",
                fontweight="bold" if current else "normal",
            )
            for side in ax.spines.values():
                side.set(color="tab:red" if current else "0.8", linewidth=3 if current else 1)
        fig.suptitle(f"'{shown.prompt}', seed {shown.seed}", fontsize=10)
        return fig


def lora_scale_explorer(
    pipe,
    lora,
    prompt: str = styles.caption("blue", "circle"),
    seed: int = 0,
    scale: float = 1.0,
    **generate_kwargs,
) -> LoRAScaleExplorer:
    """A prompt box, a seed and a LoRA scale slider (0 to 1.5): the same seed at every scale.

    ``lora``: a LoRA file or ``formats.LoRAWeights``. The summary shows the effective multiplier
    ``scale * alpha / r`` of B A; the figure shows the picture at scale 0 (the base model), at the
    slider's scale and at the other scales already seen. Pictures are cached by (prompt, seed,
    scale); ``generate_kwargs`` (e.g. ``num_inference_steps``) go to ``sample.generate``.
    """
    return LoRAScaleExplorer(pipe, lora, prompt, seed, scale, **generate_kwargs)
