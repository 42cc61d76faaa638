"""The mistakes students make in the exercises of lesson 12
(tests/lesson_exercises.py tries them)."""

PER_LAYER = "r * (layer.in_features + layer.out_features)"
MATCH = 'any(path == s or path.endswith("." + s) for s in suffixes)'
TEXT = 'text_targets = [s for s in all_targets if "add" in s]'
KEYS = "torch.cat([attn.add_k_proj(context), attn.to_k(image)], dim=1)"
SOFTMAX = "torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)"

MISTAKES: dict[str, dict[str, dict]] = {
    "12": {
        "cell-22": {  # lora_parameters
            "the full matrices": [(PER_LAYER, "layer.in_features * layer.out_features")],
            "r times in": [(PER_LAYER, "r * layer.in_features")],
            "r times in times out": [(PER_LAYER, "r * layer.in_features * layer.out_features")],
            "the biases too": [(PER_LAYER, f"{PER_LAYER} + layer.out_features")],
            "the image stream only": [(MATCH, f'{MATCH} and "add" not in path')],
            "every linear layer": [(f" and {MATCH}", "")],
            "lorakit's count": "def lora_parameters(model, suffixes, r):\n"
            "    return targets.lora_parameter_count(model, r, list(suffixes))\n",
            "a typed figure": "def lora_parameters(model, suffixes, r):\n    return 23224320\n",
        },
        "cell-25": {  # text_stream_share
            "the image stream's share": [(TEXT, TEXT.replace('"add" in s', '"add" not in s'))],
            "forgetting to_add_out": [
                (TEXT, TEXT.replace('"add" in s', '"add_" in s and "proj" in s'))
            ],
            "text over image": [
                (
                    "lora_parameters(model, all_targets, r)",
                    'lora_parameters(model, [s for s in all_targets if "add" not in s], r)',
                )
            ],
            "targets, not parameters": "def text_stream_share(model, r):\n"
            "    return 4 / 8  # four of the eight targets\n",
            "a typed half": "def text_stream_share(model, r):\n    return 0.5\n",
        },
        "cell-28": {  # joint_probs
            "image keys first": [
                (KEYS, "torch.cat([attn.to_k(image), attn.add_k_proj(context)], dim=1)")
            ],
            "the text's keys from to_k": [
                (KEYS, "torch.cat([attn.to_k(context), attn.to_k(image)], dim=1)")
            ],
            "no 1 / sqrt(d)": [(" / d ** 0.5", "")],
            "softmax over the queries": [
                ("dim=-1)  # (B, heads, N, T + N)", "dim=-2)  # (B, heads, N, T + N)")
            ],
            "cross-attention (text keys only)": [(KEYS, "attn.add_k_proj(context)")],
            "heads averaged": [(SOFTMAX, f"{SOFTMAX}.mean(1, keepdim=True)")],
        },
    },
}
