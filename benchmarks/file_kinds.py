"""What each kind of LoRA file does in lorakit, and how exactly.
``python -m benchmarks.file_kinds``.

One file of each kind people share (kohya's and diffusers' spellings for SD 1.x, SDXL, SD3 and
Flux; LyCORIS LoHa and LoKr; DoRA), made for the tiny model of its architecture (the tiny SD, or
lesson 12's tiny SDXL, SD3 and Flux: the real layouts at small widths), random factors. For each,
the table says what ``info``, ``resize --rank 2`` (its Eckart-Young error where the file's rank is
above 2), ``merge`` (concat, with itself at 0.5),
``convert`` to kohya and to diffusers do (the figure: the largest relative error of delta W against
the file's), and ``apply``: the largest difference of the model's output from the reference's,
relative to what the LoRA changes. The reference is diffusers' own loader where it reads the file
(``load_lora_weights``; ``load_lora_into_transformer`` for SD3 and Flux), else the weights plus
delta W from the LoHa or LoKr formula written here. A refusal shows the start of its message.

Left out: the full-size models (the names and shapes are the same; the tests check SDXL's and
Flux's real layouts on the meta device), LyCORIS's Tucker cores, OFT, (IA)^3 (refused by name).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline

from lorakit import formats, inject, models, svd_tools
from lorakit.architectures import calling, configs
from lorakit.architectures.tiny_pipelines import tiny_sdxl_pipeline
from lorakit.formats import lycoris

SDXL_LDM = {  # kohya's SDXL names (Stability's layout) -> the tiny SDXL's module
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    ),
    "lora_unet_input_blocks_7_1_transformer_blocks_1_attn2_to_v": (
        "down_blocks.2.attentions.0.transformer_blocks.1.attn2.to_v"
    ),
    "lora_unet_middle_block_1_proj_in": "mid_block.attentions.0.proj_in",
    "lora_unet_output_blocks_1_0_in_layers_2": "up_blocks.0.resnets.1.conv1",
}
ATTN = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"  # the tiny SD's, 64 -> 128


def _random(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3


def _trained(model, targets, fmt: str, path: Path) -> Path:
    """A LoRA of rank 2 on ``targets`` of ``model`` with random B, saved as ``fmt``."""
    model = copy.deepcopy(model)
    inject.inject_lora(model, r=2, alpha=4.0, target_modules=targets)
    for i, (_, layer) in enumerate(inject.lora_layers(model)):
        layer.lora_B.weight.data = _random(*layer.lora_B.weight.shape, seed=i)
    return formats.save_lora(model, path, fmt)


def _sdxl_kohya(pipe, path: Path) -> Path:
    modules = dict(pipe.unet.named_modules())
    tensors = {}
    for i, (name, module_path) in enumerate(SDXL_LDM.items()):
        w = modules[module_path].weight
        kernel = tuple(w.shape[2:])
        tensors[f"{name}.lora_down.weight"] = _random(2, w.shape[1], *kernel, seed=i)
        up = _random(w.shape[0], 2, seed=10 + i)
        tensors[f"{name}.lora_up.weight"] = up.reshape(*up.shape, *((1, 1) if kernel else ()))
        tensors[f"{name}.alpha"] = torch.tensor(4.0)
    safetensors.torch.save_file(tensors, str(path))
    return path


def _lycoris(kind: str, path: Path) -> tuple[Path, torch.Tensor]:
    """A LoHa (dim 4) or LoKr (W1 full 8x8, W2 low-rank) on the tiny SD's ATTN, and delta W from the
    formula."""
    name = "lora_unet_" + ATTN.replace(".", "_")
    if kind == "LoHa":
        w = [_random(*s, seed=i) for i, s in enumerate(((128, 4), (4, 64), (128, 4), (4, 64)))]
        tensors = dict(zip([f"{name}.{s}" for s in lycoris.LOHA], w, strict=True))
        delta = (2.0 / 4) * (w[0] @ w[1]) * (w[2] @ w[3])
    else:
        w1, w2a, w2b = _random(8, 8, seed=0), _random(16, 4, seed=1), _random(4, 8, seed=2)
        tensors = {f"{name}.lokr_w1": w1, f"{name}.lokr_w2_a": w2a, f"{name}.lokr_w2_b": w2b}
        delta = (2.0 / 4) * torch.kron(w1, w2a @ w2b)
    safetensors.torch.save_file(tensors | {f"{name}.alpha": torch.tensor(2.0)}, str(path))
    return path, delta


def _delta_error(new: formats.LoRAWeights, old) -> str:
    return f"{max(svd_tools.delta_error(new, old).values()):.1e}"


def _operations(path: Path, folder: Path) -> list[str]:
    """info, resize, merge, convert to kohya and to diffusers: ``ok <figure>`` or the refusal."""
    results = []
    for _, run in (
        ("info", lambda w: formats.describe(path).split("architecture: ")[1].split("\n")[0]),
        ("resize", lambda w: _delta_error(svd_tools.resize(w, 2, sv_fro=1.0)[0], w)),
        ("merge", lambda w: _delta_error(svd_tools.merge([(w, 1.0), (w, 0.5)]), [(w, 1.5)])),
        ("kohya", lambda w: _converted(w, folder / "k.safetensors", "kohya")),
        ("diffusers", lambda w: _converted(w, folder / "d.safetensors", "diffusers")),
    ):
        try:
            results.append(run(formats.load_lora(path)))
        except (ValueError, TypeError, formats.LoRAFileError) as error:
            results.append(_refusal(error, path))
    return results


def _refusal(error: Exception, path: Path) -> str:
    """The start of a refusal's message, without the file's name."""
    return "refused: " + str(error).replace(f"{path} ", "").split(" (")[0][:48]


def _converted(weights, out: Path, fmt: str) -> str:
    return _delta_error(formats.load_lora(formats.save_weights(weights, out, fmt)), weights)


def _relative(out, reference, base) -> str:
    change = float((reference - base).abs().max())
    return f"{float((out - reference).abs().max()) / change:.1e} of {change:.2g}"


def _sd_output(pipe_or_model, g_seed: int = 0):
    g = torch.Generator().manual_seed(g_seed)
    x = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    text = torch.randn(1, 77, 64, generator=g, dtype=torch.float64)
    model = getattr(pipe_or_model, "unet", pipe_or_model)
    with torch.no_grad():
        if isinstance(model, torch.nn.Module) and type(model).__name__ == "UNet2DConditionModel":
            pooled = torch.randn(1, 64, generator=g, dtype=torch.float64)
            return calling.denoise(model, x, text, pooled)
        return calling.denoise(model, x, text[:, :7], text[:, 0])


def _apply(path: Path, model, diffusers_load) -> str:
    """lorakit's apply against ``diffusers_load(copy, path)`` (or a callable that adds delta W by
    hand): the relative difference of the denoiser's outputs."""
    model = copy.deepcopy(model).to(torch.float64)  # float64: a difference of 1e-12 shows
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    try:
        formats.apply_lora(ours, path)
    except (ValueError, formats.LoRAFileError) as error:
        return _refusal(error, path)
    diffusers_load(theirs, path)
    return _relative(_sd_output(ours), _sd_output(theirs), _sd_output(model))


