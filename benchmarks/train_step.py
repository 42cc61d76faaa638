"""Where a training step's time goes: ``python -m benchmarks.train_step``.

One table, on the tiny SD with the lessons' preset (``TrainConfig.for_mode("small")``: a rank-8
LoRA on ``attn2+ff`` with LoRA dropout 0.1, batch 8; ``lorakit train`` runs it without the
dropout, the third row): the median time of

* **the step**: ``train.steps.training_step``, everything the loop does for one optimizer step
  (batch draw, noise, loss with min-SNR weights, backward, clipping, AdamW);
* **bare forward + backward**: the same UNet with the same LoRA in train mode (its dropout on) on
  the same batch: noised latents in, MSE against the noise, ``backward``, gradients cleared;
* **bare, dropout off**: the same in eval mode, what the LoRA dropout costs.

The three are interleaved step by step (``--steps`` of each after ``--warmup``), so that drift on a
shared machine hits them alike. The loop's overhead is the step over the bare forward and backward;
the goal is at most 10%. ``--profile`` also prints torch's profiler table of a few steps, by self
CPU time. Lesson: notebooks/06_train_style_lora.ipynb.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks import _common
from lorakit import imagefolder, models, styles, train
from lorakit.train import loop, steps


def _bare(run, batch) -> None:
    """One forward and backward of the UNet with its LoRA on ``batch``, gradients cleared after."""
    latents, t, noise, context = batch  # the plain epsilon MSE: no min-SNR weights
    train.epsilon_loss(
        run.pipe.unet, run.noise_scheduler, latents, context, t, noise, None, run.dtype
    ).backward()
    for p in run.params:
        p.grad = None


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(run, n_steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each of the three, interleaved, ``n_steps`` each after ``warmup``."""
    unet = run.pipe.unet
    idx, t, noise, rows = steps.draw_batch(run, 0)
    batch = (run.latents[idx], t, noise, run.embeddings[rows])
    times = {"step": [], "bare": [], "bare, dropout off": []}
    for k in range(warmup + n_steps):
        unet.train()
        step = _timed(lambda k=k: steps.training_step(run, k))
        bare = _timed(lambda: _bare(run, batch))
        unet.eval()
        plain = _timed(lambda: _bare(run, batch))
        if k >= warmup:
            for name, seconds in zip(times, (step, bare, plain), strict=True):
                times[name].append(seconds)
    unet.train()
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = _common.parser(__doc__)
    parser.add_argument("--steps", type=int, default=40, help="timed steps of each")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--profile", action="store_true", help="also torch's profiler table")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    pipe = models.load_pipeline("tiny", dtype="float32")
    dataset = imagefolder.ImageFolderDataset(styles.OUTLINE_DIR, resolution=64)
    cfg = train.TrainConfig.for_mode("small", progress=False)
    run = loop.start_run(pipe, dataset, cfg)
    print(f"load average before: {_common.load_average()}, torch threads {torch.get_num_threads()}")
    times = measure(run, args.steps, args.warmup)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"\n{'median of ' + str(args.steps) + ' (ms)':<28}{'':>8}")
    for name, ms in medians.items():
        print(f"{name:<28}{ms:>8.1f}")
    overhead = medians["step"] / medians["bare"] - 1
    dropout = medians["bare"] / medians["bare, dropout off"] - 1
    print(f"{'loop overhead over bare':<28}{overhead:>8.1%}  (goal <= 10%)")
    print(f"{'LoRA dropout over no dropout':<28}{dropout:>8.1%}")
    print(f"load average after: {_common.load_average()}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for k in range(10):
                steps.training_step(run, k)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return medians


if __name__ == "__main__":
    main()
