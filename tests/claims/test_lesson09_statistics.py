"""Lesson 09, section 2 and exercise 4: the visible check of ``paired_interval`` passes the
solution and fails the wrong answers students write, and the figures the worked example quotes
are those of the published runs (docs/claims/claim4.json)."""

from pathlib import Path

import nbformat
import numpy as np
import pytest
from scipy import stats

from lorakit import checks, claims

LESSON = Path(__file__).resolve().parents[2] / "notebooks" / "09_claims_advantages.ipynb"


@pytest.fixture(scope="module")
def lesson():
    return nbformat.read(LESSON, as_version=4)


@pytest.fixture(scope="module")
def exercise(lesson):
    """The solution cell defining ``paired_interval`` and the check cell after it."""
    code = [c for c in lesson.cells if c.cell_type == "code"]
    found = [
        i
        for i, c in enumerate(code)
        if "def paired_interval(" in c.source and "### BEGIN SOLUTION" in c.source
    ]
    assert len(found) == 1, "one solution cell defines paired_interval"
    assert found[0] + 1 < len(code), "a check cell follows the solution"
    return code[found[0]].source, code[found[0] + 1].source


def run_check(check_source, paired_interval):
    """Run the check cell as the lesson does, with the names its setup cell imports."""
    namespace = {
        "np": np,
        "stats": stats,
        "checks": checks,
        "claims": claims,
        "paired_interval": paired_interval,
    }
    exec(compile(check_source, "exercise 4's check", "exec"), namespace)


def seed_pairs(a, b):
    return np.array([a[seed] - b[seed] for seed in sorted(a)])


def interval(d, multiplier, ddof=1):
    half = multiplier * d.std(ddof=ddof) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def population_sd(a, b):
    d = seed_pairs(a, b)
    return interval(d, stats.t.ppf(0.975, len(d) - 1), ddof=0)


def normal_196(a, b):
    return interval(seed_pairs(a, b), 1.96)


def n_degrees_of_freedom(a, b):
    d = seed_pairs(a, b)
    return interval(d, stats.t.ppf(0.975, len(d)))


def ninety_percent(a, b):
    d = seed_pairs(a, b)
    return interval(d, stats.t.ppf(0.95, len(d) - 1))


def unpaired(a, b):
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    se = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    mean = x.mean() - y.mean()
    half = stats.t.ppf(0.975, len(x) - 1) * se
    return mean, mean - half, mean + half


def paired_by_dict_position(a, b):
    d = np.array(list(a.values())) - np.array(list(b.values()))
    return interval(d, stats.t.ppf(0.975, len(d) - 1))


def paired_after_sorting_values(a, b):
    d = np.array(sorted(a.values())) - np.array(sorted(b.values()))
    return interval(d, stats.t.ppf(0.975, len(d) - 1))


def the_other_way_round(a, b):
    d = -seed_pairs(a, b)
    return interval(d, stats.t.ppf(0.975, len(d) - 1))


def lorakits_interval(a, b):
    found = claims.t_interval(seed_pairs(a, b))
    return found.mean, found.low, found.high


def scipys_test(a, b):
    seeds = sorted(a)
    test = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    return (seed_pairs(a, b).mean(), *test.confidence_interval(0.95))


WRONG = [
    lorakits_interval,
    scipys_test,
    population_sd,
    normal_196,
    n_degrees_of_freedom,
    ninety_percent,
    unpaired,
    paired_by_dict_position,
    paired_after_sorting_values,
    the_other_way_round,
]


def test_the_solution_passes_the_check(exercise, capsys):
    solution, check = exercise
    namespace = {"np": np, "stats": stats}
    exec(compile(solution, "exercise 4's solution", "exec"), namespace)
    run_check(check, namespace["paired_interval"])
    assert capsys.readouterr().out.startswith("PASS")


@pytest.mark.parametrize("wrong", WRONG, ids=lambda f: f.__name__)
def test_the_check_fails_a_wrong_answer(exercise, wrong, capsys):
    with pytest.raises(checks.CheckFailed):
        run_check(exercise[1], wrong)
    assert capsys.readouterr().out.startswith("FAIL")


def test_the_check_compares_with_scipy_and_keeps_the_ready_made_tests_off_limits(exercise):
    check = exercise[1]
    assert "ttest_rel" in check
    off_limits = next(line for line in check.splitlines() if "checks.forbidden(" in line)
    assert "stats.ttest_rel" in off_limits and "claims.t_interval" in off_limits
    assert "claims." not in check.replace(off_limits, ""), "the reference is SciPy's, not lorakit's"


def test_the_worked_example_quotes_the_published_runs(lesson):
    """Section 2's prose against claim 4's runs: LoRA r8 and the full fine-tune on 2 pictures."""
    runs = claims.published(4)["runs"]

    def memorised(name, size):
        return {r["seed"]: r["memorised"] for r in runs if r["name"] == name and r["size"] == size}

    prose = "\n".join(c.source for c in lesson.cells if c.cell_type == "markdown")
    lora, full = memorised("LoRA r8", 2), memorised("full fine-tune", 2)
    for figures in (lora, full):
        values = list(figures.values())
        quoted = f"{np.mean(values):.2f} ± {claims.standard_error(values):.2f}"
        assert quoted in prose, quoted
    differences = claims.paired_differences(lora, full, direction=-1)
    threshold = claims.Threshold(0.05, "memorised IoU, full fine-tune minus LoRA r8")
    t_int, boot = claims.t_interval(differences), claims.bootstrap_interval(differences)
    for found in (t_int, boot):
        quoted = f"[{found.low:+.2f}, {found.high:+.2f}]"
        assert quoted in prose, quoted
    assert claims.verdict(t_int, threshold) == "undecided"
    assert "The verdict on this comparison is **undecided**" in prose
    # the margin is written down before the differences are computed
    code = "\n".join(c.source for c in lesson.cells if c.cell_type == "code")
    assert code.index("claims.Threshold(0.05") < code.index("claims.paired_differences(")
