"""What several test files share: the ``lorakit_cli`` fixture, and the Hypothesis profiles of the fuzz test
of the LoRA reader (tests/test_fuzz.py).

``ci`` (the default, what ``make test`` runs): a fixed set of examples, the same on every run, that
fits in a minute. ``nightly``: 25,000 new examples a run, with no time limit on the whole
(``pytest tests/test_fuzz.py --hypothesis-profile nightly``; ``LORAKIT_FUZZ_EXAMPLES=N`` sets the
number of examples of either).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from lorakit import cli

EXAMPLES = {"ci": 400, "nightly": 25_000}
for name, examples in EXAMPLES.items():
    fixed = (
        {"derandomize": True, "database": None} if name == "ci" else {}
    )  # ci: the same examples, nothing saved
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
