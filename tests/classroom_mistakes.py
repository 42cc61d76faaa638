"""The mistakes students make in the assignments, each put in place of the solution, so that the
teacher's loop shows every one of them losing the points of the cell that grades it.

A mistake edits solution cells of ``tests/submissions/<assignment>/solved.ipynb``, by ``grade_id``:
new code for the cell, or ``(old, new)`` replacements in the solved code. It names the graded cells
that must then score 0; every other autograded cell keeps its full points. ``FILLERS`` are edits
that a packed submission takes where no mistake edits that cell (assignment 4: no training).
``tests/test_classroom.py`` packs mistakes on different cells into one submission (the cells they
lose kept apart), autogrades them beside the sample submissions and asserts every cell's score.
"""

# The solved lines that several mistakes change.
FORWARD = "return self.base(x) + self.scaling * (x @ self.A.T @ self.B.T)"
MERGE = "self.base.weight.data += self.scaling * (self.B @ self.A)"
W_K = "return (U[:, :k] * S[:k]) @ Vh[:k]"
ENERGY = "S.double() ** 2, 0) / (S.double() ** 2)"
ATTENTION = "probs = ((q @ k.transpose(-1, -2)) * attn.scale).softmax(dim=-1)"
TABLE = "(m.to_q.in_features, m.to_k.in_features, m.heads)"
MAP = "return probs.mean(dim=1)[..., token].reshape(b, side, side)"
PATHS = "for projection in PROJECTIONS:"
FOR_ATTN2 = 'for name in [n for n in modules if n.endswith("attn2")]:'
SETATTR = "setattr(modules[parent_path], child, lora.LoRALinear(modules[path], r=r, alpha=alpha))"
LAYER_COUNT = "total += r * (layer.in_features + layer.out_features)"
KOHYA_NAME = 'name = "lora_unet_" + path.replace(".", "_")'
ALPHA = 'tensors[f"{name}.alpha"] = torch.tensor(float(module.alpha))'
OUTLINE = 'outline += found["style"] == "outline"'
RIGHT = 'right += found["colour"] == colour and found["shape"] == shape'
LORA_CELLS = ["lora_init_test", "lora_scaling_test", "lora_merge_test"]

LORAKITS_LAYER_INSIDE = """\
from lorakit import lora as course


class LoRALinear(nn.Module):  # lorakit's layer inside, under the names the exercise asks for
    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.inner = course.LoRALinear(base, r=r, alpha=alpha)
        self.base, self.r = base, r
        self.A, self.B = self.inner.lora_A.weight, self.inner.lora_B.weight

    alpha = property(lambda self: self.inner.alpha, lambda self, a: setattr(self.inner, "alpha", a))
    scaling = property(lambda self: self.inner.scaling)

    def forward(self, x):
        return self.inner(x)

    def merge(self):
        self.inner.merge()

    def unmerge(self):
        self.inner.unmerge()
"""

DIFFUSERS_SCORES = '''\
def my_cross_attention(x, context, attn):
    """diffusers' own steps: heads into the batch, get_attention_scores, and back."""
    q = attn.head_to_batch_dim(attn.to_q(x))
    k, v = attn.head_to_batch_dim(attn.to_k(context)), attn.head_to_batch_dim(attn.to_v(context))
    probs = attn.get_attention_scores(q, k)  # (B * heads, N, T)
    out = attn.to_out[0](attn.batch_to_head_dim(probs @ v))
    return out, probs.reshape(x.shape[0], attn.heads, x.shape[1], context.shape[1])
'''

PROCESSOR_OUTPUT = '''\
def my_cross_attention(x, context, attn):
    """The probabilities by hand, the output from the module's own processor."""
    def split(t):
        b, length, width = t.shape
        return t.reshape(b, length, attn.heads, width // attn.heads).transpose(1, 2)

    q, k = split(attn.to_q(x)), split(attn.to_k(context))
    probs = ((q @ k.transpose(-1, -2)) * attn.scale).softmax(dim=-1)
    run = attn.get_processor()
    return run(attn, x, encoder_hidden_states=context), probs
'''

JUDGED_BY_THE_COURSE = '''\
from lorakit.metrics import score_pictures as course_figures


def judge(images, prompts) -> dict[str, float]:
    """Style rate and content accuracy, as the course's grid computes them."""
    figures = course_figures(images, prompts)
    return {"style_rate": figures.style_rate, "content_accuracy": figures.both_accuracy}
'''

