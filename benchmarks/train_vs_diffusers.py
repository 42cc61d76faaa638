"""``lorakit train`` beside diffusers' own LoRA training script, on one machine in one run:
``python -m benchmarks.train_vs_diffusers --diffusers PATH``.

``PATH`` is a diffusers checkout (its ``examples/text_to_image/train_text_to_image_lora.py``; the
script is never copied here) or the script itself; ``pip install datasets`` first, the script
loads the pictures with it. docs/measuring.md says how to run it against the course's CPU torch.

Both train on the 16 pictures of ``data/styles/outline`` with the tiny SD, as a user would, each in
its own process through ``benchmarks/step_clock.py`` (which stamps every optimizer step):

* **lorakit**: ``lorakit train --data data/styles/outline`` with its defaults;
* **lorakit, 300 steps at lr 1e-3**: the same with diffusers' budget (``--steps 300 --lr 1e-3``);
* **diffusers**: the script at 300 steps, batch 8, 64 px, rank 8, lr 1e-3, random flip (its
  defaults otherwise: LoRA on every attention projection, constant lr, no dropout).

The rounds are interleaved (``--repeats``, the order rotating each round); round k trains every
trainer with seed k. The table shows the median wall time (process start to exit, what a user
waits for) and the median gap between optimizer steps. Each LoRA file is then loaded into a fresh
tiny SD with diffusers' ``load_lora_weights`` and scored on the held-out prompts ("a blue circle in
sks style", ``--seeds`` sampling seeds each): style rate (outline), colour and shape accuracy, the
mean over the rounds' training seeds. The base model's row is the reference. Lesson:
notebooks/06_train_style_lora.ipynb.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import _common
from lorakit import models, styles

ROOT = Path(__file__).resolve().parent.parent
CLOCK = ROOT / "benchmarks" / "step_clock.py"
SCRIPT = Path("examples/text_to_image/train_text_to_image_lora.py")
BUDGET = dict(steps=300, batch=8, rank=8, lr=1e-3)


def script_path(given: str) -> Path:
    """The training script: ``given`` itself, or its place in a diffusers checkout."""
    path = Path(given)
    path = path / SCRIPT if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"--diffusers {given}: no {SCRIPT} there; give a diffusers checkout.")
    return path


# each trainer's output folder in a round's folder
FOLDERS = {
    "lorakit": "lorakit",
    "lorakit, 300 steps at lr 1e-3": "lorakit-300",
    "diffusers": "diffusers",
}


def commands(script: Path, model_dir: Path, out: Path, seed: int, steps: int | None = None):
    """The command line of each trainer, training seed ``seed``, writing into ``out`` /
    ``FOLDERS[name]`` (``steps``: every trainer's, for a quick look; None: lorakit's default and
    the budget's 300)."""
    data, budget = str(styles.OUTLINE_DIR), str(steps or BUDGET["steps"])
    lorakit = ["-m", "lorakit.cli", "train", "--data", data, "--quiet", "--seed", str(seed)]
    return {
        "lorakit": [
            *lorakit,
            "--out",
            str(out / FOLDERS["lorakit"]),
            *(["--steps", budget] if steps else []),
        ],
        "lorakit, 300 steps at lr 1e-3": [
            *lorakit,
            *("--out", str(out / FOLDERS["lorakit, 300 steps at lr 1e-3"]), "--steps", budget),
            *("--lr", str(BUDGET["lr"])),
        ],
        "diffusers": [
            str(script),
            *("--pretrained_model_name_or_path", str(model_dir), "--train_data_dir", data),
            *("--resolution", "64", "--train_batch_size", str(BUDGET["batch"])),
            *("--max_train_steps", budget, "--learning_rate", str(BUDGET["lr"])),
            *("--rank", str(BUDGET["rank"]), "--random_flip", "--seed", str(seed)),
            *("--output_dir", str(out / FOLDERS["diffusers"])),
        ],
    }


def lora_file(name: str, out: Path) -> Path:
    """The LoRA file trainer ``name`` wrote into ``out``."""
    file = "pytorch_lora_weights.safetensors" if name == "diffusers" else "lora.safetensors"
    return out / FOLDERS[name] / file


def run_one(args: list[str], times_file: Path, cwd: Path) -> tuple[float, float]:
    """(wall seconds, median seconds between optimizer steps) of one training process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(CLOCK), str(times_file), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{args[:3]} failed:\n{done.stderr[-3000:]}")
    stamps = json.loads(times_file.read_text())["step_times"]
    return wall, statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))


def score(path: Path | None, seeds: list[int]):
    """Held-out style, colour and shape of the tiny SD with the LoRA file at ``path`` (None: the
    base model), loaded by diffusers' ``load_lora_weights``."""
    from benchmarks import style_lora

    torch.manual_seed(0)
    pipe = models.load_pipeline("tiny", dtype="float32")
    if path is not None:
        pipe.load_lora_weights(str(path))
    return style_lora.evaluate(pipe, list(styles.OUTLINE_HELD_OUT), seeds, styles.TEMPLATE)


def main(argv: list[str] | None = None) -> dict:
    parser = _common.parser(__doc__)
    parser.add_argument("--diffusers", required=True, help="a diffusers checkout, or the script")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the trainers")
    parser.add_argument("--seeds", type=int, default=16, help="sampling seeds per held-out prompt")
    parser.add_argument(
        "--steps", type=int, default=None, help="every trainer's steps, for a quick look"
    )
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    script = script_path(args.diffusers)
    seeds = list(range(args.seeds))
    print(f"load average before: {_common.load_average()}")
    rows: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        models.load_pipeline("tiny", dtype="float32").save_pretrained(tmp / "tiny-sd")
        for k in range(args.repeats):
            out = tmp / f"round{k}"
            lines = list(commands(script, tmp / "tiny-sd", out, k, args.steps).items())
            for name, line in lines[k % len(lines) :] + lines[: k % len(lines)]:
                wall, step = run_one(line, tmp / "times.json", tmp)
                quality = score(lora_file(name, out), seeds)
                row = rows.setdefault(name, {"wall": [], "step": [], "quality": []})
                row["wall"].append(wall)
                row["step"].append(step)
                row["quality"].append(quality)
                print(
                    f"round {k + 1} (seed {k}), {name}: {wall:.1f} s, step {step * 1000:.0f} ms, "
                    f"style {quality.style_rate:.1%}, colour {quality.colour_accuracy:.1%}, "
                    f"shape {quality.shape_accuracy:.1%}",
                    flush=True,
                )
        base = score(None, seeds)
    return print_table(rows, base, args)


def print_table(rows: dict, base, args) -> dict:
    """Print the table; returns its figures by trainer."""
    n = len(base.records)
    print(
        f"\n== {args.repeats} rounds; wall and step: median; held-out quality ({n} pictures a "
        f"file): mean of the rounds' {args.repeats} training seeds =="
    )
    print(f"{'':<32}{'wall s':>8}{'step ms':>9}{'style':>8}{'colour':>8}{'shape':>8}{'x diff.':>9}")
    reference = statistics.median(rows["diffusers"]["wall"]) if "diffusers" in rows else None
    figures = {}
    for name, row in rows.items():
        wall, step = statistics.median(row["wall"]), statistics.median(row["step"]) * 1000
        style = statistics.fmean(q.style_rate for q in row["quality"])
        colour = statistics.fmean(q.colour_accuracy for q in row["quality"])
        shape = statistics.fmean(q.shape_accuracy for q in row["quality"])
        ratio = f"{wall / reference:>9.2f}" if reference else ""
        print(f"{name:<32}{wall:>8.1f}{step:>9.0f}{style:>8.1%}{colour:>8.1%}{shape:>8.1%}{ratio}")
        figures[name] = dict(
            wall=row["wall"], step=row["step"], style=style, colour=colour, shape=shape
        )
    print(
        f"{'base model, no LoRA':<32}{'':>8}{'':>9}{base.style_rate:>8.1%}"
        f"{base.colour_accuracy:>8.1%}{base.shape_accuracy:>8.1%}"
    )
    print(f"load average after: {_common.load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
