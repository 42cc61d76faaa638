"""benchmarks/_common.py: the mean and its standard error, the load average as the scripts print
it, and each script's parser described by its docstring's first paragraph."""

import re

import pytest

from benchmarks import _common, claims, lora_algebra


def test_mean_se_is_the_sample_standard_deviation_over_sqrt_n():
    assert _common.mean_se([0.5, 1.0, 0.75]) == pytest.approx((0.75, 0.25 / 3**0.5))
    assert _common.mean_se([0.4]) == (0.4, 0.0)  # one value: no spread to speak of


def test_load_average_reads_like_the_scripts_print_it():
    assert re.fullmatch(r"\d+\.\d\d/\d+\.\d\d/\d+\.\d\d \(1/5/15 min\)", _common.load_average())
    assert re.fullmatch(r"\d+\.\d\d", _common.load_average(last_minute=True))


@pytest.mark.parametrize("script", [claims, lora_algebra])
def test_a_parser_is_described_by_the_first_paragraph_of_the_docstring(script):
    first = " ".join(script.__doc__.split("\n\n")[0].split())
    assert " ".join(_common.parser(script.__doc__).format_help().split()).count(first) == 1
