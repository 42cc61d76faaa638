"""The article's claims about LoRA, measured on the tiny SD:
``python -m benchmarks.claims --claim 2``.

One entry per claim (``--claim N``); each runs ``lorakit.claims``' experiments (which train with
``lorakit.train``: LoRA and, as the baseline, a full fine-tune of the UNet with the same loop, data,
seeds and objective; and judge with ``lorakit.metrics``), each run in a fresh process, prints a
table of the mean and standard error over training seeds (``--train-seeds``), and writes every run
as JSON (``--out``; ``--publish``: to docs/claims/, what lessons 09-10 show). Steps: 200 for claim
4, 150 for claim 9, 300 for the others (``--steps``). What each claim runs:

* **1, where LoRA sits** (``where_lora_sits``, and ``base_model``): the same rank and steps on
  ``attn2`` (cross-attention, the article's place), ``attn1``, both, the feed-forward layers,
  ``attn2+ff``, every linear layer, and a full fine-tune, for two kinds of change: a drawing style
  (the outline set; style rate and content on the held-out prompts) and a new meaning for a word
  ("a red vex" for red triangles; how often "a <colour> vex" draws a triangle, and of its colour);
  for both, whether the model still draws its own plain prompts right, and filled.
* **2 and 3, size and resources** (one experiment, :func:`resources_run`): LoRA (the small preset,
  rank 8 on ``attn2+ff``) against a full fine-tune on the outline set: trainable parameters, the
  file it saves, the optimizer's state, the median time of a training step, the process's peak
  memory (RSS, model included), and the steps and seconds each needs to reach a style rate of
  ``--target`` on the held-out prompts (4 prompts x 4 seeds, judged every ``--every`` steps up to
  ``--max-steps``). Each run is its own process, so that peak memories do not mix.
* **4, small data** (``small_data``, ``base_memorisation``): a learning-rate sweep on the whole
  outline set (``--lora-lrs``, ``--full-lrs``; first training seed), then LoRA r2, LoRA r8 and a
  full fine-tune on its first ``--sizes`` pictures at their best rate: style and content on the
  held-out prompts, plain prompts still right, and memorisation (``--plot``: learning against
  forgetting).
* **5, many kinds of models** (``text_encoder_lora``, ``where_lora_sits``, ``classifier_study``):
  "a red vex" taught by a LoRA in CLIP's text encoder and by one on the UNet's ``attn2``; a toy
  text classifier adapted to a shifted task by LoRA, a full fine-tune or its head alone.
* **6, combining** (``two_loras``, ``inversion_and_lora``, ``vae_ceiling``): the outline and
  striped LoRAs trained apart, then applied together and merged; "a red plim" = a red cross by
  textual inversion, a LoRA, or both trained together.
* **7, complex data** (``many_styles``, ``vae_ceiling``): one LoRA holding 1, 2 or 3 styles at
  each of ``--ranks`` (1 4 16), ``--steps-per-style`` steps a style.
* **8, large changes** (``large_change``): the cross by LoRA on ``attn2`` r8, ``attn2+ff`` r8, every
  linear layer r4 and r32, and a full fine-tune, with the rank of its update.
* **9, sensitivity** (``sensitivity``): the outline LoRA over ``--lrs`` x ``--ranks`` (2 16) x
  ``--alphas``, each run's outcome, also by lr x alpha and by lr x alpha / r.

Run it with nothing else busy on the machine: two torch jobs at once slow each other down.
The figures and verdicts are in docs/claims.md; the claims' code is in ``benchmarks.claims_1_to_5``
and ``benchmarks.claims_6_to_9``, how each run is made in ``benchmarks.claim_runs``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path

from benchmarks import _common, claim_runs, claims_1_to_5, claims_6_to_9
from lorakit import claims, files
from lorakit.claims import FULL_LR, WHERE

CLAIMS = (1, 2, 3, 4, 5, 6, 7, 8, 9)


def general_options(parser) -> None:
    """The options every claim reads, and how a report is written and reused."""
    parser.add_argument(
        "--claim",
        type=int,
        choices=CLAIMS,
        help="the claim to measure (2 and 3 are one experiment)",
    )
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--target", type=float, default=0.75, help="the style rate both must reach")
    parser.add_argument("--every", type=int, default=50, help="steps between judgements")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument(
        "--full-lr", type=float, help=f"full fine-tuning's learning rate (default {FULL_LR})"
    )
    parser.add_argument("--out", help="write the runs as JSON")
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="JSON",
        help="reports (--out) whose runs to take instead of training them again",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write them, with the table, to docs/claims/ "
        "(what lessons 09-10 and docs/claims.md show)",
    )


def claim_options(parser) -> None:
    """The options of one claim or another, and the hidden ones a child process reads."""
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=("style", "concept"),
        default=["style", "concept"],
        help="claim 1: a drawing style (the outline set), a new meaning for a word ('a red vex')",
    )
    parser.add_argument(
        "--variants", nargs="+", choices=list(WHERE), default=list(WHERE), help="claim 1: where"
    )
    parser.add_argument(
        "--steps", type=int, help="training steps (claim 4: 200, claim 9: 150, the others 300)"
    )
    parser.add_argument(
        "--one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS
    )  # one run, in a child
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[2, 4, 8, 16], help="claim 4: training pictures"
    )
    parser.add_argument(
        "--lora-lrs", type=float, nargs="+", default=[1e-3, 3e-3], help="claim 4: LoRA's sweep"
    )
    parser.add_argument(
        "--full-lrs",
        type=float,
        nargs="+",
        default=[3e-5, 1e-4],
        help="claim 4: full fine-tuning's",
    )
    parser.add_argument("--plot", help="claim 4: write the learning-forgetting plot (PNG) here")
    parser.add_argument(
        "--ranks", type=int, nargs="+", help="claims 7 and 9: LoRA ranks (default 1 4 16; 2 16)"
    )
    parser.add_argument(
        "--steps-per-style", type=int, default=150, help="claim 7: training steps per style"
    )
    parser.add_argument("--alphas", type=float, nargs="+", default=[1, 16], help="claim 9: alphas")
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=[1e-4, 1e-3, 1e-2, 1e-1],
        help="claim 9: learning rates",
    )
    parser.add_argument(
        "--run", nargs=2, metavar=("FUNCTION", "KWARGS"), help=argparse.SUPPRESS
    )  # in a child
    parser.add_argument("--lr", type=float, help=argparse.SUPPRESS)


RUNNERS = {
    1: claims_1_to_5.claim_1,
    2: claims_1_to_5.claim_2_3,
    3: claims_1_to_5.claim_2_3,
    4: claims_1_to_5.claim_4,
    5: claims_1_to_5.claim_5,
    6: claims_6_to_9.claim_6,
    7: claims_6_to_9.claim_7,
    8: claims_6_to_9.claim_8,
    9: claims_6_to_9.claim_9,
}


def main(argv: list[str] | None = None) -> dict | None:
    parser = _common.parser(__doc__)
    general_options(parser)
    claim_options(parser)
    args = parser.parse_args(argv)
    if args.one:
        method, seed = args.one
        print(
            json.dumps(
                claim_runs.resources_run(
                    method, int(seed), args.target, args.every, args.max_steps, args.lr
                )
            )
        )
        return None
    if args.run:
        function, kwargs = args.run
        print(json.dumps(getattr(claims, function)(**json.loads(kwargs))))
        return None
    if args.claim is None:
        parser.error("give --claim N, N from 1 to 9 (2 and 3 are one experiment)")
    args.steps = args.steps or {4: 200, 9: 150}.get(args.claim, 300)
    args.ranks = args.ranks or ([2, 16] if args.claim == 9 else [1, 4, 16])
    for path in args.reuse:
        claim_runs.reuse(path)
    claim_runs.CALLS.clear()
    printed = io.StringIO()
    with contextlib.redirect_stdout(claim_runs.Tee(sys.stdout, printed)):
        report = RUNNERS[args.claim](args)
    report |= {
        "train_seeds": args.train_seeds,
        "command": claim_runs.command_line(argv if argv is not None else sys.argv[1:]),
        "table": claims.table_of(printed.getvalue()),
        "calls": list(claim_runs.CALLS),
    }
    if args.publish:
        path = claims.published_path(args.claim)
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomically(path, json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LORAKIT_MODE", "small")
    main()
