"""LyCORIS LoHa and LoKr files, read exactly: their delta W as a LoRA of the rank it really has.

Introduced in notebooks/05_inject_lora.ipynb (every load reads them); algebra in lesson 11.

LoHa (``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``) is the Hadamard product of two
low-rank matrices, ``delta W = (alpha / dim) (W1a W1b) * (W2a W2b)``, ``dim`` the rank of each;
LoKr (``lokr_w1`` or ``lokr_w1_a``/``_b``, ``lokr_w2`` or ``lokr_w2_a``/``_b``) a Kronecker
product, ``delta W = scale (W1 kron W2)``, with LyCORIS's scale: ``alpha / dim`` where a factor is
low-rank (``dim`` its rank), else 1 (also ComfyUI's rule). :func:`exact_factors` writes each as
``B A`` with no error: ``(W1a W1b) * (W2a W2b) = (W1a . W2a)(W1b . W2b)`` (the rows' and columns'
pairwise products, rank ``dim1 * dim2``), ``(U1 V1) kron (U2 V2) = (U1 kron U2)(V1 kron V2)``;
past the layer's rank, delta W's exact SVD. :func:`load_lycoris` reads a file of them into a
:class:`~lorakit.formats.LoRAWeights` whose ``variants`` say what each module was.

Left out: Tucker cores (``hada_t1``, ``lokr_t2``) and DoRA, refused by name (``refused``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lorakit.formats import kohya, lora_weights, refused, safetensors_io

__all__ = [
    "SUFFIXES",
    "LOHA",
    "LOKR",
    "kind_of",
    "missing",
    "scale_of",
    "is_lycoris",
    "exact_factors",
    "load_lycoris",
]

LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
SUFFIXES = LOHA + LOKR


def kind_of(group: dict) -> str | None:
    """ "LoHa", "LoKr" or None, from a module's key suffixes."""
    if any(s in group for s in LOHA):
        return "LoHa"
    return "LoKr" if any(s in group for s in LOKR) else None


def missing(group: dict) -> list[str]:
    """The tensors a LoHa or LoKr module needs and does not have."""
    if kind_of(group) == "LoHa":
        return [s for s in LOHA if s not in group]
    need = []
    for w in ("lokr_w1", "lokr_w2"):
        if w not in group and not (f"{w}_a" in group and f"{w}_b" in group):
            need.append(f"{w} (or {w}_a and {w}_b)")
    return need


def _matrix(t: torch.Tensor) -> torch.Tensor:
    """A factor as a matrix: a convolution's ``(out, in, kh, kw)`` as ``(out, in * kh * kw)``."""
    return t.double().reshape(t.shape[0], -1)


def _factor(t: dict, name: str) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """LoKr's W1 or W2 as ``U V``, and its rank if low-rank (None: a full matrix)."""
    if name in t:
        w = _matrix(t[name])
        n, m = w.shape
        if n <= m:
            return torch.eye(n, dtype=w.dtype), w, None
        return w, torch.eye(m, dtype=w.dtype), None
    a, b = _matrix(t[f"{name}_a"]), _matrix(t[f"{name}_b"])
    return a, b, int(b.shape[0])


def scale_of(kind: str, t: dict, alpha: float | None) -> float:
    """LyCORIS's scale of a module: alpha over the low-rank factor's rank, else 1."""
    if kind == "LoHa":
        dim = int(t["hada_w1_b"].shape[0])
    else:  # ComfyUI's and LyCORIS's rule: the rank of W2's factors if low-rank, else W1's
        dim = next(
            (int(t[f"{w}_b"].shape[0]) for w in ("lokr_w2", "lokr_w1") if f"{w}_b" in t), None
        )
    return 1.0 if alpha is None or dim is None else alpha / dim


