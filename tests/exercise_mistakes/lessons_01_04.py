"""The mistakes students make in the exercises of lessons 01 to 04
(tests/lesson_exercises.py tries them)."""

BREAK_EVEN = "return (m * n - 1) // (m + n)"

MISTAKES: dict[str, dict[str, dict]] = {
    "01": {
        "b9806fca": {  # break_even_rank(m, n)
            "floor of mn / (m + n)": [(BREAK_EVEN, "return m * n // (m + n)")],
            "float division": [(BREAK_EVEN, "return m * n / (m + n)")],
            "rounded": [(BREAK_EVEN, "return round(m * n / (m + n))")],
            "one below the floor": [(BREAK_EVEN, "return m * n // (m + n) - 1")],
            "min(m, n)": [(BREAK_EVEN, "return min(m, n)")],
            "lowrank's search": [
                (
                    BREAK_EVEN,
                    "return max([r for r in range(1, min(m, n) + 1)\n"
                    "                if lowrank.lora_params(m, n, r) < lowrank.full_params(m, n)],"
                    " default=0)",
                )
            ],
        },
        "64add297": {  # my_rank_for_energy(S, fraction)
            "lowrank.rank_for_energy": (
                "def my_rank_for_energy(S, fraction):\n"
                "    return lowrank.rank_for_energy(S, fraction)\n"
            ),
            "S instead of S**2": [("torch.cumsum(S**2, dim=0)", "torch.cumsum(S, dim=0)")],
            "<= instead of <": [("(kept < fraction)", "(kept <= fraction)")],
            "no + 1": [(".sum().item()) + 1", ".sum().item())")],
            "first rank above the fraction": [
                (
                    "int((kept < fraction).sum().item()) + 1",
                    "int(torch.argmax((kept > fraction).int())) + 1",
                )
            ],
        },
        "44e5e9fa": {  # colour_at_rank(image, k)
            "not scaled to [0, 1]": [("double() / 255", "double()")],
            "rank k - 1": [("low_rank_approx(X[..., c], k)", "low_rank_approx(X[..., c], k - 1)")],
            "one SVD of the (m, 3n) matrix": [
                (
                    "torch.stack([lowrank.low_rank_approx(X[..., c], k) for c in range(3)],"
                    " dim=-1)",
                    "lowrank.low_rank_approx(X.reshape(X.shape[0], -1), k).reshape(X.shape)",
                )
            ],
            "mean of the channels' errors": [
                (
                    "(torch.linalg.vector_norm(X - X_k) / torch.linalg.vector_norm(X)).item()",
                    "sum(lowrank.relative_error(X[..., c], X_k[..., c]) for c in range(3)) / 3",
                )
            ],
            "clipped to [0, 1]": [
                ("for c in range(3)], dim=-1)", "for c in range(3)], dim=-1).clamp(0, 1)")
            ],
            "the explorer of section 5": (
                "def colour_at_rank(image, k):\n"
                "    shown = explorer.view(k)\n"
                "    return shown.reconstruction, shown.relative_error\n"
            ),
            "an explorer of its own": (
                "def colour_at_rank(image, k):\n"
                "    shown = widgets.svd_explorer(image, rank=k).view(k)\n"
                "    return shown.reconstruction, shown.relative_error\n"
            ),
        },
    },
    "02": {
        "ad7af638": {  # delta_weight(A, B, alpha, r, use_rslora=False)
            "no scaling": [(" * scaling", "")],
            "r / alpha": [
                (
                    "alpha / (math.sqrt(r) if use_rslora else r)",
                    "(math.sqrt(r) if use_rslora else r) / alpha",
                )
            ],
            "rsLoRA ignored": [("alpha / (math.sqrt(r) if use_rslora else r)", "alpha / r")],
            "square root always": [
                ("alpha / (math.sqrt(r) if use_rslora else r)", "alpha / math.sqrt(r)")
            ],
            "the parentheses left out": [
                (
                    "alpha / (math.sqrt(r) if use_rslora else r)",
                    "alpha / math.sqrt(r) if use_rslora else r",
                )
            ],
            "transposed": [("B @ A", "A.T @ B.T")],
            "lorakit's layer": (
                "def delta_weight(A, B, alpha, r, use_rslora=False):\n"
                "    layer = lora.LoRALinear(nn.Linear(A.shape[1], B.shape[0]), r=r, alpha=alpha,\n"
                "                            use_rslora=use_rslora)\n"
                "    layer.lora_A.weight.data, layer.lora_B.weight.data = A, B\n"
                "    return layer.get_delta_weight()\n"
            ),
        },
        "284c009c": {  # lora_param_count(in_features, out_features, r)
            "r * in * out": [
                ("r * (in_features + out_features)", "r * in_features * out_features")
            ],
            "the bias counted": [
                (
                    "r * (in_features + out_features)",
                    "r * (in_features + out_features) + out_features",
                )
            ],
            "A only": [("r * (in_features + out_features)", "r * in_features")],
            "the parentheses left out": [
                ("r * (in_features + out_features)", "r * in_features + out_features")
            ],
            "rank 4 typed in": [
                ("r * (in_features + out_features)", "4 * (in_features + out_features)")
            ],
            "lorakit's count": [
                (
                    "r * (in_features + out_features)",
                    "lora.count_parameters(\n"
                    "        lora.LoRALinear(nn.Linear(in_features, out_features), r=r))",
                )
            ],
        },
        "79a840f5": {  # merged_forward(layer, x)
            "the layer itself": "def merged_forward(layer, x):\n    return layer(x)\n",
            "no bias": [(", layer.base_layer.bias)", ")")],
            "B @ A without the scaling": [
                ("layer.get_delta_weight()", "layer.lora_B.weight @ layer.lora_A.weight")
            ],
            "scaling without the runtime scale": [
                (
                    "layer.get_delta_weight()",
                    "layer.lora_B.weight @ layer.lora_A.weight * layer.scaling",
                )
            ],
            "the base layer alone": (
                "def merged_forward(layer, x):\n    return layer.base_layer(x)\n"
            ),
            "merge()": (
                "def merged_forward(layer, x):\n"
                "    layer.merge()\n"
                "    base = layer.base_layer\n"
                "    return nn.functional.linear(x, base.weight, base.bias)\n"
            ),
            "W0 changed in place": [
                (
                    "weight = layer.base_layer.weight + layer.get_delta_weight()",
                    "weight = layer.base_layer.weight\n    weight += layer.get_delta_weight()",
                )
            ],
        },
        "1eaa831e": {  # alpha_for_rank(alpha_old, r_old, r_new, use_rslora=False)
            "alpha unchanged": (
                "def alpha_for_rank(alpha_old, r_old, r_new, use_rslora=False):\n"
                "    return alpha_old\n"
            ),
            "ratio inverted": [("alpha_old * r_new / r_old", "alpha_old * r_old / r_new")],
            "rsLoRA ignored": (
                "def alpha_for_rank(alpha_old, r_old, r_new, use_rslora=False):\n"
                "    return alpha_old * r_new / r_old\n"
            ),
            "square root both ways": (
                "def alpha_for_rank(alpha_old, r_old, r_new, use_rslora=False):\n"
                "    return alpha_old * math.sqrt(r_new / r_old)\n"
            ),
            "square root inverted": [("math.sqrt(r_new / r_old)", "math.sqrt(r_old / r_new)")],
        },
    },
    "03": {
        "4048ef66": {  # encode(prompt)
            "no padding": [('padding="max_length", ', "")],
            "padding to the longest prompt": [('padding="max_length"', 'padding="longest"')],
            "no truncation": [("truncation=True, ", "")],
            "the text width as max_length": [
                (
                    "max_length=pipe.tokenizer.model_max_length",
                    "max_length=pipe.text_encoder.config.hidden_size",
                )
            ],
            "the pooled output": [("(ids.to(device))[0]", "(ids.to(device)).pooler_output")],
            "no batch dimension": [("(ids.to(device))[0]", "(ids.to(device))[0][0]")],
            "encode_prompt": (
                "def encode(prompt):\n"
                "    with torch.no_grad():\n"
                "        return pipe.encode_prompt(prompt, device, 1, False)[0]\n"
            ),
        },
        "2e24854c": {  # predict_x0(noisy, eps, t)
            "alphas, not alphas_cumprod": [("scheduler.alphas_cumprod[t]", "scheduler.alphas[t]")],
            "no square roots": [
                (
                    "(noisy - (1 - abar).sqrt() * eps) / abar.sqrt()",
                    "(noisy - (1 - abar) * eps) / abar",
                )
            ],
            "no square root on 1 - abar": [("(1 - abar).sqrt() * eps", "(1 - abar) * eps")],
            "the noise added": [("(noisy - (1 - abar)", "(noisy + (1 - abar)")],
            "t - 1": [("alphas_cumprod[t]", "alphas_cumprod[t - 1]")],
            "the forward formula": [
                (
                    "(noisy - (1 - abar).sqrt() * eps) / abar.sqrt()",
                    "abar.sqrt() * noisy + (1 - abar).sqrt() * eps",
                )
            ],
            "DDPMScheduler.step": (
                "def predict_x0(noisy, eps, t):\n"
                "    return ddpm.step(eps, t, noisy).pred_original_sample\n"
            ),
        },
        "aff3af4a": {  # latent_shape(vae, height, width)
            "4 channels typed in": [("(vae.config.latent_channels, ", "(4, ")],
            "factor 8 typed in": [
                ("factor = 2 ** (len(vae.config.block_out_channels) - 1)", "factor = 8")
            ],
            "2 ** levels": [
                ("len(vae.config.block_out_channels) - 1)", "len(vae.config.block_out_channels))")
            ],
            "the levels as the factor": [
                (
                    "factor = 2 ** (len(vae.config.block_out_channels) - 1)",
                    "factor = len(vae.config.block_out_channels)",
                )
            ],
            "the pipeline's factor": [
                (
                    "factor = 2 ** (len(vae.config.block_out_channels) - 1)",
                    "factor = pipe.vae_scale_factor",
                )
            ],
            "width and height swapped": [
                ("height // factor, width // factor", "width // factor, height // factor")
            ],
            "a picture encoded": (
                "def latent_shape(vae, height, width):\n"
                "    with torch.no_grad():\n"
                "        picture = torch.zeros(1, 3, height, width, device=vae.device)\n"
                "        return tuple(vae.encode(picture).latent_dist.mean.shape[1:])\n"
            ),
        },
    },
    "04": {
        "0e9d1f04": {  # head_probs(attn, x, context, h)
            "no scale": [(" * attn.scale", "")],
            "softmax over the queries": [("dim=-1)  # (B, N, T)", "dim=-2)  # (B, N, T)")],
            "rows strided by heads": [
                ("rows = slice(h * d, (h + 1) * d)", "rows = slice(h, None, attn.heads)")
            ],
            "every head's q and k": [
                ("attn.to_q.weight[rows].T", "attn.to_q.weight.T"),
                ("attn.to_k.weight[rows].T", "attn.to_k.weight.T"),
            ],
            "the scale of the whole width": [("attn.scale", "attn.to_q.out_features ** -0.5")],
            "lorakit's attention_probs": (
                "def head_probs(attn, x, context, h):\n"
                "    return attention.attention_probs(attn, x, context)[:, h]\n"
            ),
        },
        "3f98a1de": {  # my_self_attention(attn, x)
            "the module itself": "def my_self_attention(attn, x):\n    return attn(x)\n",
            "one head": [("attn.heads)", "1)")],
            "q and k swapped": [("attn.to_q, attn.to_k", "attn.to_k, attn.to_q")],
            "k and v swapped": [("attn.to_k, attn.to_v", "attn.to_v, attn.to_k")],
            "to_out left out": [("attn.to_out[0]", "torch.nn.Identity()")],
            "to_out, not to_out[0]": [("attn.to_out[0]", "attn.to_out")],
            "lorakit's attention": (
                "def my_self_attention(attn, x):\n"
                "    return attention.attention_from_module(attn, x, x)\n"
            ),
        },
        "52005ffc": {  # attn2_lora_parameters(unet, r)
            "to_q, to_k and to_v only": [
                (
                    "(module.to_q, module.to_k, module.to_v, module.to_out[0])",
                    "(module.to_q, module.to_k, module.to_v)",
                )
            ],
            "r * in * out": [
                (
                    "r * (layer.in_features + layer.out_features)",
                    "r * layer.in_features * layer.out_features",
                )
            ],
            "in_features twice": [
                ("r * (layer.in_features + layer.out_features)", "r * 2 * layer.in_features")
            ],
            "the layers' own weights": [
                ("r * (layer.in_features + layer.out_features)", "layer.weight.numel()")
            ],
            "attn1 too": [
                (
                    "attention.attn2_modules(unet).values()",
                    "(m for m in unet.modules() if isinstance(m, Attention))",
                )
            ],
            "lorakit's count": [
                (
                    "r * (layer.in_features + layer.out_features)",
                    "models.count_parameters(lora.LoRALinear(layer, r=r), trainable_only=True)",
                )
            ],
        },
    },
}