TYPED_IN_THIRTIETHS = """\
report = {"figure": "style rate (outline)", "pictures": 30,
          "results": {"base, plain prompts": 0.0, "r=1, plain prompts": 12 / 30,
                      "r=8, plain prompts": 22 / 30}}
"""

MEASURED_BUT_EVERY_PICTURE_COUNTED = """\
combos = [(colour, shape) for colour in shapes.COLOURS for shape in shapes.SHAPES][:8]


def outline_rate(prompts):
    found = [metrics.detect(image) for image in sample.generate(pipe, prompts, [0] * len(prompts))]
    return sum(f["style"] == "outline" for f in found) / len(found)


results = {
    "plain prompts": outline_rate([styles.caption(c, s, trigger=False) for c, s in combos]),
    "with trigger": outline_rate([styles.caption(c, s) for c, s in combos]),
}
report = {"figure": "style rate", "pictures": 16, "results": results}  # not a figure's 8
"""

# {assignment: {mistake: ({solution cell: new code or [(old, new), ...]}, [cells that score 0])}}
MISTAKES = {
    "01_low_rank": {
        "W_k all zeros": (
            {"best_rank_k": [(W_K, "return torch.zeros_like(W)")]},
            ["best_rank_k_test"],
        ),
        "W_k transposed": (
            {"best_rank_k": [(W_K, "return ((U[:, :k] * S[:k]) @ Vh[:k]).T")]},
            ["best_rank_k_test"],
        ),
        "one direction too many": (
            {"best_rank_k": [(W_K, "return (U[:, :k + 1] * S[:k + 1]) @ Vh[:k + 1]")]},
            ["best_rank_k_test"],
        ),
        "no singular values": (
            {"best_rank_k": [(W_K, "return U[:, :k] @ Vh[:k]")]},
            ["best_rank_k_test"],
        ),
        "lorakit's low_rank_approx, renamed": (
            {
                "best_rank_k": [
                    ("def ", "from lorakit.lowrank import low_rank_approx as best\n\n\ndef "),
                    (W_K, "return best(W, k)"),
                ]
            },
            ["best_rank_k_test"],
        ),
        "energy rank off by one": (
            {"rank_for_energy": [(".item()) + 1", ".item())")]},
            ["rank_for_energy_test"],
        ),
        "energy strictly above the fraction": (
            {
                "rank_for_energy": [
                    ("dtype=torch.float64) - 1e-12)", "dtype=torch.float64), right=True)")
                ]
            },
            ["rank_for_energy_test"],
        ),
        "energy of S, not of S squared": (
            {"rank_for_energy": [(ENERGY, "S.double(), 0) / (S.double())")]},
            ["rank_for_energy_test"],
        ),
        "energy not divided by the total": (
            {"rank_for_energy": [(ENERGY + ".sum()", "S.double() ** 2, 0)")]},
            ["rank_for_energy_test"],
        ),
        "lorakit's rank_for_energy": (
            {
                "rank_for_energy": [
                    ("    energy = ", "    from lorakit import lowrank\n\n    energy = "),
                    (
                        "    return int(",
                        "    return lowrank.rank_for_energy(S, fraction)\n    int(",
                    ),
                ]
            },
            ["rank_for_energy_test"],
        ),
        "m x n, the whole weight": (
            {"lora_param_count": [("return r * (m + n)", "return m * n")]},
            ["lora_param_count_test"],
        ),
        "rank off by one": (
            {"lora_param_count": [("return r * (m + n)", "return (r + 1) * (m + n)")]},
            ["lora_param_count_test"],
        ),
        "square weights assumed": (
            {"lora_param_count": [("return r * (m + n)", "return 2 * r * max(m, n)")]},
            ["lora_param_count_test"],
        ),
        "lorakit's lora_params": (
            {
                "lora_param_count": [
                    (
                        "return r * (m + n)",
                        "from lorakit import lowrank\n\n    return lowrank.lora_params(m, n, r)",
                    )
                ]
            },
            ["lora_param_count_test"],
        ),
        "B random at the start": (
            {"lora_linear": [("torch.zeros(base.out_features", "torch.randn(base.out_features")]},
            ["lora_init_test"],
        ),
        "A drawn from randn": (
            {
                "lora_linear": [
                    ("nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))", "nn.init.normal_(self.A)")
                ]
            },
            ["lora_init_test"],
        ),
        "A and B in float32 whatever the base": (
            {"lora_linear": [("dtype=w.dtype, device", "dtype=torch.float32, device")]},
            LORA_CELLS,
        ),
        "A and B transposed": (
            {
                "lora_linear": [
                    ("torch.empty(r, base.in_features", "torch.empty(base.in_features, r"),
                    ("torch.zeros(base.out_features, r", "torch.zeros(r, base.out_features"),
                    ("(x @ self.A.T @ self.B.T)", "(x @ self.A @ self.B)"),
                    ("(self.B @ self.A)", "(self.A @ self.B).T"),
                ]
            },
            LORA_CELLS,
        ),
        "no alpha / r in forward and merge": (
            {
                "lora_linear": [
                    (FORWARD, FORWARD.replace("self.scaling * ", "")),
                    (MERGE, MERGE.replace("self.scaling * ", "")),
                ]
            },
            ["lora_scaling_test", "lora_merge_test"],
        ),
        "alpha // r": (
            {"lora_linear": [("return self.alpha / self.r", "return self.alpha // self.r")]},
            ["lora_scaling_test", "lora_merge_test"],
        ),
        "unmerge subtracts": (
            {
                "lora_linear": [
                    (
                        "self.base.weight.data.copy_(self._original)",
                        "self.base.weight.data -= self.scaling * (self.B @ self.A)",
                    )
                ]
            },
            ["lora_merge_test"],
        ),
        "lorakit's LoRALinear inside": ({"lora_linear": LORAKITS_LAYER_INSIDE}, LORA_CELLS),
    },
    "02_cross_attention": {
        "probabilities without attn.scale": (
            {
                "my_cross_attention": [
                    (
                        "out = probs @ v",
                        "out = probs @ v\n    probs = (q @ k.transpose(-1, -2)).softmax(-1)",
                    )
                ]
            },
            ["my_cross_attention_test"],
        ),
        "diffusers' get_attention_scores": (
            {"my_cross_attention": DIFFUSERS_SCORES},
            ["my_cross_attention_test"],
        ),
        "the output from attn's processor": (
            {"my_cross_attention": PROCESSOR_OUTPUT},
            ["my_cross_attention_test"],
        ),
        "inputs cast to float32": (
            {
                "my_cross_attention": [
                    (
                        "q, k, v = split(",
                        "x, context = x.float(), context.float()\n    q, k, v = split(",
                    )
                ]
            },
            ["my_cross_attention_test"],
        ),
        "to_q's output width": (
            {"attn2_table": [(TABLE, "(m.to_q.out_features, m.to_k.in_features, m.heads)")]},
            ["attn2_table_test"],
        ),
        "8 heads everywhere, as in SD 1.5": (
            {"attn2_table": [(TABLE, "(m.to_q.in_features, m.to_k.in_features, 8)")]},
            ["attn2_table_test"],
        ),
        "text and image widths swapped": (
            {"attn2_table": [(TABLE, "(m.to_k.in_features, m.to_q.in_features, m.heads)")]},
            ["attn2_table_test"],
        ),
        "lorakit's attn2_modules": (
            {
                "attn2_table": [
                    ("    return {", "    from lorakit import attention\n\n    return {"),
                    (
                        'unet.named_modules() if name.endswith("attn2")',
                        "attention.attn2_modules(unet).items()",
                    ),
                ]
            },
            ["attn2_table_test"],
        ),
        "the map transposed": (
            {"token_map": [(MAP, MAP + ".transpose(1, 2)")]},
            ["token_map_test"],
        ),
        "the first head only": (
            {"token_map": [("probs.mean(dim=1)[..., token]", "probs[:, 0, :, token]")]},
            ["token_map_test"],
        ),
        "token off by one": (
            {"token_map": [("[..., token]", "[..., token - 1]")]},
            ["token_map_test"],
        ),
        "summed over heads": (
            {"token_map": [("probs.mean(dim=1)", "probs.sum(dim=1)")]},
            ["token_map_test"],
        ),
    },
    "03_inject_and_files": {
        "lorakit's find_targets": (
            {
                "wrap_cross_attention": [
                    (
                        "    unet.requires_grad_",
                        "    from lorakit import targets\n\n    unet.requires_grad_",
                    ),
                    (FOR_ATTN2, "for name in [None]:"),
                    (PATHS, 'for path in targets.find_targets(unet, "attn2"):'),
                    ('path = f"{name}.{projection}"', "pass"),
                ]
            },
            ["wrap_test"],
        ),
        "lorakit's inject_lora, renamed": (
            {
                "wrap_cross_attention": [
                    ("def ", "from lorakit.inject import inject_lora as add_lora\n\n\ndef "),
                    (
                        "    unet.requires_grad_(False)\n",
                        "    return add_lora(unet, r=r, alpha=alpha)\n",
                    ),
                ]
            },
            ["wrap_test"],
        ),
        "paths sorted": (
            {"wrap_cross_attention": [("    return wrapped", "    return sorted(wrapped)")]},
            ["wrap_test"],
        ),
        "r and alpha swapped": (
            {
                "wrap_cross_attention": [
                    (SETATTR, SETATTR.replace("r=r, alpha=alpha", "r=alpha, alpha=r"))
                ]
            },
            ["wrap_test"],
        ),
        "lorakit's lora_parameter_count": (
            {
                "attn2_lora_parameters": [
                    (
                        "    modules = dict(",
                        "    from lorakit import inject\n\n    modules = dict(",
                    ),
                    (
                        "    return total",
                        '    return inject.lora_parameter_count(unet, r, "attn2")',
                    ),
                ]
            },
            ["count_test"],
        ),
        "square layers assumed": (
            {"attn2_lora_parameters": [(LAYER_COUNT, "total += r * 2 * layer.out_features")]},
            ["count_test"],
        ),
        "rank off by one (count)": (
            {"attn2_lora_parameters": [(LAYER_COUNT, LAYER_COUNT.replace("r *", "(r + 1) *"))]},
            ["count_test"],
        ),
        "alpha written as r": (
            {"kohya_state_dict": [(ALPHA, ALPHA.replace("module.alpha", "module.r"))]},
            ["kohya_test"],
        ),
        "alpha as a 1-element vector": (
            {
                "kohya_state_dict": [
                    (
                        ALPHA,
                        ALPHA.replace(
                            "torch.tensor(float(module.alpha))",
                            "torch.tensor([float(module.alpha)])",
                        ),
                    )
                ]
            },
            ["kohya_test"],
        ),
        "tensors in float16": (
            {"kohya_state_dict": [(".weight.detach().clone()", ".weight.detach().half()")]},
            ["kohya_test"],
        ),
        "lorakit's kohya_name, renamed": (
            {
                "kohya_state_dict": [
                    ("def ", "from lorakit.formats import kohya_name as key_of\n\n\ndef "),
                    (KOHYA_NAME, "name = key_of(path)"),
                ]
            },
            ["kohya_test"],
        ),
    },
    "04_train_and_judge": {
        "colour only": ({"judge": [(RIGHT, 'right += found["colour"] == colour')]}, ["judge_test"]),
        "not filled taken for outline": (
            {"judge": [(OUTLINE, 'outline += found["style"] != "filled"')]},
            ["judge_test"],
        ),
        "lists of different lengths judged": (
            {"judge": [("if len(images) != len(prompts):", "if False:")]},
            ["judge_test"],
        ),
        "the course's score_pictures, renamed": ({"judge": JUDGED_BY_THE_COURSE}, ["judge_test"]),
        "the preset's settings, none chosen": (
            {"settings": "settings = dict(steps=300)  # r, alpha and lr: the preset's"},
            ["style_test", "content_test"],
        ),
        "no learning rate chosen": (
            {"settings": "settings = dict(r=8, alpha=8.0, steps=300)"},
            ["style_test", "content_test"],
        ),
    },
    "05_small_study": {
        "figures typed, multiples of 1/30": ({"experiment": TYPED_IN_THIRTIETHS}, ["report_test"]),
        "all pictures counted as each figure's": (
            {"experiment": MEASURED_BUT_EVERY_PICTURE_COUNTED},
            ["report_test"],
        ),
    },
}

# Where a packed submission has no mistake in a cell that would otherwise train for a minute,
# this takes its place (it is a mistake too: the grader then has no LoRA to judge).
FILLERS = {
    "04_train_and_judge": (
        {"settings": "settings = dict(steps=300)  # r, alpha and lr: the preset's"},
        ["style_test", "content_test"],
    ),
}
