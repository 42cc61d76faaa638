"""Is lorakit's LoRA as fast and as lean as PEFT's? ``python -m benchmarks.lora_speed``.

Two tables, on the tiny SD's UNet (``--device cpu`` by default, or ``cuda``):

1. **Training step**: lorakit (``inject.inject_lora``, rank ``--rank`` on the 64 ``attn2``
   projections) against diffusers + PEFT (``unet.add_adapter(LoraConfig(...))`` on the same
   64 module paths) on a fresh copy of the same UNet. Both start from the same LoRA weights
   and take the same step as ``lorakit.train``: epsilon MSE on the same latents, timesteps,
   noise and text embeddings, backward, gradient clipping, AdamW on the LoRA parameters only.
   The two are interleaved (alternating which goes first) so that drift on a shared machine
   hits both alike; the table shows the median of ``--steps`` timed steps after warm-up, and
   the first-step loss of each, which must agree (a check that both compute the same thing).
2. **Inference**: a no-grad UNet forward with no LoRA, with lorakit's LoRA merged
   (``inject.merge_lora``), unmerged, and PEFT's unmerged LoRA, interleaved, median of
   ``--repeats``.

Memory. On CUDA, "peak" is ``torch.cuda.max_memory_allocated`` during one step minus the
memory allocated just before it (activations, gradients, temporaries). On the CPU there is no
honest allocator peak (tracemalloc does not see torch's allocations, and the RSS of a process
that already holds both models hardly moves), so the CPU column is the bytes autograd saves
for backward, counted with ``torch.autograd.graph.saved_tensors_hooks``: every distinct tensor
storage saved during the forward, excluding parameters (already resident). That is the part of
training memory a LoRA implementation controls (it grows with batch size); it is printed on
CUDA too. It leaves out transient buffers freed before backward.

Left out: mixed precision, gradient checkpointing, SD 1.5 (``--device cuda`` times the tiny
UNet only) and the text encoder. The load average of the machine is printed before and after:
numbers taken on a busy machine are noisy, the ratios less so than the times.
"""

from __future__ import annotations

import copy
import os
import statistics
import time

import torch
from diffusers import DDPMScheduler
from peft import LoraConfig

from benchmarks import _common
from lorakit import inject, models, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def saved_bytes(fn) -> tuple[object, int]:
    """Run ``fn()`` and count the bytes of the distinct non-parameter storages autograd saves
    meanwhile."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def lora_params_peft(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in unet.named_parameters() if p.requires_grad and ".lora_" in n]


def build_variants(unet: torch.nn.Module, rank: int, seed: int = 0):
    """(lorakit UNet, PEFT UNet, target paths), with the same LoRA A and B in both."""
    ours = copy.deepcopy(unet)
    torch.manual_seed(seed)
    names = inject.inject_lora(ours, r=rank, target_modules="attn2", init="gaussian")  # 64 paths
    peft_unet = copy.deepcopy(unet)
    peft_unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=names, init_lora_weights="gaussian")
    )
    with torch.no_grad():
        for name in names:
            mine, theirs = ours.get_submodule(name), peft_unet.get_submodule(name)
            theirs.lora_A["default"].weight.copy_(mine.lora_A.weight)  # (r, in)
            theirs.lora_B["default"].weight.copy_(mine.lora_B.weight)  # (out, r), zeros
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_peft = sum(p.numel() for p in lora_params_peft(peft_unet))
    n_all_trainable = sum(p.numel() for p in peft_unet.parameters() if p.requires_grad)
    if not n_ours == n_peft == n_all_trainable:
        raise RuntimeError(
            f"trainable parameters differ: lorakit {n_ours}, PEFT LoRA {n_peft}, "
            f"PEFT all {n_all_trainable}: the comparison would not be fair."
        )
    return ours, peft_unet, names


def train_table(unet, scheduler, args, device) -> dict:
    ours, theirs, names = build_variants(unet, args.rank)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(args.batch, 4, 16, 16, generator=gen).to(device)  # (B, 4, 16, 16)
    context = torch.randn(args.batch, 77, unet.config.cross_attention_dim, generator=gen).to(
        device
    )  # (B, 77, D)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=gen).to(
        device
    )  # (B,)
    noise = torch.randn(latents.shape, generator=gen).to(device)  # (B, 4, 16, 16)

    variants = {}
    for label, model, params in (
        ("lorakit", ours, [p for p in ours.parameters() if p.requires_grad]),
        ("PEFT", theirs, lora_params_peft(theirs)),
    ):
        model.train()
        variants[label] = dict(
            model=model,
            params=params,
            opt=torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2),
            times=[],
            loss=None,
            saved=0,
            peak=None,
        )

    def step(v: dict) -> None:
        loss, v["saved"] = saved_bytes(
            lambda: train.epsilon_loss(v["model"], scheduler, latents, context, t, noise, None)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(v["params"], 1.0)
        v["opt"].step()
        v["opt"].zero_grad(set_to_none=True)
        if v["loss"] is None:
            v["loss"] = loss.item()

    for i in range(args.warmup + args.steps):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for label in order:
            v = variants[label]
            sync(device)
            if device.type == "cuda":
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            step(v)
            sync(device)
            if i >= args.warmup:
                v["times"].append(time.perf_counter() - start)
            if device.type == "cuda":
                v["peak"] = torch.cuda.max_memory_allocated(device) - base
    return dict(variants=variants, targets=len(names))


def infer_table(unet, args, device) -> dict:
    ours, theirs, _ = build_variants(unet, args.rank)
    with torch.no_grad():
        for name, layer in inject.lora_layers(ours):
            torch.nn.init.normal_(
                layer.lora_B.weight, std=0.02
            )  # a non-zero update, as after training
            theirs.get_submodule(name).lora_B["default"].weight.copy_(
                layer.lora_B.weight
            )  # (out, r)
    merged = copy.deepcopy(ours)
    inject.merge_lora(merged)
    models_ = {
        "no LoRA": unet,
        "lorakit merged": merged,
        "lorakit unmerged": ours,
        "PEFT unmerged": theirs,
    }
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(args.infer_batch, 4, 16, 16, generator=gen).to(device)  # (B, 4, 16, 16)
    ctx = torch.randn(args.infer_batch, 77, unet.config.cross_attention_dim, generator=gen).to(
        device
    )  # (B, 77, D)
    t = torch.full((args.infer_batch,), 500, device=device)  # (B,)
    times = {k: [] for k in models_}
    with torch.no_grad():
        for m in models_.values():
            m.eval()
        for i in range(args.warmup + args.repeats):
            order = list(models_) if i % 2 == 0 else list(reversed(models_))
            for label in order:
                sync(device)
                start = time.perf_counter()
                models_[label](x, t, ctx)
                sync(device)
                if i >= args.warmup:
                    times[label].append(time.perf_counter() - start)
        unmerged_out = ours(x, t, ctx).sample  # (B, 4, 16, 16)
        merge_diff = (merged(x, t, ctx).sample - unmerged_out).abs().max().item()
        peft_diff = (theirs(x, t, ctx).sample - unmerged_out).abs().max().item()
    return dict(times=times, merge_diff=merge_diff, peft_diff=peft_diff)


def print_training(unet, scheduler, args, device) -> tuple[dict, dict, float]:
    """Section 1: the training step of each variant, against PEFT's; returns the variants' runs,
    their median step times and the first-step losses' difference."""
    tr = train_table(unet, scheduler, args, device)
    v = tr["variants"]
    med = {k: statistics.median(x["times"]) for k, x in v.items()}
    print(
        f"\n1. Training step: rank {args.rank} on {tr['targets']} attn2 projections, batch "
        f"{args.batch}, "
        f"AdamW, median of {args.steps} after {args.warmup} warm-up"
    )
    mem_head = "  peak MiB" if device.type == "cuda" else ""
    print(
        f"{'variant':<10} {'step ms':>9} {'ratio':>7} {'saved MiB':>10} {'ratio':>7}{mem_head} "
        f"{'1st loss':>10}"
    )
    for k, x in v.items():
        peak = f" {x['peak'] / 2**20:9.1f}" if x["peak"] is not None else ""
        print(
            f"{k:<10} {med[k] * 1e3:9.1f} {med[k] / med['PEFT']:7.3f} {x['saved'] / 2**20:10.2f} "
            f"{x['saved'] / v['PEFT']['saved']:7.3f}{peak} {x['loss']:10.6f}"
        )
    loss_diff = abs(v["lorakit"]["loss"] - v["PEFT"]["loss"])
    print(
        f"ratios are lorakit/PEFT; |first-step loss difference| {loss_diff:.2e} (same weights, "
        "same batch)"
    )
    if device.type == "cuda":
        print(f"peak ratio lorakit/PEFT {v['lorakit']['peak'] / v['PEFT']['peak']:.3f}")
    return v, med, loss_diff


