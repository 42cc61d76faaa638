"""How long do resize and extract take on an SD 1.5-sized LoRA?
``python -m benchmarks.lora_algebra``.

The LoRA has kohya's default layout for SD 1.5 (every linear layer and 1x1 convolution of the 16
transformer blocks: 192 modules, shapes from SD 1.5's real config), rank ``--rank`` (default 32),
random factors. Two rows, each the median of ``--repeats`` runs on the CPU, each against its peer in
the same run:

1. **resize** to ``--new-rank``: lorakit's ``svd_tools.resize`` (the SVD of the r x r core after QR
   of the two factors, ``O((in + out) r^2)``) against what kohya's ``resize_lora.py`` does, the full
   SVD of every dense ``up @ down``. Both truncate to the same rank; the largest difference of their
   delta W is printed.
2. **extract** at ``--new-rank`` from a "fine-tune" of the same 192 layers (the base weights plus a
   random change of rank 64 and a little full-rank noise): lorakit's ``svd_tools.extract`` (float32,
   full SVD of each difference) against the bare loop of ``torch.linalg.svd`` over the same
   differences (its peer: what is left of extract without the checks, the bookkeeping and the factor
   split).

Only the 192 layers are real (the rest of the UNet stays on the meta device, as no extraction reads
it), so the run needs about 2 GB. Left out: the GPU (``svd_tools`` runs where the weights are),
randomised SVD.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from benchmarks import _common
from lorakit import formats, inject, models, svd_tools


def sd15_lora(rank: int, seed: int = 0) -> formats.LoRAWeights:
    """kohya's default SD 1.5 layout (192 modules) at ``rank``, random factors, alpha = rank."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**models.SD15_UNET_CONFIG)
    paths = inject.find_targets(unet, "kohya")
    modules = dict(unet.named_modules())
    gen = torch.Generator().manual_seed(seed)
    A, B = {}, {}
    for p in paths:
        n_in, n_out = inject.shape_of(modules[p])
        a = torch.randn(rank, n_in, generator=gen) / n_in**0.5
        b = torch.randn(n_out, rank, generator=gen) * 0.01
        conv = isinstance(modules[p], nn.Conv2d)
        A[p], B[p] = (a[..., None, None], b[..., None, None]) if conv else (a, b)
    return formats.build_weights("lorakit", A, B, {p: float(rank) for p in paths})


def sd15_pair(seed: int = 0, layers: int | None = None) -> tuple[nn.Module, nn.Module]:
    """An SD 1.5 UNet whose 192 kohya-default layers (or the first ``layers``) are real (the rest on
    meta), and a fine-tune of it."""
    with torch.device("meta"):
        base = UNet2DConditionModel(**models.SD15_UNET_CONFIG)
    gen = torch.Generator().manual_seed(seed)
    for p in inject.find_targets(base, "kohya")[:layers]:
        parent, _, child = p.rpartition(".")
        old = base.get_submodule(p)
        new = (
            nn.Conv2d(old.in_channels, old.out_channels, 1)
            if isinstance(old, nn.Conv2d)
            else nn.Linear(old.in_features, old.out_features)
        )
        setattr(base.get_submodule(parent), child, new)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in inject.find_targets(tuned, "kohya")[:layers]:
            w = tuned.get_submodule(p).weight
            flat = w.view(w.shape[0], -1)
            u = torch.randn(flat.shape[0], 64, generator=gen) * 0.01
            v = torch.randn(64, flat.shape[1], generator=gen) * 0.01
            flat += u @ v + torch.randn(flat.shape, generator=gen) * 1e-4
    return base, tuned


def dense_resize(weights: formats.LoRAWeights, rank: int) -> dict[str, torch.Tensor]:
    """kohya's way: the dense delta W of every module, its full SVD, truncated (the peer of
    svd_tools.resize)."""
    out = {}
    for m in weights.modules:
        u, s, vh = torch.linalg.svd(weights.matrix(m), full_matrices=False)
        out[m] = (u[:, :rank] * s[:rank]) @ vh[:rank]
    return out


