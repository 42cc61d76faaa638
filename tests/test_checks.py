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


def test_forbidden_makes_a_modules_functions_raise_however_they_are_reached(capsys):
    from lorakit import lowrank
    from lorakit.lowrank import low_rank_approx as renamed

    W = torch.randn(5, 3)
    alias = lowrank.svd
    for call in (lambda: lowrank.low_rank_approx(W, 1), lambda: renamed(W, 1), lambda: alias(W)):
        with pytest.raises(checks.CheckFailed, match=r"lorakit\.lowrank\.\w+ was called"):
            with checks.forbidden(lowrank):
                call()
    assert capsys.readouterr().out.startswith("FAIL  lorakit.lowrank.low_rank_approx was called")
    # after the block, every function works again, aliases too
    checks.close("restored", renamed(W, 3), W, tol=1e-5)
    assert alias(W)[1].shape == (3,)


def test_forbidden_fails_a_call_that_the_students_code_catches():
    from lorakit import lowrank

    def sly(W):
        try:
            return lowrank.low_rank_approx(W, 1)
        except Exception:
            return W

    with pytest.raises(checks.CheckFailed, match="low_rank_approx was called: write it"):
        with checks.forbidden(lowrank, why="write it"):
            sly(torch.eye(3))


def test_forbidden_reaches_a_class_inside_or_under_the_students_own():
    from torch import nn

    from lorakit import lora

    class Wrapper(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.inner = lora.LoRALinear(base, r=2)

    class Subclass(lora.LoRALinear):
        pass

    for make in (Wrapper, lambda base: Subclass(base, r=2)):
        with pytest.raises(checks.CheckFailed, match=r"lorakit\.lora\.LoRALinear\.__init__"):
            with checks.forbidden(lora):
                make(nn.Linear(4, 3))
    assert Subclass(nn.Linear(4, 3), r=2).scaling == 1.0  # a method with super()'s cell, restored


def test_forbidden_leaves_what_it_does_not_name_and_refuses_what_it_cannot_swap():
    from lorakit import lora, lowrank

    with checks.forbidden(lowrank.svd):
        assert lowrank.energy(torch.tensor([3.0, 4.0])).tolist() == pytest.approx([0.36, 1.0])
        assert lora.count_parameters(torch.nn.Linear(2, 2)) == 6
    with pytest.raises(TypeError, match="modules, classes and Python functions"):
        with checks.forbidden(torch.matmul):
            pass


def test_forbidden_reaches_the_function_a_partial_calls():
    from lorakit import models

    unet = torch.nn.Linear(3, 2)
    with pytest.raises(checks.CheckFailed, match="count_parameters was called"):
        with checks.forbidden(models.count_parameters):
            models.count_parameters(unet)
    assert models.count_parameters(unet) == 8


def test_record_calls_counts_every_call_and_returns_what_the_function_returned():
    def detect(image, *, scale=2):
        return image * scale

    def through_another_name(image):
        return detect(image)

    calls = checks.record_calls(detect)
    assert [detect(1), through_another_name(2), detect(3, scale=10)] == [2, 4, 30]
    assert calls == [2, 4, 30]