def print_inference(unet, args, device) -> tuple[dict, dict]:
    """Section 2: a no-grad forward of each variant, against the UNet without LoRA; returns the
    runs and their median times."""
    inf = infer_table(unet, args, device)
    imed = {k: statistics.median(x) for k, x in inf["times"].items()}
    print(
        f"\n2. Inference: no-grad UNet forward, batch {args.infer_batch}, median of {args.repeats} "
        f"after {args.warmup} warm-up"
    )
    print(f"{'variant':<17} {'forward ms':>11} {'vs no LoRA':>11}")
    for k, m in imed.items():
        print(f"{k:<17} {m * 1e3:11.1f} {m / imed['no LoRA']:11.3f}")
    print(
        f"max |output difference|: lorakit merged vs unmerged {inf['merge_diff']:.2e}, "
        f"PEFT vs lorakit unmerged {inf['peft_diff']:.2e}"
    )
    return inf, imed


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch", type=int, default=8, help="training batch (latents 4x16x16)")
    parser.add_argument("--infer-batch", type=int, default=16, help="inference batch")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed inference forwards per variant"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps/forwards first")
    parser.add_argument("--rank", type=int, default=4)
    args = parser.parse_args(argv)
    if (
        min(args.batch, args.infer_batch, args.steps, args.repeats, args.rank) < 1
        or args.warmup < 0
    ):
        parser.error(
            "--batch, --infer-batch, --steps, --repeats and --rank must be >= 1, --warmup >= 0"
        )

    device = torch.device(args.device)
    pipe = models.load_pipeline("tiny", device=device, dtype="float32")
    unet = pipe.unet.requires_grad_(False)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average {_common.load_average()}"
    )

    v, med, loss_diff = print_training(unet, scheduler, args, device)
    inf, imed = print_inference(unet, args, device)
    print(f"\nload average {_common.load_average()}")
    return dict(
        train_ms={k: m * 1e3 for k, m in med.items()},
        saved_bytes={k: x["saved"] for k, x in v.items()},
        loss_diff=loss_diff,
        infer_ms={k: m * 1e3 for k, m in imed.items()},
        merge_diff=inf["merge_diff"],
        peft_diff=inf["peft_diff"],
    )


if __name__ == "__main__":
    main()
