"""What the tests share: each lesson's cells kept together on one worker, the tiny SD loaded once
a test process, a trained-looking LoRA, the pictures a test compares, the ``lorakit_cli`` fixture,
and the Hypothesis profiles of the fuzz test of the LoRA reader (tests/formats/test_fuzz.py).

``shared_pipe`` is loaded once and must not change: a test that changes a pipeline takes ``pipe``
(its own copy) or copies ``shared_pipe`` in a fixture of its own; the session fails if the shared
one was changed. Helpers that module-scoped fixtures need too (``randomize_lora``, ``pictures``)
are session fixtures that return the function.

Hypothesis: ``ci`` (the default, what ``make test`` runs) is a fixed set of examples, the same on
every run, that fits in a minute. ``nightly``: 25,000 new examples a run, with no time limit on the
whole (``pytest tests/formats/test_fuzz.py --hypothesis-profile nightly``;
``LORAKIT_FUZZ_EXAMPLES=N`` sets the number of examples of either).
"""

import copy
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from lorakit import cli, inject, models, sample

EXAMPLES = {"ci": 400, "nightly": 25_000}
for name, examples in EXAMPLES.items():
    fixed = {"derandomize": True, "database": None} if name == "ci" else {}  # ci: nothing saved
    settings.register_profile(
        name,
        max_examples=int(os.environ.get("LORAKIT_FUZZ_EXAMPLES", examples)),
        deadline=5000,  # ms an example may take: a refused file is refused quickly
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
        **fixed,
    )
settings.load_profile("ci")


def fingerprint(pipe) -> dict:
    """What a test must not change in the shared pipeline: every weight's sum, and its modules."""
    return {
        part: (
            [type(m).__name__ for m in getattr(pipe, part).modules()],
            [float(p.double().sum()) for p in getattr(pipe, part).state_dict().values()],
        )
        for part in ("unet", "text_encoder", "vae")
    }


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """`make test` runs the lessons beside the tests: a notebook's cells stay together, in order,
    on one worker (an xdist group of their own, as the classroom loop's tests have)."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.xdist_group(f"notebook-{item.path.stem}"))


@pytest.fixture(scope="session")
def shared_pipe():
    """The tiny SD on the CPU in float32, loaded once a test process: read it, never change it."""
    pipe = models.load_pipeline("tiny", device="cpu", dtype="float32")
    before = fingerprint(pipe)
    yield pipe
    assert fingerprint(pipe) == before, "a test changed shared_pipe: take the `pipe` fixture"


@pytest.fixture
def pipe(shared_pipe):
    """This test's own copy of the tiny SD, free to change."""
    return copy.deepcopy(shared_pipe)


def _randomize_lora(model, std: float = 0.05, seed: int = 1) -> None:
    """A trained-looking LoRA: every B drawn from N(0, std^2), since B = 0 hides every mistake."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, layer in inject.lora_layers(model):
            layer.lora_B.weight.normal_(std=std)


def _pictures(pipe, prompt: str = "a red circle", seeds=(0,), steps: int = 2) -> np.ndarray:
    """What ``pipe`` draws for ``prompt`` in ``steps`` steps, as one array (seeds, H, W, 3)."""
    return np.stack(
        sample.generate(
            pipe, prompt, seeds=list(seeds), num_inference_steps=steps, output_type="np"
        )
    )


@pytest.fixture(scope="session")
def randomize_lora():
    """``randomize_lora(model, std=0.05, seed=1)``: make a model's LoRA look trained."""
    return _randomize_lora


@pytest.fixture(scope="session")
def pictures():
    """``pictures(pipe, prompt="a red circle", seeds=(0,), steps=2)``: what a pipeline draws."""
    return _pictures


@pytest.fixture
def lorakit_cli(capsys):
    """``lorakit ARGV`` in-process: ``lorakit_cli(*argv)`` returns (exit code, stdout, stderr)."""

    def run(*argv):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit:
            code = exit.code
        return code, *capsys.readouterr()

    return run