def _factors(kind: str, t: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """B and A (float64, A a matrix) with ``B A`` the unscaled delta W."""
    if kind == "LoHa":
        w1a, w1b, w2a, w2b = (_matrix(t[s]) for s in LOHA)
        b = (w1a[:, :, None] * w2a[:, None, :]).reshape(w1a.shape[0], -1)
        a = (w1b[:, None, :] * w2b[None, :, :]).reshape(-1, w1b.shape[1])
        return b, a
    u1, v1, _ = _factor(t, "lokr_w1")
    u2, v2, _ = _factor(t, "lokr_w2")
    return torch.kron(u1, u2), torch.kron(v1, v2)


def is_lycoris(keys) -> bool:
    """Whether a file's keys hold a LoHa's or LoKr's tensors (told before any tensor is read)."""
    return any(k.rsplit(".", 1)[-1] in SUFFIXES for k in keys)


def exact_factors(kind: str, t: dict, alpha: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(k, in[, kh, kw])`` and B ``(out, k)`` (float32) with ``B A`` equal to the module's
    delta W, its scale in B; ``k`` the product of the factors' ranks, or the layer's rank by SVD
    where that is smaller."""
    b, a = _factors(kind, t)
    b = b * scale_of(kind, t, alpha)
    if b.shape[1] > min(b.shape[0], a.shape[1]):  # more than the layer's rank: its exact SVD
        u, s, vh = torch.linalg.svd(b @ a, full_matrices=False)
        b, a = u * s, vh
    w2 = t.get("lokr_w2")
    if w2 is not None and w2.ndim == 4:  # a convolution's kernel, known from W2
        rows = (
            int(_matrix(t["lokr_w1"]).shape[1]) if "lokr_w1" in t else int(t["lokr_w1_b"].shape[1])
        )
        a = a.reshape(a.shape[0], rows * w2.shape[1], *w2.shape[2:])
        b = b.reshape(*b.shape, 1, 1)
    return a.float().contiguous(), b.float().contiguous()


def _lycoris_module(path: Path, name: str, group: dict, tensors: dict) -> tuple:
    """One module of a LyCORIS file: A, B and alpha (a LoHa or LoKr exactly, its scale in B and
    alpha = its rank; a plain LoRA pair as it is), and what it was."""
    alpha = (
        kohya.alpha_value(path, group["alpha"], tensors[group["alpha"]])
        if "alpha" in group
        else None
    )
    kind = kind_of(group)
    if kind is None:
        a, b = tensors[group["lora_down.weight"]], tensors[group["lora_up.weight"]]
        return a.float(), b.float(), alpha if alpha is not None else a.shape[0], None
    t = {s: tensors[k].float() for s, k in group.items() if s in SUFFIXES}
    a, b = exact_factors(kind, t, alpha)
    if kind == "LoHa":
        return a, b, float(a.shape[0]), f"LoHa dim {int(t['hada_w1_b'].shape[0])}"
    factors = [
        f"W{i} rank {int(t[f'lokr_w{i}_b'].shape[0])}" if f"lokr_w{i}_b" in t else f"W{i} full"
        for i in (1, 2)
    ]
    return a, b, float(a.shape[0]), f"LoKr ({', '.join(factors)})"


def load_lycoris(path: Path, header: dict, metadata: dict, model, arch: str):
    """A LyCORIS file (LoHa, LoKr, and plain LoRA modules beside them), every module exact."""
    suffixes = (*SUFFIXES, *kohya.SUFFIXES)
    groups, others = safetensors_io.group_keys(list(header), suffixes)
    others += [
        k for m, g in groups.items() if not m.startswith(kohya.KOHYA_PREFIXES) for k in g.values()
    ]
    if others:
        raise refused.unsupported(path, others, "LyCORIS LoHa or LoKr", groups)
    problems = [
        f"a {kind_of(g) or 'LoRA'} module without {', '.join(need)} ({m})"
        for m, g in groups.items()
        if (need := _needs(g))
    ]
    if problems:
        raise lora_weights.LoRAFileError(
            f"{path} is not a LoRA lorakit can load: {'; '.join(problems[:3])}; the file is "
            "incomplete: save it again from the tool that made it."
        )
    tensors = safetensors_io.read_tensors(
        path, header, [k for g in groups.values() for k in g.values()]
    )
    known = kohya.kohya_name_map(model, arch)
    A, B, alphas, variants = {}, {}, {}, {}
    for name, group in groups.items():
        m = kohya.resolve_name(name, known, model)
        A[m], B[m], alphas[m], what = _lycoris_module(path, name, group, tensors)
        if what:
            variants[m] = what
    weights = lora_weights.build_weights("kohya", A, B, alphas, False, metadata)
    weights.variants = variants
    lora_weights.check_weights(weights, str(path))
    return weights


def _needs(group: dict) -> list[str]:
    """What a LyCORIS file's module lacks: a LoHa's or LoKr's tensors, or a plain pair's half."""
    if kind_of(group) is not None:
        return missing(group)
    return [s for s in ("lora_down.weight", "lora_up.weight") if s not in group]
