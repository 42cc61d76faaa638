"""How the claims' experiments run: each ``lorakit.claims`` call in a fresh process, printed as it
comes, journalled as it finishes, and taken from an earlier report when it was measured before.

``benchmarks.claims`` (the nine claims) and ``benchmarks.controls`` (the controlled studies) both
run through :func:`child`; :data:`CALLS` is every run of the report being made, :data:`REUSE` the
runs given by ``--reuse``, :data:`JOURNAL` where each new run is added at once (a stopped study
loses no run). :func:`resources_run` is claims 2 and 3's run, measured in its own process so that
peak memories do not mix. :func:`cell` and :func:`seeds_line` format the tables.

Left out: the claims themselves (``benchmarks.claims_1_to_5``, ``benchmarks.claims_6_to_9``), the
verdicts (``benchmarks.verdicts``).
"""

from __future__ import annotations

import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _common
from lorakit import files
from lorakit.claims import FULL_LR


class Tee(io.TextIOBase):
    """A stream that writes to several (the terminal, and a buffer that keeps the table)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


CALLS: list[dict] = []  # every run of this report: {"function", "kwargs", "result"}
REUSE: dict[str, object] = {}  # runs measured before (--reuse), by function and arguments
JOURNAL: Path | None = None  # where every new run is added as it finishes (benchmarks.controls)


def journal(entry: dict) -> None:
    """Add one finished run to ``JOURNAL``'s calls, at once: a stopped study loses no run."""
    if JOURNAL is None:
        return
    kept = json.loads(JOURNAL.read_text()) if JOURNAL.exists() else {}
    kept["calls"] = [*kept.get("calls", []), entry]
    JOURNAL.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomically(JOURNAL, json.dumps(kept, indent=1))


def call_key(function: str, kwargs: dict) -> str:
    return function + json.dumps(kwargs, sort_keys=True)


def reuse(path: Path) -> None:
    """Take the runs of a report or journal (its ``calls``) into ``REUSE``, so that they are not
    trained again."""
    calls = json.loads(Path(path).read_text())["calls"]
    REUSE.update({call_key(c["function"], c["kwargs"]): c["result"] for c in calls})


def child(function: str, **kwargs) -> dict:
    """Run ``lorakit.claims.<function>(**kwargs)`` in a fresh process (so that runs share no state)
    and return its figures; print them as they come. A run given by ``--reuse`` (the same function
    and arguments) is taken from there instead: more training seeds add to a table without training
    the first ones again."""
    if call_key(function, kwargs) in REUSE:
        result = REUSE[call_key(function, kwargs)]
        CALLS.append({"function": function, "kwargs": kwargs, "result": result})
        return result
    command = [sys.executable, "-m", "benchmarks.claims", "--run", function, json.dumps(kwargs)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{function}({kwargs}) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    short = (
        {
            k: v
            for k, v in result.items()
            if k not in ("update_ranks", "curve", "rows", "update_ratios", "lora")
        }
        if isinstance(result, dict)
        else result
    )
    print(f"  {function} {json.dumps(kwargs)} -> {json.dumps(short)}", flush=True)
    CALLS.append({"function": function, "kwargs": kwargs, "result": result})
    journal(CALLS[-1])
    return result


def cell(values: list[float], percent: bool = True) -> str:
    """ "81% ± 4%" (mean ± standard error; no ± for one value)."""
    mean, se = _common.mean_se(values)
    if percent:
        return f"{mean:.0%}" + (f" ± {se:.0%}" if se else "")
    return f"{mean:.3g}" + (f" ± {se:.2g}" if se else "")


def seeds_line(args) -> str:
    n = len(args.train_seeds)
    seeds = " ".join(map(str, args.train_seeds))
    return f"{n} training seed{'s' if n > 1 else ''} ({seeds}); mean ± standard error"


def command_line(argv: list[str]) -> str:
    """The command that measures a report, without where it was written or read from (--out,
    --reuse, --plot)."""
    kept, skipping = [], False
    for word in argv:
        if word.startswith("--"):
            skipping = word in ("--out", "--reuse", "--plot", "--journal")
        if not skipping:
            kept.append(word)
    return " ".join(["python -m benchmarks.claims", *kept])


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def resources_run(
    method: str, seed: int, target: float, every: int, max_steps: int, lr: float | None
) -> dict:
    """One training run of ``method`` ("lora" or "full"), in this process: its sizes, times and
    progress."""
    from lorakit import claims, metrics, models, sample, styles, train

    pipe = models.load_pipeline("tiny", dtype="float32")
    dataset = claims.style_set()
    prompts = [p for p in styles.style_prompts() for _ in range(4)]
    seeds = list(range(4)) * len(styles.style_prompts())
    overrides = {"lr": lr} if lr else ({"lr": FULL_LR} if method == "full" else {})
    curve, seconds, step_seconds, reached = [], 0.0, [], None
    with tempfile.TemporaryDirectory() as out:
        for steps in range(every, max_steps + 1, every):  # train on, from the checkpoint, and judge
            cfg = train.TrainConfig.for_mode(
                "small",
                method=method,
                seed=seed,
                steps=steps,
                progress=False,
                output_dir=out,
                checkpoint_every=every,
                **overrides,
            )
            start = time.perf_counter()
            result = train.train_lora(pipe, dataset, cfg)
            seconds += time.perf_counter() - start
            step_seconds += result.step_seconds
            found = metrics.score_pictures(sample.generate(pipe, prompts, seeds), prompts)
            curve.append(
                {
                    "steps": steps,
                    "style_rate": found.style_rate,
                    "content": found.both_accuracy,
                    "train_seconds": seconds,
                }
            )
            if reached is None and found.style_rate >= target:
                reached = {"steps": steps, "train_seconds": seconds}
                break
        sizes = claims.saved_sizes(pipe, method, out)
    return {
        "method": method,
        "seed": seed,
        "lr": cfg.lr,
        "settings": claims.settings_of(cfg, "full" if method == "full" else None),
        **sizes,
        "step_seconds_median": statistics.median(step_seconds),
        "peak_rss_mb": _peak_rss_mb(),
        "reached": reached,
        "target": target,
        "curve": curve,
    }