def _transformer_loader(pipeline_class):
    def load(model, path):
        state, meta = pipeline_class.lora_state_dict(str(path), return_lora_metadata=True)
        alphas = {"network_alphas": None} if pipeline_class is FluxPipeline else {}
        pipeline_class.load_lora_into_transformer(state, transformer=model, metadata=meta, **alphas)

    return load


def _by_hand(delta: torch.Tensor):
    def load(pipe, path):
        with torch.no_grad():
            dict(pipe.unet.named_modules())[ATTN].weight += delta.double()

    return load


def _other_files(folder: Path) -> tuple[Path, Path]:
    """kohya's fused Flux module (on the tiny Flux's 32 wide blocks) and a DoRA file."""
    qkv, attn = "lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_" + ATTN.replace(".", "_")
    fused, dora = folder / "flux_kohya.safetensors", folder / "dora.safetensors"
    pairs = {qkv: (_random(2, 32, seed=0), _random(96, 2, seed=1))}
    pairs[attn] = (_random(2, 64, seed=0), _random(128, 2, seed=1))
    for path, name, extra in (
        (fused, qkv, {}),
        (dora, attn, {f"{attn}.dora_scale": torch.ones(1, 64)}),
    ):
        down, up = pairs[name]
        tensors = {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
        safetensors.torch.save_file(tensors | extra, str(path))
    return fused, dora


def _by_diffusers(pipe, path: Path) -> None:
    pipe.load_lora_weights(str(path))


def _kinds(folder: Path) -> list[tuple[str, Path, object, object]]:
    """(kind, file, the model it is applied to, the reference loader or None)."""
    sd, sdxl = models.load_pipeline("tiny"), tiny_sdxl_pipeline()
    sd3, flux = configs.build_tiny("sd3"), configs.build_tiny("flux")
    joint = ["attn.to_q", "attn.to_v", "attn.add_k_proj", "attn.to_add_out"]
    loha, loha_delta = _lycoris("LoHa", folder / "loha.safetensors")
    lokr, lokr_delta = _lycoris("LoKr", folder / "lokr.safetensors")
    fused, dora = _other_files(folder)
    f = folder
    return [
        ("SD 1.x, kohya", _trained(sd.unet, "attn2", "kohya", f / "1.safetensors"), sd,
         _by_diffusers),
        ("SD 1.x, diffusers", _trained(sd.unet, "attn2", "diffusers", f / "2.safetensors"), sd,
         _by_diffusers),
        ("SDXL, kohya (LDM names)", _sdxl_kohya(sdxl, f / "3.safetensors"), sdxl, _by_diffusers),
        ("SDXL, diffusers", _trained(sdxl.unet, "attn2", "diffusers", f / "4.safetensors"), sdxl,
         _by_diffusers),
        ("SD3, diffusers", _trained(sd3, joint, "diffusers", f / "5.safetensors"), sd3,
         _transformer_loader(StableDiffusion3Pipeline)),
        ("Flux, diffusers", _trained(flux, joint, "diffusers", f / "6.safetensors"), flux,
         _transformer_loader(FluxPipeline)),
        ("Flux, kohya (fused qkv)", fused, flux, None),
        ("LyCORIS LoHa", loha, sd, _by_hand(loha_delta)),
        ("LyCORIS LoKr", lokr, sd, _by_hand(lokr_delta)),
        ("DoRA", dora, sd, None),
    ]  # fmt: skip


def main() -> dict[str, list[str]]:
    """Print the table; return its rows, ``{kind: cells}``."""
    from diffusers.utils import logging

    logging.set_verbosity_error()  # float64 copies of the models: diffusers' warning each time
    torch.manual_seed(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        header = ("file", "info: architecture", "resize --rank 2", "merge (concat)",
                  "convert: kohya", "convert: diffusers", "apply vs reference")  # fmt: skip
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for kind, path, model, reference in _kinds(folder):
            cells = _operations(path, folder)
            cells.append(_apply(path, model, reference or (lambda m, p: None)))
            print(f"| {kind} | " + " | ".join(cells) + " |")
            rows[kind] = cells
    return rows


if __name__ == "__main__":
    main()
