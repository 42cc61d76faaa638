"""Does the tiny SD draw what it is asked? ``python -m benchmarks.tiny_sd_quality``.

Scores the prompt grid (every colour x shape, 4 fixed seeds, the default sampler and guidance)
with lorakit's detectors, and times sampling a 4x4 grid (median of several runs).
"""

from __future__ import annotations

import statistics
import time

import torch
from diffusers import DPMSolverMultistepScheduler, PNDMScheduler

from benchmarks import _common
from lorakit import metrics, sample, shapes


def main(argv: list[str] | None = None) -> None:
    parser = _common.parser(__doc__)
    parser.add_argument(
        "--model", default="tiny", help="'tiny', a local pipeline directory or a hub id"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--scheduler",
        choices=["pipeline", "dpm", "pndm"],
        default="pipeline",
        help="the pipeline's own sampler, DPM-Solver++ (2M) or PNDM (SD 1.5's default), "
        "all on the pipeline's noise schedule",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed 4x4 grids")
    parser.add_argument("--save-grid", default=None, help="write the prompt grid as a PNG here")
    args = parser.parse_args(argv)

    pipe = _common.seeded_pipeline(args)
    samplers = {"dpm": DPMSolverMultistepScheduler, "pndm": PNDMScheduler}
    if args.scheduler in samplers:
        pipe.scheduler = samplers[args.scheduler].from_config(pipe.scheduler.config)
    print(f"{type(pipe.scheduler).__name__}, {args.steps or 'preset'} steps")

    def generate(prompts, seeds):
        return sample.generate(
            pipe,
            prompts,
            seeds,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            batch_size=32,
        )

    result = metrics.evaluate_grid(generate, seeds=tuple(range(args.seeds)))
    print(result.table())
    if args.save_grid:
        cols = args.seeds * len(shapes.SHAPES)
        sample.image_grid(result.images, cols=cols, scale=2).save(args.save_grid)

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sample.generate(
            pipe,
            "a red circle",
            seeds=list(range(16)),
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
        )
        times.append(time.perf_counter() - start)
    print(
        f"4x4 grid on {pipe.device}: median {statistics.median(times):.2f} s over {args.repeats} "
        "runs "
        f"({', '.join(f'{t:.2f}' for t in times)}), torch threads {torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