def bare_svds(base: nn.Module, tuned: nn.Module, paths: list[str], rank: int) -> list[torch.Tensor]:
    """The SVDs of extract alone: each float32 difference, full SVD, the first ``rank`` singular
    values kept."""
    kept = []
    with torch.no_grad():
        for p in paths:
            delta = tuned.get_submodule(p).weight.float() - base.get_submodule(p).weight.float()
            kept.append(
                torch.linalg.svd(delta.reshape(delta.shape[0], -1), full_matrices=False)[1][:rank]
            )
    return kept


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def options(parser) -> None:
    """The command line's options."""
    parser.add_argument(
        "--rank", type=int, default=32, help="rank of the LoRA that is resized (default 32)"
    )
    parser.add_argument(
        "--new-rank",
        type=int,
        default=8,
        help="rank after resize, and of the extraction (default 8)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument(
        "--no-extract", action="store_true", help="skip the extraction row (it needs about 2 GB)"
    )
    parser.add_argument(
        "--layers", type=int, help="the first N of the 192 layers only (a quick run)"
    )


def interleaved(ours, peer, repeats: int) -> tuple[list[float], list[float], object, object]:
    """``repeats`` timed runs of each, taken in turn, alternating which goes first; returns the
    seconds of each and what each returned last."""
    times, last = ([], []), [None, None]
    for i in range(repeats):
        for who in (0, 1) if i % 2 == 0 else (1, 0):
            seconds, last[who] = timed(ours if who == 0 else peer)
            times[who].append(seconds)
    return times[0], times[1], last[0], last[1]


def print_rows(rows: dict, args, modules: int) -> None:
    print(
        f"\nSD 1.5-shaped LoRA: {modules} of kohya's 192 default modules, rank {args.rank}; "
        f"median of {args.repeats} runs, CPU"
    )
    print(f"{'':8s} {'lorakit s':>10s} {'peer s':>10s} {'peer/ours':>9s}  the peer; a check")
    if "resize" in rows:
        r = rows["resize"]
        print(
            f"{'resize':8s} {r['ours']:10.3f} {r['peer']:10.3f} {r['peer'] / r['ours']:8.1f}x  "
            "kohya's dense SVD "
            f"of up @ down; largest difference of delta W {r['check']:.2e}"
        )
    if "extract" in rows:
        r = rows["extract"]
        print(
            f"{'extract':8s} {r['ours']:10.3f} {r['peer']:10.3f} {r['peer'] / r['ours']:8.2f}x  "
            "the bare SVD loop; "
            f"mean energy kept at rank {args.new_rank}: {r['check']:.1%}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__)
    options(parser)
    args = parser.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{_common.load_average(last_minute=True)}"
    )
    weights = sd15_lora(args.rank)
    weights = weights.subset(weights.modules[: args.layers])
    ours, theirs, (small, _), dense = interleaved(
        lambda: svd_tools.resize(weights, args.new_rank),
        lambda: dense_resize(weights, args.new_rank),
        args.repeats,
    )
    diff = max(float((small.matrix(m) - dense[m]).abs().max()) for m in weights.modules)
    rows = {
        "resize": dict(ours=statistics.median(ours), peer=statistics.median(theirs), check=diff)
    }
    if not args.no_extract:
        base, tuned = sd15_pair(layers=args.layers)
        paths = inject.find_targets(base, "kohya")[: args.layers]
        ours, theirs, (_, reports), _ = interleaved(
            lambda: svd_tools.extract(base, tuned, args.new_rank, targets=paths),
            lambda: bare_svds(base, tuned, paths, args.new_rank),
            args.repeats,
        )
        energy = statistics.mean(r.energy_kept for r in reports)
        rows["extract"] = dict(
            ours=statistics.median(ours), peer=statistics.median(theirs), check=energy
        )
    print_rows(rows, args, len(weights.modules))
    print(f"load average after: {_common.load_average(last_minute=True)}")
    return rows


if __name__ == "__main__":
    main()
