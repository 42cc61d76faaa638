"""benchmarks/controls.py: each study pairs its runs by seed and reads its verdicts right (checked
with runs made up here, whose differences are known), and a stopped study resumes from its
journal without training a run twice."""

import json
import math
import statistics
import subprocess
from pathlib import Path

import pytest

from benchmarks import claim_runs as runner
from benchmarks import controls
from lorakit import claims

# Student's t, 97.5th percentile, by degrees of freedom (a printed table)
T_975 = {2: 4.302652730, 3: 3.182446305, 5: 2.570581836}


def t_interval(diffs):
    mean = statistics.fmean(diffs)
    half = T_975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return [mean, mean - half, mean + half]


def made_up(function, **kw):
    """A run's figures as the study reads them, from a formula of its arguments."""
    seed = kw.get("seed", 0)
    if function == "rank_run":
        r, c = kw["r"], kw["convention"]
        lr = kw.get("lr", 1e-3)
        style = 0.4 + 0.01 * seed + (0.3 + 0.02 * seed if (r == 16 and c == "alpha = r") else 0)
        style -= abs(math.log2(lr / 1e-3)) * 0.05
        return {
            "r": r,
            "convention": c,
            "seed": seed,
            "style_rate": style,
            "content": 0.9,
            "update_ratio_median": 0.01 * r,
            "settings": {"scaling": claims.alpha_for(c, r) / r},
        }
    if function == "truncated_update":
        row = lambda scope, k, cross: {"scope": scope, "k": k, "cross": cross}  # noqa: E731
        rows = [row("every weight", None, 0.6)]
        rows += [row("linear", k, 0.1 * (k or 4) / 4 + 0.01 * seed) for k in (1, 4, 8, 32, None)]
        rows += [row("linear+conv", k, 0.5 + 0.03 * seed) for k in (1, 4, 8, 32, None)]
        lora = {"r": 8, "cross": 0.0, "distance_trained": 1.2, "distance_truncated": 0.5}
        return {"seed": seed, "rows": rows, "lora": lora}
    if function == "two_loras_at_scales":
        together = {
            str(s): {
                "outline": 0.8 * s,
                "striped": 0.6 * s,
                "mean": 0.7 * s - 0.01 * seed,
                "content": 0.9,
                "plain_content": 1.0,
            }
            for s in kw["scales"]
        }
        alone_at = {
            str(s): {"outline": 0.85 * s, "striped": 0.65 * s, "mean": 0.75 * s + 0.01 * seed}
            for s in kw["scales"]
        }
        return {
            "seed": seed,
            "alone_mean": 0.7 + 0.01 * seed,
            "together": together,
            "alone_at": alone_at,
        }
    if function == "many_styles":
        full, count = kw["method"] == "full", kw["count"]
        mean = (0.9 if full else 0.8) - (0.05 if full else 0.3 + 0.02 * seed) * (count == 3)
        confusion = {
            s: {s: mean, "filled": 1 - mean, "content": 0.9} for s in claims.STYLE_ORDER[:count]
        }
        return {
            "count": count,
            "seed": seed,
            "mean_style": mean,
            "mean_content": 0.9,
            "confusion": confusion,
        }
    if function == "word_run":
        attn2 = kw["variant"] == "attn2"
        word = 0.9 if attn2 else 0.7
        control = 0.3 + 0.01 * seed if attn2 else 0.6
        plain = 0.6 + (0.2 + 0.01 * seed if kw.get("caption_dropout") == 0.0 else 0.0)
        return {
            "seed": seed,
            "word_shape": word,
            "control_shape": control,
            "specific": word - control,
            "plain_content": plain,
            "trainable_params": 1000 * kw["r"],
        }
    if function == "learning_curve":
        return made_up_curve(**kw)
    if function == "base_memorisation":
        return 0.15
    if function == "word_base":
        return {"word_shape": 0.3, "control_shape": 0.3}
    raise AssertionError(function)


# speed: (method, lr) -> (steps the style takes, content); 3e-4 draws it with the content lost
REACHES = {
    ("lora", 1e-3): (120, 0.9),
    ("lora", 3e-3): (60, 0.9),
    ("lora", 1e-2): (None, 0.9),
    ("full", 3e-5): (150, 0.9),
    ("full", 1e-4): (40, 0.8),
    ("full", 3e-4): (20, 0.3),
}


