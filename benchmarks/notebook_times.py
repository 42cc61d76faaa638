"""How long each lesson takes in small mode: ``python -m benchmarks.notebook_times``.

Executes every notebook (or those named) with nbclient, as ``make test`` does (small mode,
offline, ``LORAKIT_TEST=1``), several times each, and prints the median and every run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TEST_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LORAKIT_MODE": "small",
            "LORAKIT_TEST": "1", "MPLBACKEND": "Agg"}


def run_once(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="default: every notebooks/NN_*.ipynb")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="time the students' real runs (no LORAKIT_TEST)")
    args = parser.parse_args(argv)
    os.environ.update(TEST_ENV)
    if args.full:
        os.environ.pop("LORAKIT_TEST")
    paths = [Path(p) for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    print(f"{'notebook':<34} {'median s':>9}  runs (s), {os.cpu_count()} CPUs, LORAKIT_TEST={os.environ.get('LORAKIT_TEST', '0')}")
    for path in paths:
        times = [run_once(path) for _ in range(args.repeats)]
        print(f"{path.name:<34} {statistics.median(times):>9.1f}  {', '.join(f'{t:.1f}' for t in times)}", flush=True)


if __name__ == "__main__":
    main()
