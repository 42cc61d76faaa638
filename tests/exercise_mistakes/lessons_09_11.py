"""The mistakes students make in the exercises of lessons 09 to 11
(tests/lesson_exercises.py tries them)."""

FILE_NUMBERS = "r * (modules[n].in_features + modules[n].out_features)"
PAIRED = "d = np.array([a[seed] - b[seed] for seed in sorted(a)])"
KEPT = 'return "lora" if kept["lora"] >= kept["full"] else "full"'
CEIL = "int(np.ceil(fraction_of_layers * len(ranks_sorted))) - 1"
LEFT_OUT = ' and not (run["lr"] == lr and run["alpha"] == alpha)'
DISTANCE = 'abs(np.log(run["lr"] * run["alpha"] / (lr * alpha)))'
ENERGY_90 = "kept = torch.cumsum(s.double() ** 2, dim=0) / (s.double() ** 2).sum()"
CONCAT_B = "w * weights.scaling_of(m) * weights.B[m]"
RESIZE_ENERGY = "(s[:k].double() ** 2).sum() / (s.double() ** 2).sum()"

MISTAKES: dict[str, dict[str, dict]] = {
    "09": {
        "d706ac6f": {  # lora_file_numbers
            "lorakit's count": "def lora_file_numbers(pipe, r, target_modules):\n"
            "    return inject.lora_parameter_count(pipe.unet, r, target_modules)\n",
            "the full matrices": [
                (FILE_NUMBERS, "modules[n].in_features * modules[n].out_features")
            ],
            "r times in times out": [
                (FILE_NUMBERS, "r * modules[n].in_features * modules[n].out_features")
            ],
            "attn2 only": [
                ("find_targets(pipe.unet, target_modules)", 'find_targets(pipe.unet, "attn2")')
            ],
            "the biases too": [(FILE_NUMBERS, f"{FILE_NUMBERS} + modules[n].out_features")],
        },
        "944e533a": {  # delta
            "zeros": "def delta(state, name):\n    return torch.zeros(())\n",
            "transposed": "def delta(state, name):\n"
            '    A, B = state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"]\n'
            "    return A.T @ B.T\n",
            "divided by r": [("]\n", '] / state[f"{name}.lora_A.weight"].shape[0]\n')],
            "A and B swapped": [
                (
                    'lora_B.weight"] @ state[f"{name}.lora_A',
                    'lora_A.weight"] @ state[f"{name}.lora_B',
                )
            ],
        },
        "b47887ef": {  # forgets_less
            "sums, not means": [("np.mean(", "np.sum(")],
            "the best run": [("np.mean(", "np.max(")],
            "the first run": [("np.mean([", "next(iter(["), ("== m])", "== m]))")],
            "the one that forgets more": [
                (KEPT, 'return "full" if kept["lora"] >= kept["full"] else "lora"')
            ],
            "a tie goes to full": [(">= kept", "> kept")],
        },
        "7d4855b3": {  # paired_interval
            "paired by position": [
                (PAIRED, "d = np.array([x - y for x, y in zip(a.values(), b.values())])")
            ],
            "1.96, not t": [("stats.t.ppf(0.975, len(d) - 1)", "1.96")],
            "ddof 0": [("d.std(ddof=1)", "d.std()")],
            "one-sided 95 %": [("stats.t.ppf(0.975", "stats.t.ppf(0.95")],
            "SciPy's test": "def paired_interval(a, b):\n    seeds = sorted(a)\n"
            "    test = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])\n"
            "    return (np.mean([a[s] - b[s] for s in seeds]), *test.confidence_interval(0.95))\n",
        },
    },
    "10": {
        "cell-27": {  # rank_needed
            "rounded down": [("np.ceil", "np.floor")],
            "no minus one": [(CEIL, "int(np.ceil(fraction_of_layers * len(ranks_sorted)))")],
            "largest first": [
                ("sorted(row", "sorted((row"),
                ("in rows)", "in rows), reverse=True)"),
            ],
            "a quantile": "def rank_needed(rows, fraction_of_layers):\n"
            '    return int(np.quantile([row["rank"] for row in rows], fraction_of_layers))\n',
            "the largest rank": [(f"[{CEIL}]", "[-1]")],
        },
        "cell-30": {  # predict_outcome
            "the setting itself kept": [(LEFT_OUT, "")],
            "the learning rate alone": [(DISTANCE, 'abs(np.log(run["lr"] / lr))')],
            "a difference, not a ratio": [(DISTANCE, 'abs(run["lr"] * run["alpha"] - lr * alpha)')],
            "every rank": [('run["r"] == r and ', "")],
            "the first nearest run": [
                ("collections.Counter(nearest).most_common(1)[0][0]", "nearest[0]")
            ],
        },
        "cell-33": {  # name_outcome
            "lorakit's rule": "def name_outcome(run):\n    return claims.outcome(run)\n",
            "nothing learned first": [
                (
                    '    if run["content"] < 0.25 and run["plain_content"] < 0.5:\n'
                    '        return "content destroyed"\n'
                    '    if run["style_rate"] < 0.25:\n'
                    '        return "nothing learned"\n',
                    '    if run["style_rate"] < 0.25:\n'
                    '        return "nothing learned"\n'
                    '    if run["content"] < 0.25 and run["plain_content"] < 0.5:\n'
                    '        return "content destroyed"\n',
                )
            ],
            "or, not and": [("< 0.25 and run", "< 0.25 or run")],
            "above 60 %, not at least": [(">= 0.6", "> 0.6")],
            "the plain prompts forgotten": [(', run["plain_content"]) >= 0.6', ") >= 0.6")],
            "25 % counted as nothing": [('run["style_rate"] < 0.25', 'run["style_rate"] <= 0.25')],
        },
    },
    "11": {
        "cell-40": {  # rank_for_90
            "lorakit's rank_for_energy": "def rank_for_90(s):\n"
            "    return svd_tools.rank_for_energy(s, 0.9)\n",
            "s, not s squared": [
                (ENERGY_90, "kept = torch.cumsum(s.double(), dim=0) / s.double().sum()")
            ],
            "at most 90 %": [("(kept < 0.9)", "(kept <= 0.9)")],
            "no plus one": [(".sum()) + 1", ".sum())")],
            "90 % of the values": "def rank_for_90(s):\n    return math.ceil(0.9 * len(s))\n",
        },
        "cell-43": {  # concat_factors
            "lorakit's merge": "def concat_factors(items, m):\n"
            '    merged = svd_tools.merge(items, method="concat")\n'
            "    return merged.B[m] * merged.scaling_of(m), merged.A[m]\n",
            "no scaling": [(CONCAT_B, "w * weights.B[m]")],
            "no weight": [(CONCAT_B, "weights.scaling_of(m) * weights.B[m]")],
            "kohya's squared ratio": [
                (CONCAT_B, "w * abs(w) * weights.scaling_of(m) * weights.B[m]")
            ],
            "the weight on both factors": [
                (
                    "as_ = [weights.A[m] for weights, _ in",
                    "as_ = [w * weights.A[m] for weights, w in",
                )
            ],
        },
        "cell-46": {  # predicted_resize
            "error = 1 - energy": [("math.sqrt(max(0.0, 1 - energy))", "1 - energy")],
            "s, not s squared": [(RESIZE_ENERGY, "s[:k].double().sum() / s.double().sum()")],
            "one value too many": [("s[:k]", "s[:k + 1]")],
            "error = sqrt(energy)": [("math.sqrt(max(0.0, 1 - energy))", "math.sqrt(energy)")],
        },
    },
}
