"""How long each lesson takes, under ``make test`` and in a student's own run:
``python -m benchmarks.notebook_times``.

Executes every notebook (or those named) with nbclient, in small mode and offline, several times
each, and prints a table: the median and every run, in test mode (``LORAKIT_TEST=1``, as ``make
test`` runs it) and in the student's mode (no ``LORAKIT_TEST``: the real steps and seeds). The
course's budgets, on a 2-core CPU: about a minute a lesson in test mode, at most 5 minutes (a class
period) in the student's. ``--modes test`` times test mode alone (a few minutes for all lessons);
the student's runs take the better part of an hour for three repeats.

Run it with nothing else busy on the machine: two torch jobs at once slow each other down.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from benchmarks import _common

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LORAKIT_MODE": "small",
    "MPLBACKEND": "Agg",
}
MODES = {"test": {"LORAKIT_TEST": "1"}, "student": {}}
BUDGET_S = {"test": 60, "student": 300}


def run_once(path: Path, mode: str) -> float:
    """Seconds to execute ``path`` top to bottom in a fresh kernel, in ``mode`` ("test" or
    "student")."""
    before = dict(os.environ)
    os.environ.update(OFFLINE)  # the kernel inherits this process's environment
    os.environ.pop("LORAKIT_TEST", None)
    os.environ.update(MODES[mode])
    try:
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(
            notebook,
            timeout=1800,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(before)


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__)
    parser.add_argument("notebooks", nargs="*", help="default: every notebooks/NN_*.ipynb")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--out", help="also write the runs as JSON")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or sorted(
        (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
    )
    results: dict[str, dict[str, list[float]]] = {}
    print(
        f"{os.cpu_count()} CPUs, median of {args.repeats} runs; budgets: "
        + ", ".join(f"{m} mode {BUDGET_S[m]} s" for m in args.modes),
        flush=True,
    )
    header = f"{'notebook':<34}" + "".join(
        f" {m + ' median s':>20}  {'runs':<22}" for m in args.modes
    )
    print(header, flush=True)
    for path in paths:
        row = results.setdefault(path.name, {})
        for mode in args.modes:
            row[mode] = [run_once(path, mode) for _ in range(args.repeats)]
        cells = "".join(
            f" {statistics.median(row[m]):>20.1f}  {', '.join(f'{t:.1f}' for t in row[m]):<22}"
            for m in args.modes
        )
        over = [m for m in args.modes if statistics.median(row[m]) > BUDGET_S[m]]
        print(
            f"{path.name:<34}{cells}{'  over budget: ' + ', '.join(over) if over else ''}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"cpus": os.cpu_count(), "repeats": args.repeats, "runs": results}, indent=1)
        )
    return results


if __name__ == "__main__":
    main()