def made_up_curve(method, seed, lr, checkpoints, split="test", stop_at=None, size=None, **kw):
    if size is None:  # speed: on the test split LoRA needs 80 + 10 seed steps, full 40
        reach, content = REACHES[(method, lr)]
        if split == "test":
            reach = 80 + 10 * seed if method == "lora" else 40
        curve = []
        for at in checkpoints:
            style = 0.8 if reach is not None and at >= reach else 0.5
            curve.append(
                {"steps": at, "style_rate": style, "content": content, "train_seconds": at}
            )
            if stop_at and style >= stop_at[0] and content >= stop_at[1]:
                break
        return {"method": method, "seed": seed, "curve": curve}
    dropout = kw.get("lora_dropout", kw.get("unet_dropout_p"))
    if split == "validation":  # each method's best rate: its own
        best = (
            1e-4 if (method == "full" and dropout is None) else {"lora": 3e-3, "full": 3e-5}[method]
        )
        score = 0.9 if lr == best else 0.5
        return {"curve": [{"style_rate": score, "plain_content": score}]}
    point = {
        ("lora", None): {"memorised": 0.30, "plain_content": 0.9},
        ("lora", 0.0): {"memorised": 0.32 + 0.01 * seed, "plain_content": 0.88},
        ("full", None): {"memorised": 0.50 + 0.01 * seed, "plain_content": 0.6},
        ("full", 0.1): {"memorised": 0.45, "plain_content": 0.85 - 0.01 * seed},
    }[(method, dropout)] | {"style_rate": 0.7, "content": 0.6, "lr": lr}
    return {"seed": seed, "curve": [point | {"steps": at} for at in checkpoints]}


@pytest.fixture
def fake_child(monkeypatch, tmp_path):
    calls = []

    def child(function, **kw):
        calls.append((function, kw))
        return made_up(function, **kw)

    monkeypatch.setattr(runner, "child", child)
    monkeypatch.setattr(claims, "published_path", lambda study: tmp_path / f"{study}.json")
    return calls


def by_name(report):
    return {row["comparison"]: row for row in report["comparisons"]}


def test_the_rank_study_trains_the_anchor_rank_once_and_reads_each_convention(fake_child, capsys):
    report = controls.main(["--study", "rank", "--train-seeds", *map(str, range(6)), "--publish"])
    assert len(fake_child) == 6 * 7  # r 4: one run serves the three conventions
    rows = by_name(report)
    diffs = [0.3 + 0.02 * s for s in range(6)]
    assert rows["alpha = r: r 16 - r 1"]["t"] == pytest.approx(t_interval(diffs))
    assert rows["alpha = r: r 16 - r 1"]["verdict"] == "holds"
    assert rows["fixed alpha: r 16 - r 1"]["verdict"] == "does not hold"  # every difference 0
    assert "alpha = r: r 16 - r 1" in capsys.readouterr().out
    assert json.loads(claims.published_path("rank").read_text())["comparisons"][0]["margin"] == 0.1


def test_the_lr_grid_chooses_on_two_seeds_and_compares_on_the_others(fake_child):
    report = controls.main(["--study", "lrgrid", "--train-seeds", *map(str, range(6))])
    assert report["best_lr"] == {1: 1e-3, 16: 1e-3}
    judged = {kw["seed"] for f, kw in fake_child if kw.get("lr", 1e-3) == 1e-3}
    assert judged == set(range(6))
    assert all(kw["seed"] in (0, 1) for _, kw in fake_child if "lr" in kw)  # the grid's seeds
    (row,) = report["comparisons"]
    assert row["differences"] == pytest.approx([0.3 + 0.02 * s for s in range(2, 6)])


def test_claim_8_truncation_compares_rank_placement_and_training(fake_child):
    rows = by_name(controls.main(["--study", "truncation", "--train-seeds", "0", "1", "2", "3"]))
    assert rows["linear: whole - rank 8"]["differences"] == pytest.approx([-0.1] * 4)
    assert rows["linear: whole - rank 8"]["verdict"] == "holds"  # at most 0.10: no loss
    conv = [0.5 + 0.03 * s - (0.1 + 0.01 * s) for s in range(4)]
    assert rows["whole: linear + conv - linear"]["t"] == pytest.approx(t_interval(conv))
    trained = rows["rank 8 linear: truncated - trained LoRA"]
    assert trained["differences"] == pytest.approx([0.2 + 0.01 * s for s in range(4)])
    assert trained["verdict"] == "holds"


def test_seeds_given_out_of_order_are_paired_by_seed(fake_child):
    rows = by_name(controls.main(["--study", "complex", "--train-seeds", "3", "0", "2", "1"]))
    drops = [(0.3 + 0.02 * s) - 0.05 for s in range(4)]  # in seed order
    assert rows["drop 1 -> 3 styles: LoRA's - full's"]["differences"] == pytest.approx(drops)


def test_repeated_seeds_and_a_short_lr_grid_are_refused(fake_child):
    with pytest.raises(SystemExit):
        controls.main(["--study", "rank", "--train-seeds", "0", "0"])
    with pytest.raises(SystemExit):
        controls.main(["--study", "lrgrid", "--train-seeds", "0", "1", "2"])
    assert not fake_child  # refused before any run


