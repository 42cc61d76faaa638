"""What the benchmark scripts share: their command line's start, the machine's load, mean ± SE.

Every script is ``python -m benchmarks.<name>``, described by the first paragraph of its docstring
(:func:`parser`); those that draw pictures load the model seeded the same way
(:func:`seeded_pipeline`). A timing is printed with the machine's load average
(:func:`load_average`): figures taken on a busy machine are noisy. A figure over several training
seeds is their mean and its standard error (:func:`mean_se`).

Left out: the experiments themselves (one script each), plotting.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics

__all__ = ["load_average", "mean_se", "parser", "seeded_pipeline"]


def parser(doc: str, **kwargs) -> argparse.ArgumentParser:
    """A script's argument parser, described by the first paragraph of its docstring ``doc``."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], **kwargs)


def seeded_pipeline(args: argparse.Namespace):
    """``args.model`` on ``args.device`` in float32, with torch's generator seeded (0) first."""
    import torch  # here: not every script needs torch

    from lorakit import models

    torch.manual_seed(0)
    return models.load_pipeline(args.model, device=args.device, dtype="float32")


def load_average(last_minute: bool = False) -> str:
    """The machine's load average as the scripts print it: "1.02/0.95/0.80 (1/5/15 min)", or
    ``last_minute`` alone ("1.02")."""
    loads = os.getloadavg()
    if last_minute:
        return f"{loads[0]:.2f}"
    return "/".join(f"{x:.2f}" for x in loads) + " (1/5/15 min)"


def mean_se(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / sqrt(n); 0 for one value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)
