"""The lessons' visible checks: one PASS/FAIL line, and a FAIL that stops the run (and so fails
make test)."""

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit import checks


def test_close_passes_within_tolerance_and_prints_the_difference(capsys):
    assert (
        checks.close("two tensors", torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]), tol=1e-6)
        is None
    )
    line = capsys.readouterr().out
    assert line.startswith("PASS  two tensors: max |diff| = 1.00e-07"), line


def test_close_raises_on_fail_after_printing_it(capsys):
    with pytest.raises(checks.CheckFailed, match=r"FAIL  off by one: max \|diff\| = 1.00e\+00"):
        checks.close("off by one", [1, 2, 3], [1, 2, 4])
    assert capsys.readouterr().out.startswith("FAIL  off by one")


def test_a_check_failure_is_an_assertion_error_shown_as_one_line():
    with pytest.raises(AssertionError) as caught:
        checks.true("the rank is small", False, "rank 40 of 128")
    assert caught.value._render_traceback_() == [
        "\x1b[31mFAIL  the rank is small: rank 40 of 128\x1b[0m"
    ]


def test_shapes_that_differ_fail():
    with pytest.raises(checks.CheckFailed, match="inf"):
        checks.close("shapes", np.zeros((2, 3)), np.zeros((3, 2)), tol=1.0)


def test_same_pixels_reads_pil_images_and_lists_of_them(capsys):
    a = Image.new("RGB", (4, 4), (10, 20, 30))
    b = Image.new("RGB", (4, 4), (10, 20, 32))
    checks.same_pixels("one level off", [a, a], [a, b], tol=2)
    assert "max |pixel diff| = 2 " in capsys.readouterr().out
    with pytest.raises(checks.CheckFailed):
        checks.same_pixels("exactly", a, b)


def test_equal_and_true(capsys):
    checks.equal("names", ["a", "b"], ["a", "b"])
    with pytest.raises(checks.CheckFailed, match="got \\['a'\\], want \\['b'\\]"):
        checks.equal("names", ["a"], ["b"])
    checks.true("holds", 1 < 2)
    assert capsys.readouterr().out.splitlines() == [
        "PASS  names: ['a', 'b']",
        "FAIL  names: got ['a'], want ['b']",
        "PASS  holds",
    ]


def test_tensors_on_any_dtype_are_compared_in_float64():
    half = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    assert checks.max_difference(half, [1.0, 2.0]) == 0.0


def _nbval(tmp_path, check_cell: str):
    """Run a two-cell notebook (import, then ``check_cell``) through nbval as ``make notebooks``
    does."""
    import os
    import subprocess
    import sys

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from lorakit import checks"),
        nbformat.v4.new_code_cell(check_cell),
    ]
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nb, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--nbval-lax",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            str(path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )


def test_a_failing_check_cell_fails_the_notebook_run_and_a_passing_one_does_not(tmp_path):
    failed = _nbval(tmp_path, 'checks.close("off by one", [1, 2, 3], [1, 2, 4])')
    assert failed.returncode == 1 and "FAIL  off by one" in failed.stdout, failed.stdout[-2000:]
    passed = _nbval(tmp_path, 'checks.close("the same", [1, 2, 3], [1, 2, 3])')
    assert passed.returncode == 0, passed.stdout[-2000:]