def test_claim_1_control_word_and_caption_dropout(fake_child):
    report = controls.main(["--study", "placement", "--train-seeds", "0", "1", "2", "3"])
    rows = by_name(report)
    attn2 = [0.9 - (0.3 + 0.01 * s) for s in range(4)]
    route = [a - (0.7 - 0.6) for a in attn2]
    assert rows["specific: attn2 - attn1"]["t"] == pytest.approx(t_interval(route))
    assert rows["specific: attn2 - attn1"]["verdict"] == "holds"
    assert rows["specific: ff - attn2"]["verdict"] == "holds"  # at most 0.10: ff no better
    dropout = [0.2 + 0.01 * s for s in range(4)]
    assert rows["plain right: no caption dropout - 0.3"]["differences"] == pytest.approx(dropout)
    assert len(fake_child) == 4 * 4 + 1 and report["base"]["control_shape"] == 0.3


def test_claim_6_scales_and_claim_7_control(fake_child):
    rows = by_name(controls.main(["--study", "scales", "--train-seeds", "0", "1", "2", "3"]))
    assert rows["alone - together at 1.0"]["differences"] == pytest.approx(
        [0.02 * s for s in range(4)]
    )
    assert rows["alone - together at 1.0"]["verdict"] == "holds"
    assert rows["alone - together at 0.5"]["verdict"] == "does not hold"
    at_one = rows["alone at 1.0 - together at 1.0"]  # 0.05 s + 0.02 seed
    assert at_one["differences"] == pytest.approx([0.05 + 0.02 * s for s in range(4)])
    assert at_one["t"] == pytest.approx(t_interval([0.05 + 0.02 * s for s in range(4)]))
    assert at_one["verdict"] == "holds" and at_one["threshold"] == "scales-interference"
    rows = by_name(controls.main(["--study", "complex", "--train-seeds", "0", "1", "2", "3"]))
    drops = [(0.3 + 0.02 * s) - 0.05 for s in range(4)]
    assert rows["drop 1 -> 3 styles: LoRA's - full's"]["t"] == pytest.approx(t_interval(drops))
    assert rows["3 styles: full - LoRA"]["verdict"] == "holds"


def test_a_stopped_study_resumes_from_its_journal(monkeypatch, tmp_path):
    journal = tmp_path / "journal.json"
    started = []

    def run(command, **_):
        function, kwargs = command[-2], json.loads(command[-1])
        started.append(kwargs)
        if len(started) == 3:
            raise KeyboardInterrupt  # stopped during the third run
        return subprocess.CompletedProcess(command, 0, json.dumps(made_up(function, **kwargs)), "")

    monkeypatch.setattr(runner.subprocess, "run", run)
    monkeypatch.setattr(runner, "REUSE", {})
    args = ["--study", "rank", "--ranks", "1", "16", "--train-seeds", "0", "1"]
    with pytest.raises(KeyboardInterrupt):
        controls.main([*args, "--journal", str(journal)])
    assert len(json.loads(journal.read_text())["calls"]) == 2  # both finished runs were kept
    report = controls.main([*args, "--journal", str(journal)])
    assert len(started) == 3 + 10  # the two kept runs are not trained again
    assert len(report["calls"]) == 12 and "--journal" not in report["command"]


