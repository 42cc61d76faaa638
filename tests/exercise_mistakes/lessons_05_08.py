"""The mistakes students make in the exercises of lessons 05 to 08
(tests/lesson_exercises.py tries them)."""

MISTAKES: dict[str, dict[str, dict]] = {
    "05": {
        # count_lora_params(model, r, suffixes)
        "2349f970": {
            "a suffix without its dot (time_emb_proj ends with proj)": [
                ('name.endswith("." + s)', "name.endswith(s)")
            ],
            "a suffix anywhere in the path": [('name == s or name.endswith("." + s)', "s in name")],
            "whole paths only": [('name == s or name.endswith("." + s)', "name == s")],
            "r * in * out": [
                (
                    "r * (module.in_features + module.out_features)",
                    "r * module.in_features * module.out_features",
                )
            ],
            "in + out, without the rank": [
                (
                    "r * (module.in_features + module.out_features)",
                    "module.in_features + module.out_features",
                )
            ],
            "a layer counted once per suffix it matches": (
                "def count_lora_params(model, r, suffixes):\n"
                "    total = 0\n"
                "    for s in suffixes:\n"
                "        for name, module in model.named_modules():\n"
                "            if isinstance(module, nn.Linear) and (\n"
                '                name == s or name.endswith("." + s)\n'
                "            ):\n"
                "                total += r * (module.in_features + module.out_features)\n"
                "    return total\n"
            ),
            "lorakit's count": (
                "def count_lora_params(model, r, suffixes):\n"
                "    return inject.lora_parameter_count(model, r, suffixes)\n"
            ),
            "a real injection": (
                "def count_lora_params(model, r, suffixes):\n"
                "    inject.inject_lora(model, r=r, target_modules=suffixes)\n"
                "    count = lora.count_parameters(model)\n"
                "    inject.remove_lora(model)\n"
                "    return count\n"
            ),
        },
        # unwrap_all(model)
        "d7a469aa": {
            "no unmerge": [
                ("            if module.merged:\n                module.unmerge()\n", "")
            ],
            "unmerge whether merged or not": [
                (
                    "            if module.merged:\n                module.unmerge()\n",
                    "            module.unmerge()\n",
                )
            ],
            "unmerged but left in place": [
                (
                    "setattr(model.get_submodule(parent_path), child, module.base_layer)",
                    "pass",
                )
            ],
            "setattr on the model with the whole path": [
                ("setattr(model.get_submodule(parent_path), child,", "setattr(model, name,")
            ],
            "setattr on the model with the last name": [
                ("setattr(model.get_submodule(parent_path), child,", "setattr(model, child,")
            ],
            "lorakit's remove_lora": "def unwrap_all(model):\n    inject.remove_lora(model)\n",
        },
        # KV_TARGETS
        "5ca360a0": {
            "to_k and to_v of attn1 too": 'KV_TARGETS = ["to_k", "to_v"]\n',
            "only to_k": 'KV_TARGETS = ["attn2.to_k"]\n',
            "the query instead of the value": 'KV_TARGETS = ["attn2.to_k", "attn2.to_q"]\n',
            "the whole attn2": 'KV_TARGETS = ["attn2"]\n',
            "letters, not names": 'KV_TARGETS = ["k", "v"]\n',
        },
    },
    "06": {
        # kohya_to_peft(tensors)
        "a738e004": {
            "underscores all turned into dots": (
                "def kohya_to_peft(tensors):\n"
                "    out = {}\n"
                "    for key, value in tensors.items():\n"
                '        module, _, kind = key.partition(".")\n'
                '        if kind != "alpha":\n'
                '            path = module.removeprefix("lora_unet_").replace("_", ".")\n'
                '            kind = kind.replace("lora_down", "lora_A")\n'
                "            out[f\"{path}.{kind.replace('lora_up', 'lora_B')}\"] = value\n"
                "    return out\n"
            ),
            "down and up swapped": [("'A' if kind", "'B' if kind"), ("else 'B'", "else 'A'")],
            "A and B transposed": [("] = value", "] = value.T")],
            "the alpha entries kept": (
                "def kohya_to_peft(tensors):\n"
                '    paths = {"lora_unet_" + name.replace(".", "_"): name\n'
                "             for name, _ in inject.lora_layers(pipe.unet)}\n"
                "    out = {}\n"
                "    for key, value in tensors.items():\n"
                '        module, _, kind = key.partition(".")\n'
                '        kind = kind.replace("lora_down", "lora_A").replace("lora_up", "lora_B")\n'
                '        out[f"{paths[module]}.{kind}"] = value\n'
                "    return out\n"
            ),
            "lorakit's loader": (
                "def kohya_to_peft(tensors):\n"
                '    weights = formats.load_lora(files["kohya"])\n'
                '    out = {f"{p}.lora_A.weight": a for p, a in weights.A.items()}\n'
                '    return out | {f"{p}.lora_B.weight": b for p, b in weights.B.items()}\n'
            ),
            "lorakit's table of kohya names": [
                (
                    '{"lora_unet_" + name.replace(".", "_"): name for name, _ in '
                    "inject.lora_layers(pipe.unet)}",
                    "formats.kohya.kohya_name_map(pipe.unet)",
                )
            ],
        },
        # unseen_prompts(folder)
        "d2ea50ee": {
            "the seen prompts": [("if p not in seen", "if p in seen")],
            "prompts without the trigger": [("styles.TEMPLATE", "styles.PLAIN_TEMPLATE")],
            "colour and shape swapped": [("colour=c, shape=s", "colour=s, shape=c")],
            "shapes before colours": [
                (
                    "for c in shapes.COLOURS for s in shapes.SHAPES",
                    "for s in shapes.SHAPES for c in shapes.COLOURS",
                )
            ],
            "the outline set's held-out list, whatever the folder": (
                "def unseen_prompts(folder):\n"
                "    return [styles.TEMPLATE.format(colour=c, shape=s)\n"
                "            for c, s in styles.OUTLINE_HELD_OUT]\n"
            ),
            "lorakit's prompts": (
                "def unseen_prompts(folder):\n    return styles.style_prompts(held_out=True)\n"
            ),
        },
    },
    "07": {
        # effective_multiplier(scale, alpha, r, use_rslora=False)
        "cell-26": {
            "the scale left out": [("return scale * alpha", "return alpha")],
            "rsLoRA left out": [("(r ** 0.5 if use_rslora else r)", "r")],
            "r / alpha": [
                (
                    "scale * alpha / (r ** 0.5 if use_rslora else r)",
                    "scale * (r ** 0.5 if use_rslora else r) / alpha",
                )
            ],
            "the square root always": [("(r ** 0.5 if use_rslora else r)", "r ** 0.5")],
            "the conditional taking the whole expression": [
                ("(r ** 0.5 if use_rslora else r)", "r ** 0.5 if use_rslora else r")
            ],
            "lorakit's ledger": (
                "def effective_multiplier(scale, alpha, r, use_rslora=False):\n"
                "    ledger = lora.alpha_ledger(r, alpha)\n"
                "    return scale * (ledger.rslora if use_rslora else ledger.peft)\n"
            ),
        },
        # rslora_alpha_for(kohya_alpha, r)
        "cell-29": {
            "kohya's alpha unchanged": [("kohya_alpha / r * r ** 0.5", "kohya_alpha")],
            "kohya's alpha times sqrt(r)": [
                ("kohya_alpha / r * r ** 0.5", "kohya_alpha * r ** 0.5")
            ],
            "kohya's alpha / r": [("kohya_alpha / r * r ** 0.5", "kohya_alpha / r")],
            "kohya's default alpha, whatever the argument": [
                ("kohya_alpha / r * r ** 0.5", "1 / r ** 0.5")
            ],
            "lorakit's ledger": [
                ("kohya_alpha / r * r ** 0.5", "lora.alpha_ledger(r, kohya_alpha).kohya * r ** 0.5")
            ],
        },
        # enough_rank(sweep, within=0.05)
        "cell-32": {
            "the best rank": (
                "def enough_rank(sweep, within=0.05):\n"
                "    return max(sweep, key=lambda r: sweep[r].grid.style_rate)\n"
            ),
            "the largest rank within": [("return min(r", "return max(r")],
            "the first rank of the sweep within": [("return min(r", "return next(r")],
            "strictly above the line": [(">= best - within", "> best - within")],
            "5 % of the best, not 5 points": [("best - within", "best * (1 - within)")],
            "0.05 whatever within is": [("best - within", "best - 0.05")],
        },
    },
    "08": {
        # lora_training_bytes(unet, r)
        "c26": {
            "no AdamW moments": [("4 * 4 * count", "4 * 2 * count")],
            "one AdamW moment": [("4 * 4 * count", "4 * 3 * count")],
            "the parameters alone": [("4 * 4 * count", "4 * count")],
            "float16, 2 bytes": [("4 * 4 * count", "2 * 4 * count")],
            "r * in * out": [
                (
                    "r * (modules[n].in_features + modules[n].out_features)",
                    "r * modules[n].in_features * modules[n].out_features",
                )
            ],
            "attn1 and attn2": [('find_targets(unet, "attn2")', 'find_targets(unet, "attn")')],
            "lorakit's estimate": (
                "def lora_training_bytes(unet, r):\n"
                '    e = memory.estimate_memory(train.TrainConfig.for_mode("full", r=r), "sd15")\n'
                "    return e.lora_params + e.lora_grads + e.optimizer\n"
            ),
            "lorakit's count": (
                "def lora_training_bytes(unet, r):\n"
                '    return 16 * inject.lora_parameter_count(unet, r, "attn2")\n'
            ),
        },
        # largest_batch(cfg, model, budget)
        "c29": {
            "the first batch that does not fit": [
                ("            break\n", "            return batch\n")
            ],
            "batches 1 to 63": [("range(1, 65)", "range(1, 64)")],
            "None when nothing fits": [("best = 0", "best = None")],
            "a budget reached counted as too big": [("total > budget", "total >= budget")],
            "the headroom taken off twice": [
                ("total > budget", "total > budget * memory.HEADROOM")
            ],
            "the linear rule without the 64 cap": (
                "def largest_batch(cfg, model, budget):\n"
                "    cfg.batch_size = 1\n"
                "    one = memory.estimate_memory(cfg, model)\n"
                "    return int((budget - one.total + one.activations) // one.activations)\n"
            ),
        },
    },
}
