"""Run a training script with a clock on its optimizer steps, and torchvision's stand-in if needed.

Not a lesson's concept: ``benchmarks.train_vs_diffusers`` runs both trainers through it, alike:
``python benchmarks/step_clock.py TIMES.json SCRIPT.py ARGS...`` (or ``-m MODULE ARGS``).
A global optimizer hook (``register_optimizer_step_post_hook``) writes the time of every
optimizer step to ``TIMES.json`` when the script exits: the step time is the median gap between
them, measured alike for any trainer that uses a ``torch.optim`` optimizer.

When torchvision is not installed, transformers' and diffusers' checks are made first (they find
no torchvision and cache that), then ``benchmarks/stand_ins`` goes first on ``sys.path``: the
script's ``from torchvision import transforms`` gets the stand-in, and nothing else sees it. An
installed torchvision that does not load (PyPI's, against the CPU torch) is refused in one line.

Left out: scripts that call torchvision beyond the transforms the stand-in has.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import json
import runpy
import sys
import time
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook


def _torchvision_or_stand_in() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import torchvision  # noqa: F401  (a working install is used as it is)
        except Exception as error:  # PyPI's CUDA wheel against the CPU torch
            raise SystemExit(
                f"torchvision is installed but does not load against this torch ({error}): "
                "pip uninstall torchvision (its stand-in then serves the script), or pip install "
                "torchvision --index-url https://download.pytorch.org/whl/cpu"
            ) from None
    else:
        importlib.import_module("diffusers.utils.import_utils")  # its check runs on import
        imports = importlib.import_module("transformers.utils.import_utils")
        imports.is_torchvision_available()  # cached False before the stand-in is on the path
        imports.is_torchvision_v2_available()
        sys.path.insert(0, str(Path(__file__).parent / "stand_ins"))


def main(argv: list[str]) -> None:
    times_file, target, *rest = argv
    stamps: list[float] = []
    register_optimizer_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    atexit.register(lambda: Path(times_file).write_text(json.dumps({"step_times": stamps})))
    _torchvision_or_stand_in()
    if target == "-m":
        module, *rest = rest
        sys.argv = [module, *rest]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *rest]
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