def figures():
    """docs/make_claim_figures.py, imported from its path (docs/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "docs" / "make_claim_figures.py"
    spec = importlib.util.spec_from_file_location("make_claim_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_figures_draw_the_published_means(fake_child, tmp_path):
    draw = figures()
    rank = controls.main(["--study", "rank", "--train-seeds", "0", "1", "2"])
    fig = draw.rank_study(rank)
    lines = {line.get_label(): line.get_ydata() for line in fig.axes[0].get_lines()}
    want = [
        statistics.fmean(0.4 + 0.01 * s + (0.3 + 0.02 * s) * (r == 16) for s in range(3))
        for r in (1, 4, 16)
    ]
    assert list(lines["alpha = r"]) == pytest.approx(want)
    truncation = controls.main(["--study", "truncation", "--train-seeds", "0", "1"])
    fig = draw.claim8_truncation(truncation)
    linear = fig.axes[0].get_lines()[0].get_ydata()
    assert list(linear) == pytest.approx([0.005 + 0.1 * k / 4 for k in (1, 4, 8, 32)] + [0.105])
    complex_ = controls.main(["--study", "complex", "--train-seeds", "0", "1"])
    fig = draw.claim7_confusion(complex_)
    # columns double, filled, outline, striped; the outline trigger's row, LoRA: 0.8 - 0.3 - 0.01
    assert [t.get_text() for t in fig.axes[0].texts][:4] == ["0%", "51%", "49%", "0%"]
    speed = controls.main(["--study", "speed", "--train-seeds", "0", "1", "2"])
    lines = draw.claim3_learning_curves(speed).axes[0].get_lines()
    lora_mean = next(line for line in lines if line.get_label().startswith("LoRA, lr 0.003"))
    # LoRA reaches 0.8 at 80 + 10 seed steps: the mean of seeds 1 and 2 at 100 steps is 0.8
    steps = list(lora_mean.get_xdata())
    assert lora_mean.get_ydata()[steps.index(90)] == pytest.approx(0.65)
    overfit = controls.main(["--study", "overfit", "--train-seeds", "0", "1", "2"])
    lines = draw.claim4_learning_forgetting(overfit).axes[0].get_lines()
    full = next(line for line in lines if line.get_label() == "full")
    assert list(full.get_xdata()) == pytest.approx([0.515] * 4)  # 0.50 + 0.01 x mean seed 1.5
    claim9 = claims.published(9)
    assert draw.claim9_heat_map(claim9).axes[0].images[0].get_array().shape == (4, 4)


def test_claim_3_speed_chooses_each_rate_on_the_validation_split_and_compares_steps(fake_child):
    report = controls.main(["--study", "speed", "--train-seeds", "0", "1", "2", "3"])
    assert report["best_lr"] == {"lora": 3e-3, "full": 1e-4}  # full's 3e-4 loses the content
    curves = [kw for f, kw in fake_child if f == "learning_curve"]
    choosing = [kw for kw in curves if kw.get("split") == "validation"]
    assert {kw["seed"] for kw in choosing} == {0} and len(choosing) == 6
    judged = [
        kw for f, kw in fake_child if f == "learning_curve" and kw.get("split") != "validation"
    ]
    assert sorted((kw["method"], kw["seed"], kw["lr"]) for kw in judged) == sorted(
        [("lora", s, 3e-3) for s in (1, 2, 3)] + [("full", s, 1e-4) for s in (1, 2, 3)]
    )
    assert judged[0]["checkpoints"] == list(range(10, 201, 10))
    (row,) = report["comparisons"]
    diffs = [40 - (80 + 10 * s) for s in (1, 2, 3)]
    assert row["differences"] == pytest.approx(diffs)
    assert row["t"] == pytest.approx(t_interval(diffs))
    assert row["verdict"] == "does not hold"


def test_claim_4_overfit_compares_regularised_methods_at_their_own_rates(fake_child):
    report = controls.main(["--study", "overfit", "--train-seeds", "0", "1", "2", "3", "4"])
    assert report["best_lr"] == {
        "LoRA r 8": 3e-3,
        "LoRA r 8, no dropout": 3e-3,
        "full": 1e-4,
        "full, dropout 0.1": 3e-5,
    }
    judged = [
        kw for f, kw in fake_child if f == "learning_curve" and kw.get("split") != "validation"
    ]
    assert {kw["seed"] for kw in judged} == {1, 2, 3, 4} and len(judged) == 16
    assert all(kw["size"] == 2 and kw["checkpoints"] == [50, 100, 150, 200] for kw in judged)
    rows = by_name(report)
    seeds = (1, 2, 3, 4)
    memorised = rows["memorised: full - LoRA r 8"]
    assert memorised["differences"] == pytest.approx([0.2 + 0.01 * s for s in seeds])
    assert memorised["verdict"] == "holds"
    dropout = rows["memorised: LoRA no dropout - dropout 0.1"]
    assert dropout["differences"] == pytest.approx([0.02 + 0.01 * s for s in seeds])
    assert dropout["t"] == pytest.approx(t_interval([0.02 + 0.01 * s for s in seeds]))
    assert dropout["verdict"] == "holds with a caveat"  # above 0, reaching the 0.05 margin
    forgetting = rows["plain right: LoRA no dropout - full+dropout"]
    assert forgetting["differences"] == pytest.approx([0.03 + 0.01 * s for s in seeds])
    assert forgetting["verdict"] == "does not hold"


@pytest.mark.parametrize("study", ["speed", "overfit"])
def test_the_curve_studies_need_a_seed_to_choose_and_two_to_compare(study, fake_child):
    with pytest.raises(SystemExit):
        controls.main(["--study", study, "--train-seeds", "0", "1"])


def test_the_overfit_study_runs_some_methods_and_only_their_comparisons(fake_child):
    picked = ["LoRA r 8", "LoRA r 8, no dropout", "full, dropout 0.1"]
    report = controls.main(
        ["--study", "overfit", "--train-seeds", "0", "1", "2", "--methods", *picked]
    )
    assert list(report["best_lr"]) == picked
    assert {r["name"] for r in report["runs"]} == set(picked)
    assert set(by_name(report)) == {
        "memorised: full+dropout - LoRA no dropout",
        "plain right: LoRA no dropout - full+dropout",
        "memorised: LoRA no dropout - dropout 0.1",
    }
