"""Reading and writing LoRA files: kohya (A1111/ComfyUI), diffusers and PEFT, safetensors only.

Introduced in notebooks/06_train_style_lora.ipynb; the files people share, in notebooks/11_lora_algebra.ipynb.

One LoRA, three spellings (``P`` is a module path such as
``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q``):

* kohya: ``lora_unet_<P with . as _>.lora_down.weight`` (= A), ``.lora_up.weight`` (= B) and a
  0-dim ``.alpha`` per module; the text encoder's modules as ``lora_te_<path>`` (``lora_te1_`` in some
  tools); ``ss_*`` metadata, all strings. lorakit reads any alpha per module, and writes one value for
  all, folding a module's other alpha into its ``lora_up`` (diffusers misreads per-module alphas there).
* diffusers: ``unet.P.lora_A.weight`` and ``.lora_B.weight``, ``text_encoder.<path>.lora_A.weight``; r and
  alpha (and ``rank_pattern``/``alpha_pattern`` for modules that differ) in the JSON of the
  ``lora_adapter_metadata`` entry of the safetensors metadata (without it, alpha = r).
* PEFT: a folder, ``adapter_model.safetensors`` (``base_model.model.P.lora_A.weight``) and
  ``adapter_config.json``; the text encoder's adapter, if any, in its ``text_encoder/`` subfolder.

What a file may hold, and lorakit applies exactly: LoRA on linear layers; on 1x1 convolutions
(``proj_in``/``proj_out``, which kohya's trainer adds by default: ``(r, C, 1, 1)`` down weights, a linear
LoRA over channels); on 3x3 convolutions (LoCon, kohya's ``conv_dim``: a 3x3 down, a 1x1 up); on the
text encoder; with a rank and an alpha per module. :class:`LoRAWeights` holds them all: A and B per
module path (a pipeline's text-encoder modules are ``text_encoder.<path>``, as diffusers names them),
one ``r`` and ``alpha`` that most modules share and ``alphas`` for the others; each module's rank is
its A's number of rows.

:func:`load_lora` detects the format and reads the file; :func:`apply_lora` checks every module and
shape against the model (a UNet, or a whole pipeline for a file with text-encoder modules) before it
changes anything. What lorakit does not apply is refused by name, with the module that shows it:
LyCORIS LoHa and LoKr, DoRA's magnitude (``dora_scale``), LoCon's Tucker core (``lora_mid``), full-weight
differences, SDXL's two text encoders, and keys of another architecture (the original LDM layout, DiT
models). Pickle files (``.ckpt``, ``.pt``, ``.bin``) are refused: unpickling runs code. Every refusal of a
file is a :class:`LoRAFileError` (a ``ValueError``) whose one-line message names the file and the key;
the header is checked before any tensor is read, and every weight and setting after (floating point,
finite, rank above 0, alpha positive and finite). Files are written atomically (a temporary file, then
``os.replace``), byte for byte the same for the same LoRA (:func:`safetensors_bytes`).

:func:`describe` (``lorakit info``) reports a file: its kind, the base model its shapes and ``ss_*``
metadata point to, its modules per kind and block, rank and alpha per module, the scale a UI applies
at weight 1, and its size. The wrapping itself is ``lorakit.inject``; the algebra on LoRA files
(extract, resize, merge) is ``lorakit.svd_tools``.

Left out: SDXL's key layout, LyCORIS's other algorithms (read, named, refused), DoRA.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

import lorakit
from lorakit import files, inject, lora

FORMATS = ("kohya", "diffusers", "peft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
KOHYA_PREFIX = "lora_unet_"
KOHYA_TEXT_PREFIXES = (
    "lora_te_",
    "lora_te1_",
)  # SD 1.x/2.x's one text encoder (lora_te1_: some tools' spelling)
KOHYA_PREFIXES = (KOHYA_PREFIX, *KOHYA_TEXT_PREFIXES)
TEXT_PREFIX = inject.TEXT_PREFIX  # "text_encoder.": diffusers' keys, and lorakit's module paths
DIFFUSERS_PREFIX, DIFFUSERS_FILE = "unet.", "pytorch_lora_weights.safetensors"
PEFT_PREFIX, PEFT_FILE, PEFT_CONFIG = (
    "base_model.model.",
    "adapter_model.safetensors",
    "adapter_config.json",
)
PEFT_TEXT_FOLDER = "text_encoder"  # a PEFT adapter for the text encoder, inside the UNet's folder
METADATA_KEY = "lora_adapter_metadata"  # diffusers' key for the LoraConfig JSON

# What a key's name shows that lorakit does not apply: (words in the key, what it is).
VARIANTS = (
    (".hada_", "LyCORIS LoHa (Hadamard product) adapter"),
    (".lokr_", "LyCORIS LoKr (Kronecker product) adapter"),
    (".dora_scale", "DoRA adapter (a magnitude vector, dora_scale, beside the LoRA)"),
    (
        ".lora_magnitude_vector",
        "DoRA adapter (a magnitude vector, lora_magnitude_vector, beside the LoRA)",
    ),
    (".lora_mid.", "LoCon adapter with a Tucker core (lora_mid, LyCORIS's use_tucker)"),
    (".diff", "full-weight difference (LyCORIS's 'full' algorithm)"),
    (".oft_", "OFT (orthogonal) adapter"),
    (".on_input", "(IA)^3 adapter"),
    (".w_norm", "LyCORIS GLoRA adapter"),
    (".a1.weight", "LyCORIS GLoRA adapter"),
)
ARCHITECTURES = (  # key prefixes of models other than SD 1.x/2.x's diffusers layout
    (("lora_te2_", "text_encoder_2."), "SDXL (two text encoders)"),
    (
        (
            "lora_unet_input_blocks_",
            "lora_unet_middle_block_",
            "lora_unet_output_blocks_",
            "lora_unet_label_emb",
        ),
        "SDXL or the original LDM layout (input_blocks, middle_block, output_blocks)",
    ),
    (
        ("model.diffusion_model.", "diffusion_model."),
        "the original LDM checkpoint layout (diffusion_model.)",
    ),
    (
        (
            "lora_transformer_",
            "transformer.",
            "lora_unet_double_blocks_",
            "lora_unet_single_blocks_",
            "lora_unet_joint_blocks_",
        ),
        "a diffusion transformer (Flux, SD3, ...)",
    ),
)


class LoRAFileError(ValueError):
    """A LoRA file (or :class:`LoRAWeights`) that lorakit refuses; the message names the file and the key.

    Every refusal of a file's content is this one type, a ``ValueError``; a file that is not there
    is a ``FileNotFoundError``. A refused file changes nothing in the model it was meant for.
    """


class UnsupportedKind(LoRAFileError):
    """A well-formed file of a kind lorakit does not apply (LoHa, LoKr, DoRA, SDXL, ...): ``lorakit info`` still
    describes it."""


@dataclass
class LoRAWeights:
    """A LoRA as lorakit holds it: per-module A and B, the rank and alpha most modules share, ``alphas`` for the rest.

    A is ``(r, in)`` (a convolution's ``(r, in, kh, kw)``), B ``(out, r)`` (``(out, r, 1, 1)``); a module's rank is
    its A's rows (:meth:`rank`), its alpha ``alphas.get(path, alpha)`` (:meth:`alpha_of`). Text-encoder modules
    are named ``text_encoder.<path>``. ``format`` is where it came from: "kohya", "diffusers", "peft", or
    "lorakit" (:func:`from_model`, ``lorakit.svd_tools``).
    """

    format: str
    r: int
    alpha: float
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    use_rslora: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    alphas: dict[str, float] = field(default_factory=dict)  # modules whose alpha is not ``alpha``

    @property
    def scaling(self) -> float:
        """``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA): every module's, unless ranks or alphas differ (:meth:`scaling_of`)."""
        return self.alpha / (self.r**0.5 if self.use_rslora else self.r)

    @property
    def modules(self) -> list[str]:
        return list(self.A)

    @property
    def text_modules(self) -> list[str]:
        """The text encoder's modules (``text_encoder.<path>``)."""
        return [m for m in self.A if m.startswith(TEXT_PREFIX)]

    @property
    def uniform(self) -> bool:
        """One rank and one alpha for every module."""
        return not self.alphas and all(self.rank(m) == self.r for m in self.A)

    def rank(self, path: str) -> int:
        return int(self.A[path].shape[0])

    def alpha_of(self, path: str) -> float:
        return float(self.alphas.get(path, self.alpha))

    def scaling_of(self, path: str) -> float:
        """What multiplies ``B @ A`` in module ``path``: its alpha over its rank (or its square root, rsLoRA)."""
        r = self.rank(path)
        return self.alpha_of(path) / (r**0.5 if self.use_rslora else r)

    def kind(self, path: str) -> str:
        """ "linear", "conv 1x1" or "conv 3x3" (the kernel of a convolution's A)."""
        a = self.A[path]
        return "linear" if a.ndim == 2 else f"conv {a.shape[2]}x{a.shape[3]}"

    def matrix(self, path: str) -> torch.Tensor:
        """``scaling * B @ A`` as a matrix, ``(out, in)``; a convolution's ``(out, in * kh * kw)``. In float32."""
        a, b = self.A[path].float(), self.B[path].float()
        return (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)) * self.scaling_of(path)

    def delta_weight(self, path: str) -> torch.Tensor:
        """``scaling * B @ A`` in the shape of the layer's weight: ``(out, in)``, a convolution's ``(out, in, kh, kw)``."""
        a = self.A[path]
        return self.matrix(path).reshape(self.B[path].shape[0], *a.shape[1:])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Keys as ``inject.lora_state_dict`` writes them."""
        return {
            f"{p}.lora_{ab}.weight": t[p]
            for p in self.A
            for ab, t in (("A", self.A), ("B", self.B))
        }

    def subset(self, paths) -> LoRAWeights:
        """The same LoRA on ``paths`` only (e.g. ``weights.subset(m for m in weights.modules if ...)``)."""
        paths = [m for m in paths if m in self.A]
        return _build(
            self.format,
            {m: self.A[m] for m in paths},
            {m: self.B[m] for m in paths},
            {m: self.alpha_of(m) for m in paths},
            self.use_rslora,
            dict(self.metadata),
        )


TEXT_MODEL = (
    "text_model."  # CLIP's inner module: in every file's names, flattened away by transformers 5
)


def canonical(path: str) -> str:
    """A module path as LoRA files spell it: a text-encoder module's with CLIP's ``text_model.`` in it, whichever
    transformers version built the model (``text_encoder.encoder.layers.0...`` -> ``text_encoder.text_model.encoder...``)."""
    if path.startswith(TEXT_PREFIX) and not path[len(TEXT_PREFIX) :].startswith(TEXT_MODEL):
        return TEXT_PREFIX + TEXT_MODEL + path[len(TEXT_PREFIX) :]
    return path


def _most_common(values):
    """The value most modules have (ties: the largest)."""
    counts = collections.Counter(values)
    return max(counts, key=lambda v: (counts[v], v))


def _build(
    fmt: str,
    A: dict,
    B: dict,
    alphas: dict[str, float],
    use_rslora: bool = False,
    metadata: dict | None = None,
) -> LoRAWeights:
    """A :class:`LoRAWeights` from per-module A, B and alpha: ``r`` and ``alpha`` are what most modules have."""
    if not A:
        return LoRAWeights(fmt, 1, 1.0, {}, {}, use_rslora, metadata or {})
    r = _most_common(int(a.shape[0]) for a in A.values())
    alpha = _most_common(alphas[m] for m in A if int(A[m].shape[0]) == r)
    return LoRAWeights(
        fmt,
        r,
        float(alpha),
        A,
        B,
        use_rslora,
        metadata or {},
        {m: float(a) for m, a in alphas.items() if a != alpha},
    )


def from_model(model) -> LoRAWeights:
    """The LoRA weights of an injected model, or of a pipeline's UNet and text encoder (the runtime ``scale`` is not saved)."""
    layers = list(inject.lora_layers(model))
    if not layers:
        raise RuntimeError(
            "this model has no LoRA layers to save: call inject.inject_lora(model) first."
        )
    rslora = {layer.use_rslora for _, layer in layers}
    if len(rslora) > 1:
        raise ValueError(
            "LoRA files hold one scaling rule, but some layers use rsLoRA and others not."
        )
    copy = lambda t: t.detach().to("cpu", torch.float32).contiguous().clone()  # noqa: E731
    layers = [(canonical(n), m) for n, m in layers]
    return _build(
        "lorakit",
        {n: copy(m.lora_A.weight) for n, m in layers},
        {n: copy(m.lora_B.weight) for n, m in layers},
        {n: float(m.alpha) for n, m in layers},
        rslora.pop(),
    )


# --- writing ---------------------------------------------------------------------------


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file, byte for byte the same for the same tensors and metadata.

    (safetensors itself writes the metadata in the order of a hash map, which changes from one process
    to the next; the header is rewritten here with the metadata sorted, the tensors in file order.)
    """
    raw = safetensors.torch.save(
        {k: v.contiguous().clone() for k, v in tensors.items()}, metadata=metadata
    )
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda kv: kv[1]["data_offsets"],
    )
    ordered = (
        {"__metadata__": dict(sorted(header["__metadata__"].items()))}
        if "__metadata__" in header
        else {}
    )
    ordered |= dict(entries)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def _save_safetensors(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    files.write_atomically(path, safetensors_bytes(tensors, metadata))


def kohya_names_of(path: str) -> list[str]:
    """The kohya keys of a module path: ``lora_unet_<path with _>``; a text-encoder module's ``lora_te_<path>``
    and the ``lora_te1_`` some tools write. A kohya name that no model resolved is its own."""
    if path.startswith(KOHYA_PREFIXES):
        return [path]
    if path.startswith(TEXT_PREFIX):
        return [kp + path[len(TEXT_PREFIX) :].replace(".", "_") for kp in KOHYA_TEXT_PREFIXES]
    return [KOHYA_PREFIX + path.replace(".", "_")]


def kohya_name(path: str) -> str:
    """The kohya key lorakit writes for a module path (the first of :func:`kohya_names_of`)."""
    return kohya_names_of(path)[0]


def _peft_config(weights: LoRAWeights, paths: list[str], strip: str = "") -> dict:
    """The LoraConfig fields of ``paths`` (names without ``strip``): the commonest rank and alpha, patterns for the rest."""
    part = weights.subset(paths)
    name = lambda m: m[len(strip) :].removeprefix(TEXT_MODEL)  # noqa: E731 (a suffix that CLIP matches in any version)
    return {
        "r": part.r,
        "lora_alpha": part.alpha,
        "use_rslora": weights.use_rslora,
        "target_modules": [name(m) for m in paths],
        "rank_pattern": {name(m): part.rank(m) for m in paths if part.rank(m) != part.r},
        "alpha_pattern": {
            name(m): part.alpha_of(m) for m in paths if part.alpha_of(m) != part.alpha
        },
    }


def save_weights(
    weights: LoRAWeights,
    path: str | Path,
    format: str = "kohya",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``weights`` as ``format``; returns the file written (for PEFT, the folder)."""
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}.")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"lorakit writes safetensors only; name the file {path.with_suffix('.safetensors').name}."
        )
    check_weights(weights)
    unresolved = [m for m in weights.modules if m.startswith(KOHYA_PREFIXES)]
    if unresolved and format != "kohya":
        raise ValueError(
            f"{len(unresolved)} kohya names (e.g. {unresolved[0]}) were not mapped to module paths: "
            "load the file with load_lora(path, model=your_pipeline) before writing another format."
        )
    own = {"lorakit_version": lorakit.__version__, "lorakit_format": format, **(metadata or {})}
    text = weights.text_modules
    unet = [m for m in weights.modules if m not in text]
    if format == "kohya":
        if path.suffix != ".safetensors":
            raise ValueError(f"a kohya LoRA is one .safetensors file, got {path}.")
        # kohya knows only alpha / r (rsLoRA folds into alpha). One alpha value for every module: a module whose
        # alpha differs has the ratio folded into its lora_up, because diffusers misreads per-module alphas in
        # kohya files (its per-module ranks it reads right); every tool then applies the same delta W.
        alphas = {p: weights.scaling_of(p) * weights.rank(p) for p in weights.modules}
        alpha = _most_common(alphas.values())
        tensors = {}
        for p in weights.modules:
            name = kohya_name(p)
            up = weights.B[p] if alphas[p] == alpha else weights.B[p] * (alphas[p] / alpha)
            tensors |= {
                f"{name}.lora_down.weight": weights.A[p],
                f"{name}.lora_up.weight": up,
                f"{name}.alpha": torch.tensor(alpha),
            }  # 0-dim
        uniform = all(weights.rank(p) == weights.r for p in weights.modules)
        kohya = {
            "ss_network_dim": str(weights.r) if uniform else "Dynamic",
            "ss_network_alpha": f"{alpha:g}",
            "ss_network_module": "networks.lora",
            "ss_base_model_version": "sd_v1",
            "ss_v2": "False",
            "ss_output_name": path.stem,
            "ss_text_encoder_lr": "" if text else "0",
        }
        convs = [m for m in weights.modules if weights.kind(m) not in ("linear", "conv 1x1")]
        if convs:  # kohya's LoCon: conv_dim and conv_alpha in the network arguments
            kohya["ss_network_args"] = json.dumps(
                {"conv_dim": str(weights.rank(convs[0])), "conv_alpha": f"{alpha:g}"}
            )
        _save_safetensors(tensors, path, kohya | own)
        return path
    if format == "diffusers":
        path = path if path.suffix == ".safetensors" else path / DIFFUSERS_FILE
        packed = {}  # as diffusers' save_lora_weights packs it: "unet.r", "text_encoder.r", ...
        for prefix, paths, strip in (
            (DIFFUSERS_PREFIX, unet, ""),
            (TEXT_PREFIX, text, TEXT_PREFIX),
        ):
            if paths:
                packed |= {prefix + k: v for k, v in _peft_config(weights, paths, strip).items()}
        tensors = {
            (k if k.startswith(TEXT_PREFIX) else DIFFUSERS_PREFIX + k): v
            for k, v in weights.state_dict().items()
        }
        _save_safetensors(
            tensors, path, {"format": "pt", METADATA_KEY: json.dumps(packed, sort_keys=True)} | own
        )
        return path
    if path.suffix == ".safetensors":
        raise ValueError(
            f"a PEFT adapter is a folder ({PEFT_FILE} + {PEFT_CONFIG}); give a folder, not {path}."
        )
    if not unet:
        raise ValueError(
            f"a PEFT folder holds the UNet's adapter (and the text encoder's in {PEFT_TEXT_FOLDER}/); "
            "this LoRA has text-encoder modules only: write it as kohya or diffusers."
        )
    for folder, paths, strip in ((path, unet, ""), (path / PEFT_TEXT_FOLDER, text, TEXT_PREFIX)):
        if not paths:
            continue
        config = _peft_config(weights, paths, strip) | {
            "peft_type": "LORA",
            "task_type": None,
            "bias": "none",
            "lora_dropout": 0.0,
            "fan_in_fan_out": False,
            "inference_mode": True,
            "base_model_name_or_path": None,
        }
        tensors = {
            PEFT_PREFIX + p[len(strip) :].removeprefix(TEXT_MODEL) + f".lora_{ab}.weight": t[p]
            for p in paths
            for ab, t in (("A", weights.A), ("B", weights.B))
        }
        _save_safetensors(tensors, folder / PEFT_FILE, {"format": "pt"} | own)
        files.write_atomically(folder / PEFT_CONFIG, json.dumps(config, indent=2, sort_keys=True))
    return path


def save_lora(
    model, path: str | Path, format: str = "kohya", metadata: dict[str, str] | None = None
) -> Path:
    """Save the LoRA layers of ``model`` (a UNet, or a pipeline with LoRA in its text encoder too) as a kohya,
    diffusers or PEFT file."""
    return save_weights(from_model(model), path, format, metadata)


# --- reading ---------------------------------------------------------------------------

MAX_HEADER_BYTES = (
    32 * 2**20
)  # SD 1.5's largest LoRAs have headers of a few hundred KB, metadata included
MAX_TENSORS = 20_000  # a full SDXL LoRA (UNet, both text encoders, convolutions) has under 10,000
MAX_CONFIG_BYTES = 2**20  # adapter_config.json
FLOAT_DTYPES = (
    "F16",
    "BF16",
    "F32",
    "F64",
)  # safetensors' names of the floating-point dtypes lorakit reads


def _looks_like_pickle(path: Path, head: bytes, size: int) -> bool:
    """A torch.save zip, or a raw pickle: the PROTO opcode (protocol 2-5), an opcode after it, the STOP opcode
    ``.`` last. (A safetensors header of 640 bytes also begins 0x80 0x02, but zeros follow it.)"""
    if head.startswith(b"PK\x03\x04"):
        return True
    if (
        head[:1] != b"\x80"
        or head[1:2] not in (b"\x02", b"\x03", b"\x04", b"\x05")
        or head[2:3] in (b"", b"\x00")
    ):
        return False
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"."


def _read_header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """The tensor entries (name -> dtype, shape, offsets) and the metadata of a safetensors file, read from
    its header alone: pickles, broken headers and oversized files are refused before any tensor is read."""
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}.")
    refuse = (
        f"{path} is a pickle-based checkpoint, which can run arbitrary code when loaded; lorakit "
        "reads .safetensors only. Ask for a .safetensors version of this LoRA, or convert it yourself "
        "in a sandbox with code you trust."
    )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoRAFileError(refuse)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if not (len(head) == 9 and header_len <= size - 8 and head[8:9] == b"{"):
        if _looks_like_pickle(path, head, size):
            raise LoRAFileError(refuse)  # whatever its name
        why = (
            f"{size} bytes is too short for a header"
            if header_len < 0
            else f"its header claims {header_len} bytes but the file has {size} (truncated?)"
            if header_len > size - 8
            else "its header is not JSON"
        )
        raise LoRAFileError(f"{path} is not a valid safetensors file: {why}.")
    if header_len > MAX_HEADER_BYTES:
        raise LoRAFileError(
            f"{path} is not a LoRA lorakit reads: its header is {header_len / 2**20:.0f} MB, "
            f"more than the {MAX_HEADER_BYTES // 2**20} MB of any LoRA's (a full model, or a "
            "file made to exhaust memory?)."
        )
    with open(path, "rb") as f:
        f.seek(8)
        text = f.read(header_len)
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LoRAFileError(
            f"{path} is not a valid safetensors file: its header is not JSON ({error})."
        ) from None
    if not isinstance(header, dict):
        raise LoRAFileError(
            f"{path} is not a valid safetensors file: its header is a JSON "
            f"{type(header).__name__}, not an object."
        )
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LoRAFileError(
            f"{path} is not a valid safetensors file: its __metadata__ is not an object of strings."
        )
    if len(header) > MAX_TENSORS:
        raise LoRAFileError(
            f"{path} is not a LoRA lorakit reads: it holds {len(header):,} tensors, more than the "
            f"{MAX_TENSORS:,} of any LoRA's."
        )
    for key, entry in header.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
        ):
            raise LoRAFileError(
                f"{path} is not a valid safetensors file: the entry of {key!r} has no dtype and shape."
            )
    return header, metadata


def _read_tensors(path: Path, header: dict[str, dict], keys: list[str]) -> dict[str, torch.Tensor]:
    """The tensors ``keys`` of the file, each checked: a floating-point dtype, every value finite."""
    wrong = [f"{k} ({header[k]['dtype']})" for k in keys if header[k]["dtype"] not in FLOAT_DTYPES]
    if wrong:
        raise LoRAFileError(
            f"{path}: LoRA weights are floating point, but {len(wrong)} tensors are not: "
            f"{', '.join(wrong[:3])}. The file is broken, or not a LoRA."
        )
    try:
        with safetensors.safe_open(str(path), "pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in keys}
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise LoRAFileError(f"{path} is not a valid safetensors file: {error}.") from None
    for key, tensor in tensors.items():
        bad = tensor.numel() - int(torch.isfinite(tensor).sum())
        if bad:
            raise LoRAFileError(
                f"{path}: {key} holds {bad} NaN or infinite values of {tensor.numel()}; the "
                "LoRA is broken (a training run that diverged?): use an earlier checkpoint, "
                "or retrain with a lower learning rate."
            )
    return tensors


def _kohya_names(model) -> dict[str, str]:
    """kohya name -> module path, from the model's real module names (no guessing where the dots were): a UNet's,
    or a pipeline's UNet and text encoder (``text_encoder.<path>``); a UNet alone takes SD 1.5's text encoder's."""
    parts = inject.components(model)
    paths = [canonical(prefix + n) for prefix, part in parts for n, _ in part.named_modules() if n]
    names = {name: path for path in paths for name in kohya_names_of(path)}
    if len(parts) == 1:
        names = _sd_text_names() | names
    return names


@functools.lru_cache(maxsize=1)
def _sd_text_names() -> dict[str, str]:
    """kohya name -> ``text_encoder.<path>`` of SD 1.5's text encoder (the tiny SD's layers are its first), on meta."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from lorakit import models

    with torch.device("meta"):
        te = CLIPTextModel(CLIPTextConfig(**models.SD15_TEXT_CONFIG))
    paths = [canonical(TEXT_PREFIX + n) for n, _ in te.named_modules() if n]
    return {name: path for path in paths for name in kohya_names_of(path)}


@functools.lru_cache(maxsize=1)
def _sd_kohya_names() -> dict[str, str]:
    """:func:`_kohya_names` of SD 1.5's UNet and text encoder (the tiny SD shares every path), built on the meta device."""
    from diffusers import UNet2DConditionModel

    from lorakit import models

    with torch.device("meta"):
        return _kohya_names(UNet2DConditionModel(**models.SD15_UNET_CONFIG))


def _split(keys, suffixes: tuple[str, ...]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Group keys by module: {module: {suffix: key}}; keys with other endings are returned apart."""
    groups, others = {}, []
    for key in keys:
        suffix = next((s for s in suffixes if key.endswith("." + s)), None)
        if suffix is None:
            others.append(key)
        else:
            groups.setdefault(key[: -len(suffix) - 1], {})[suffix] = key
    return groups, others


def _architecture(keys) -> str | None:
    """The other architecture (SDXL, LDM layout, a DiT) that ``keys`` show, if any."""
    return next(
        (what for prefixes, what in ARCHITECTURES if any(k.startswith(prefixes) for k in keys)),
        None,
    )


def _variant(key: str) -> str | None:
    """The adapter kind lorakit does not apply that a key shows (LoHa, LoKr, DoRA, ...), if any."""
    return next(
        (what for words, what in VARIANTS if words in "." + key.split(".", 1)[-1] or words in key),
        None,
    )


def _module_of(key: str) -> str:
    """The module a key belongs to: the key without its last name (and without ``.weight``/``.bias`` before that)."""
    bare = (
        key[: -len(".weight")]
        if key.endswith(".weight")
        else key[: -len(".bias")]
        if key.endswith(".bias")
        else key
    )
    return bare.rsplit(".", 1)[0]


def _unsupported(path: Path, keys: list[str], what: str, lora_modules=()) -> LoRAFileError:
    """The refusal of keys that are not plain LoRA: named by kind (and module) where the key shows it;
    ``lora_modules``: the modules with plain LoRA halves, to tell a file of mixed kinds."""
    kinds: dict[str, list[str]] = {}
    for key in keys:
        kinds.setdefault(_variant(key) or "", []).append(key)
    named = {k: v for k, v in kinds.items() if k}
    if named:
        kind, found = next(iter(named.items()))
        modules = {_module_of(k) for k in found}
        plain = (
            set(lora_modules) - modules
        )  # (DoRA and a Tucker core come with lora halves on their own modules)
        mixed = f" beside {len(plain)} plain LoRA modules (a file of mixed kinds)" if plain else ""
        n = len(modules)
        return UnsupportedKind(
            f"{path} holds a {kind} on {n} module{'s' if n != 1 else ''}{mixed} "
            f"(e.g. {_module_of(found[0])}: {found[0]}); lorakit applies plain LoRA (linear, 1x1 and "
            "3x3 convolutions) only, so nothing was loaded: use a tool that applies this kind (ComfyUI, "
            "or AUTOMATIC1111 with LyCORIS support), or a plain LoRA of it."
        )
    return LoRAFileError(
        f"{path} has {len(keys)} keys that lorakit cannot read as {what} "
        f"(e.g. {', '.join(keys[:5])}); it reads plain LoRA (lora_down/lora_up, lora_A/lora_B) only."
    )


def _settings(path: Path, where: str, text: str, prefix: str = "") -> dict:
    """The LoRA settings in a JSON object (diffusers' metadata entry, PEFT's adapter_config.json), checked:
    ``r`` a positive integer, ``lora_alpha`` a positive finite number, ``use_rslora``/``use_dora`` booleans,
    the patterns objects. Keys are returned without ``prefix``; the messages name them as the file has them."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LoRAFileError(
            f"{path}: {where} is not valid JSON ({error}); rewrite the file with "
            "`lorakit convert` or the tool that made it."
        ) from None
    if not isinstance(value, dict):
        raise LoRAFileError(
            f"{path}: {where} is a JSON {type(value).__name__}, not an object of LoRA settings "
            "(r, lora_alpha, ...)."
        )
    config = {k[len(prefix) :]: v for k, v in value.items() if k.startswith(prefix)}
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    rules = {
        "r": (lambda v: number(v) and v == int(v) and v > 0, "a positive integer"),
        "lora_alpha": (lambda v: number(v) and math.isfinite(v), "a finite number"),
        "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
        "use_dora": (lambda v: isinstance(v, bool), "true or false"),
        "peft_type": (lambda v: isinstance(v, str), "a string"),
        "rank_pattern": (lambda v: isinstance(v, dict), "an object"),
        "alpha_pattern": (lambda v: isinstance(v, dict), "an object"),
    }
    for key, (ok, what) in rules.items():
        if config.get(key) is not None and not ok(config[key]):
            raise LoRAFileError(
                f"{path}: {where} has {prefix}{key} = {json.dumps(config[key])[:60]}; it must be "
                f"{what}."
            )
    return config


def _alpha(path: Path, key: str, tensor: torch.Tensor) -> float:
    """A kohya ``.alpha`` tensor as a number: one element, finite (checked when read)."""
    if tensor.numel() != 1:
        raise LoRAFileError(
            f"{path}: {key} holds {tensor.numel()} values of shape {tuple(tensor.shape)}; a kohya "
            "alpha is one number."
        )
    return float(tensor.reshape(()))


def load_lora(path: str | Path, model=None) -> LoRAWeights:
    """Read a kohya/diffusers file or a PEFT folder; the format is detected from keys and layout.

    kohya names (``lora_unet_down_blocks_0_...``, ``lora_te_text_model_...``) are mapped back to module
    paths through the module names of ``model`` (a UNet or a pipeline), or of SD 1.5's UNet and text
    encoder (the tiny SD's are the same) by default. The format is told from the header's key names
    before any tensor is read; every tensor and setting is checked (:class:`LoRAFileError` names the
    file and the key).
    """
    path = Path(path)
    if path.is_dir():
        if (path / PEFT_FILE).is_file():
            weights = _load_file(path / PEFT_FILE, model)
            text = path / PEFT_TEXT_FOLDER / PEFT_FILE
            if not text.is_file():
                return weights
            te = _load_file(text, model, TEXT_PREFIX)
            if te.use_rslora != weights.use_rslora:
                raise LoRAFileError(
                    f"{path}: the UNet's and the text encoder's adapters disagree on use_rslora."
                )
            return _build(
                "peft",
                weights.A | te.A,
                weights.B | te.B,
                {m: w.alpha_of(m) for w in (weights, te) for m in w.modules},
                weights.use_rslora,
                weights.metadata,
            )
        if (path / DIFFUSERS_FILE).is_file():
            return _load_file(path / DIFFUSERS_FILE, model)
        raise FileNotFoundError(
            f"{path} holds neither {PEFT_FILE} (PEFT) nor {DIFFUSERS_FILE} (diffusers)."
        )
    return _load_file(path, model)


def _load_file(path: Path, model=None, peft_prefix: str = "") -> LoRAWeights:
    """:func:`load_lora` of one safetensors file (``peft_prefix``: the prefix of a PEFT text-encoder adapter's paths)."""
    header, metadata = _read_header(path)
    keys = list(header)
    other = _architecture(keys)
    if other:
        key = next(k for k in keys if _architecture([k]) == other)
        raise UnsupportedKind(
            f"{path} is a LoRA for {other} (e.g. {key}); lorakit applies LoRAs for SD 1.x and 2.x "
            "(diffusers' module names for the UNet and one text encoder), so nothing was loaded."
        )
    configs: dict[
        str, dict
    ] = {}  # component prefix ("" UNet, "text_encoder.") -> LoraConfig fields
    alpha_keys: dict[str, str] = {}
    if any(k.startswith(KOHYA_PREFIXES) for k in keys):
        fmt = "kohya"
        groups, others = _split(keys, ("lora_down.weight", "lora_up.weight", "alpha"))
        others += [
            k for m, g in groups.items() if not m.startswith(KOHYA_PREFIXES) for k in g.values()
        ]
        if others:
            raise _unsupported(path, others, "kohya LoRA", groups)
        known = _kohya_names(model) if model is not None else _sd_kohya_names()
        halves = {
            known.get(m, m): (g.get("lora_down.weight"), g.get("lora_up.weight"))
            for m, g in groups.items()
        }
        alpha_keys = {known.get(m, m): g["alpha"] for m, g in groups.items() if "alpha" in g}
        names = ("lora_down", "lora_up")
    elif any(k.startswith((PEFT_PREFIX, DIFFUSERS_PREFIX, TEXT_PREFIX)) for k in keys):
        peft = any(k.startswith(PEFT_PREFIX) for k in keys)
        fmt = "peft" if peft else "diffusers"
        prefixes = (PEFT_PREFIX,) if peft else (DIFFUSERS_PREFIX, TEXT_PREFIX)
        groups, others = _split(keys, ("lora_A.weight", "lora_B.weight"))
        others += [k for m, g in groups.items() if not m.startswith(prefixes) for k in g.values()]
        if others:
            raise _unsupported(path, others, f"{fmt} LoRA", groups)
        rename = (
            (lambda m: canonical(peft_prefix + m[len(PEFT_PREFIX) :]))
            if peft
            else (
                lambda m: canonical(m) if m.startswith(TEXT_PREFIX) else m[len(DIFFUSERS_PREFIX) :]
            )
        )
        halves = {
            rename(m): (g.get("lora_A.weight"), g.get("lora_B.weight")) for m, g in groups.items()
        }
        names = ("lora_A", "lora_B")
        if fmt == "diffusers" and METADATA_KEY in metadata:
            for part, prefix in (("", DIFFUSERS_PREFIX), (TEXT_PREFIX, TEXT_PREFIX)):
                configs[part] = _settings(
                    path, f"the {METADATA_KEY} metadata", metadata[METADATA_KEY], prefix
                )
        elif fmt == "peft" and (path.parent / PEFT_CONFIG).is_file():
            config_file = path.parent / PEFT_CONFIG
            if config_file.stat().st_size > MAX_CONFIG_BYTES:
                raise LoRAFileError(
                    f"{config_file} is {config_file.stat().st_size:,} bytes; a PEFT adapter_config.json "
                    "is a few hundred."
                )
            configs[peft_prefix] = _settings(
                config_file, "the adapter config", config_file.read_bytes()
            )
        elif fmt == "peft":
            warnings.warn(
                f"no {PEFT_CONFIG} next to {path.name}: assuming lora_alpha = r.", stacklevel=3
            )
    else:
        raise LoRAFileError(
            f"cannot tell the LoRA format of {path}: expected kohya keys ({KOHYA_PREFIX}..."
            f".lora_down.weight), diffusers keys ({DIFFUSERS_PREFIX}....lora_A.weight) or PEFT "
            f"keys ({PEFT_PREFIX}....lora_A.weight), found {', '.join(keys[:3]) or 'no tensors'}."
        )
    missing = [
        f"{m}: {names[0] if a is None else names[1]} is missing ({names[1] if a is None else names[0]} is there)"
        for m, (a, b) in halves.items()
        if a is None or b is None
    ]
    if missing or not halves:
        raise LoRAFileError(
            f"{path} is not a LoRA lorakit can load: {'; '.join(missing[:5]) or 'no LoRA tensors'}"
            f"{' (the file is incomplete: save it again from the tool that made it)' if missing else ''}."
        )
    tensors = _read_tensors(
        path, header, [k for pair in halves.values() for k in pair] + list(alpha_keys.values())
    )
    alphas = {m: _alpha(path, k, tensors[k]) for m, k in alpha_keys.items()}
    return _assemble(path, fmt, tensors, halves, alphas, configs, metadata)


def _config_for(configs: dict[str, dict], module: str) -> dict:
    prefix = TEXT_PREFIX if module.startswith(TEXT_PREFIX) else ""
    return configs.get(prefix, {})


def _assemble(path, fmt, tensors, halves, alphas, configs, metadata) -> LoRAWeights:
    """Check every module's pair (2-D, or a convolution's 4-D with a 1x1 up; one rank for both halves) and its
    alpha; build the LoRAWeights."""
    problems = []
    for m, (a, b) in halves.items():
        ta, tb = tensors[a], tensors[b]
        if (
            ta.ndim not in (2, 4)
            or tb.ndim != ta.ndim
            or (tb.ndim == 4 and tuple(tb.shape[2:]) != (1, 1))
        ):
            problems.append(
                f"{m}: {a.rsplit('.', 2)[-2]} {tuple(ta.shape)} and {b.rsplit('.', 2)[-2]} {tuple(tb.shape)} "
                "are neither a linear pair (2-D) nor a convolution's (4-D, a 1x1 up)"
            )
        elif ta.shape[0] != tb.shape[1]:
            problems.append(
                f"{m}: the ranks disagree, {a.rsplit('.', 2)[-2]} {tuple(ta.shape)} has {ta.shape[0]} rows "
                f"but {b.rsplit('.', 2)[-2]} {tuple(tb.shape)} has {tb.shape[1]} columns"
            )
    if problems:
        raise LoRAFileError(
            f"{path} is not a LoRA lorakit can load: {'; '.join(problems[:3])}"
            f"{' ...' if len(problems) > 3 else ''}. The file is broken: save it again from the tool "
            "that made it."
        )
    for config in configs.values():
        if config.get("use_dora") or config.get("peft_type", "LORA") != "LORA":
            raise UnsupportedKind(
                f"{path} is a {config.get('peft_type')} adapter (use_dora={config.get('use_dora')}); "
                "lorakit loads plain LoRA only."
            )
    zero = next((m for m, (a, _) in halves.items() if tensors[a].shape[0] == 0), None)
    if zero is not None:
        raise LoRAFileError(
            f"{path} holds a LoRA of rank 0 ({zero}: A of shape {tuple(tensors[halves[zero][0]].shape)}), "
            "which changes nothing: the file is broken; save it again from the trained model."
        )
    rslora = {bool(c.get("use_rslora", False)) for c in configs.values() if c}
    module_alphas = {}
    for m, (a, _) in halves.items():
        r = int(tensors[a].shape[0])
        config = _config_for(configs, m)
        name = (
            m[len(TEXT_PREFIX) :] if m.startswith(TEXT_PREFIX) else m
        )  # patterns match it as a suffix
        if m in alphas:  # kohya's per-module tensor
            alpha, where = alphas[m], f"its {kohya_name(m)}.alpha tensor"
        else:  # the config's alpha_pattern or lora_alpha, else alpha = r (kohya, diffusers and PEFT agree)
            alpha = inject._pattern(config.get("alpha_pattern"), name, config.get("lora_alpha"))
            where = f"{'the ' + METADATA_KEY + ' metadata' if fmt == 'diffusers' else PEFT_CONFIG} lora_alpha"
        if alpha is not None and not (isinstance(alpha, numbers.Real) and math.isfinite(alpha)):
            raise LoRAFileError(
                f"{path}: alpha of {m} is {alpha!r} in {where}; it must be a finite number."
            )
        alpha = float(r if alpha is None else alpha)
        if alpha == 0:
            raise LoRAFileError(
                f"{path}: alpha is 0 in {where}. Tools disagree on what that means (kohya's scripts and "
                "AUTOMATIC1111 read it as alpha = r, diffusers and ComfyUI as a LoRA that does nothing), "
                f"so lorakit refuses to guess: set it to {r} (alpha = r) or to the alpha it was trained with."
            )
        module_alphas[m] = alpha
    weights = _build(
        fmt,
        {m: tensors[a].float() for m, (a, _) in halves.items()},
        {m: tensors[b].float() for m, (_, b) in halves.items()},
        module_alphas,
        rslora.pop() if len(rslora) == 1 else False,
        metadata,
    )
    check_weights(weights, str(path))
    return weights


def check_weights(weights: LoRAWeights, source: str = "the LoRA") -> None:
    """Refuse weights that no model should get: r not a positive integer, an alpha not positive and finite,
    A or B not float, not a pair of one rank (2-D, or 4-D with a 1x1 B), or not finite (``source`` names them)."""
    if isinstance(weights.r, bool) or not isinstance(weights.r, int) or weights.r <= 0:
        raise LoRAFileError(f"{source}: r must be a positive integer, got r={weights.r!r}.")
    for name, alpha in [("", weights.alpha), *((f" of {m}", a) for m, a in weights.alphas.items())]:
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, numbers.Real)
            or not (math.isfinite(alpha) and alpha > 0)
        ):
            raise LoRAFileError(
                f"{source}: alpha{name} must be a positive finite number, got alpha={alpha!r}; "
                f"alpha = r ({weights.r}) gives scaling 1."
            )
    if (
        set(weights.A) != set(weights.B)
        or not weights.A
        or not set(weights.alphas) <= set(weights.A)
    ):
        raise LoRAFileError(
            f"{source}: A and B (and the per-module alphas) name different modules, or none."
        )
    for m in weights.A:
        a, b = weights.A[m], weights.B[m]
        for ab, t in (("A", a), ("B", b)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim not in (2, 4):
                raise LoRAFileError(
                    f"{source}: {ab} of {m} must be a 2-D (or a convolution's 4-D) float tensor, got "
                    f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}."
                )
        if (
            b.ndim != a.ndim
            or (b.ndim == 4 and tuple(b.shape[2:]) != (1, 1))
            or a.shape[0] != b.shape[1]
            or a.shape[0] == 0
        ):
            raise LoRAFileError(
                f"{source}: A {tuple(a.shape)} and B {tuple(b.shape)} of {m} must be a pair of one "
                "rank above 0: A (r, in) and B (out, r), or a convolution's A (r, in, kh, kw) and B (out, r, 1, 1)."
            )
        if not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise LoRAFileError(
                f"{source}: A or B of {m} holds NaN or infinite values: the LoRA is broken."
            )
    if weights.r not in {weights.rank(m) for m in weights.A}:
        raise LoRAFileError(
            f"{source}: r={weights.r} is the rank of no module (their A have "
            f"{sorted({weights.rank(m) for m in weights.A})} rows)."
        )


# --- using ----------------------------------------------------------------------------


def _fit(module: nn.Module, a: torch.Tensor, b: torch.Tensor, r: int) -> str | None:
    """Why A and B do not fit ``module`` (None if they do): the kind, the shapes, the rank."""
    if not inject.wrappable(module):
        return f"a {type(module).__name__}, not a linear layer or convolution"
    n_in, n_out = inject.shape_of(module)
    kernel = tuple(module.kernel_size) if isinstance(module, nn.Conv2d) else (1, 1)
    file_kernel = tuple(a.shape[2:]) if a.ndim == 4 else (1, 1)
    if file_kernel != kernel:
        what = (
            "a linear layer"
            if isinstance(module, nn.Linear)
            else f"a {kernel[0]}x{kernel[1]} convolution"
        )
        return f"a {file_kernel[0]}x{file_kernel[1]} convolution LoRA for {what}"
    file_in, file_out = a[0].numel(), b.shape[0]
    if (file_in, file_out) != (n_in, n_out):
        return f"file {file_in}->{file_out} vs model {n_in}->{n_out}"
    if r > min(n_in, n_out):
        return f"rank {r} above min(in, out) = {min(n_in, n_out)}"
    return None


def resolve_modules(
    model, weights: LoRAWeights
) -> tuple[dict[str, str], dict[str, nn.Module], list[str]]:
    """Where each module of ``weights`` goes in ``model`` (a UNet or a pipeline): ``{module: model path}``,
    ``{model path: its base layer}`` for the modules that fit (:func:`_fit`), and a line for each that does not."""
    parts = inject.components(model)
    modules = {prefix + n: m for prefix, part in parts for n, m in part.named_modules()}
    kohya = _kohya_names(model)  # for kohya names that load_lora could not resolve
    flat = lambda m: m.replace(TEXT_PREFIX + TEXT_MODEL, TEXT_PREFIX, 1)  # noqa: E731 (CLIP as transformers 5 builds it)
    paths, bases, problems = {}, {}, []
    for m in weights.modules:
        p = kohya.get(m, m)
        p = paths[m] = p if p in modules or flat(p) not in modules else flat(p)
        module = modules.get(p)
        base = module.base_layer if isinstance(module, lora.LoRALayer) else module
        if base is None and p.startswith(TEXT_PREFIX) and len(parts) == 1:
            problems.append(
                f"{p}: a text-encoder module, and this is a {type(model).__name__} alone (apply the LoRA "
                "to the pipeline, apply_lora(pipe, ...), or keep its UNet part: weights.subset(...))"
            )
        elif base is None:
            problems.append(f"{p}: no such module")
        elif why := _fit(base, weights.A[m], weights.B[m], weights.rank(m)):
            problems.append(f"{p}: {why}")
        else:
            bases[p] = base
    return paths, bases, problems


def apply_lora(model, weights: LoRAWeights | str | Path, scale: float = 1.0) -> list[str]:
    """Inject LoRA layers for ``weights`` (unless the model already has exactly those) and load them.

    ``model`` is a UNet, or a pipeline when the LoRA has text-encoder modules too (``text_encoder.<path>``).
    Everything is checked first (the weights, every module, shape and rank, ``scale``); a refusal leaves the
    model exactly as it was, ``requires_grad`` flags included: nothing is ever applied in part.
    """
    if isinstance(weights, LoRAWeights):
        check_weights(weights)
    else:
        weights = load_lora(
            weights, model if not isinstance(model, nn.Module) else None
        )  # checked as it is read
    inject.check_scale(scale)  # before anything changes (set_lora_scale checks it at the end)
    parts = inject.components(model)
    paths, bases, problems = resolve_modules(model, weights)
    if problems:
        raise LoRAFileError(
            f"the LoRA does not fit this {type(model).__name__}: {len(problems)} of {len(paths)} "
            f"modules do not match (nothing was loaded): {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}"
        )
    existing = dict(inject.lora_layers(model))
    if existing and (
        set(existing) != set(paths.values())
        or any(existing[paths[m]].r != weights.rank(m) for m in paths)
    ):
        raise RuntimeError(
            "the model already has LoRA layers on other modules or of another rank: "
            "call inject.remove_lora(model) first."
        )
    flags = {
        (prefix, name): p.requires_grad
        for prefix, part in parts
        for name, p in part.named_parameters()
    }
    state = {}
    for (
        m,
        p,
    ) in paths.items():  # the shapes of the layers: a 1x1 convolution's 4-D, a linear layer's 2-D
        base = bases[p]
        conv = isinstance(base, nn.Conv2d)
        a, b = weights.A[m], weights.B[m]
        state[f"{p}.lora_A.weight"] = (
            a.reshape(a.shape[0], base.in_channels, *base.kernel_size)
            if conv
            else a.reshape(a.shape[0], -1)
        )
        state[f"{p}.lora_B.weight"] = (
            b.reshape(b.shape[0], b.shape[1], 1, 1) if conv else b.reshape(b.shape[0], -1)
        )
    try:
        if not existing:
            for prefix, part in parts:
                mine = {
                    p[len(prefix) :]: m
                    for m, p in paths.items()
                    if p.startswith(prefix)
                    and (prefix or not p.startswith(TEXT_PREFIX) or len(parts) == 1)
                }
                if mine:
                    inject.inject_lora(
                        part,
                        r=weights.r,
                        alpha=weights.alpha,
                        target_modules=list(mine),
                        rank_pattern={n: weights.rank(m) for n, m in mine.items()},
                        alpha_pattern={n: weights.alpha_of(m) for n, m in mine.items()},
                        use_rslora=weights.use_rslora,
                    )
        inject.load_lora_state_dict(model, state)
    except BaseException:
        if not existing:
            inject.remove_lora(model)
        for prefix, part in parts:
            for name, p in part.named_parameters():
                p.requires_grad_(flags.get((prefix, name), p.requires_grad))
        raise
    layers = dict(inject.lora_layers(model))
    for m, p in paths.items():  # existing layers take the file's alphas too
        layers[p].alpha, layers[p].use_rslora = weights.alpha_of(m), weights.use_rslora
    inject.set_lora_scale(model, scale)
    return list(paths.values())


def convert(src: str | Path, dst: str | Path, to: str = "kohya", model=None) -> Path:
    """Rewrite the LoRA at ``src`` in format ``to`` at ``dst`` (``model``: see :func:`load_lora`)."""
    weights = load_lora(src, model)
    return save_weights(weights, dst, to, {"lorakit_converted_from": weights.format})


CONTEXT_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 64: "the tiny SD (this course's)"}
BLOCK_WIDTHS = {1280: "SD 1.x or 2.x", 128: "the tiny SD (this course's)"}  # mid_block's channels


def block_of(path: str) -> str:
    """The block a module sits in: ``down_blocks.0``, ``mid_block``, ``up_blocks.2``, ``text_encoder``, or its first name."""
    parts = path.split(".")
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0].rstrip("_") if parts[0] != "text_encoder" else "text_encoder"


def guess_base(weights: LoRAWeights) -> str:
    """The base model the shapes point to (cross-attention's text width, the middle block's channels), and what the
    kohya metadata says."""
    clues = []
    to_k = next((m for m in weights.modules if m.endswith("attn2.to_k")), None)
    mid = next((m for m in weights.modules if m.startswith("mid_block")), None)
    text = next((m for m in weights.text_modules if m.endswith("self_attn.q_proj")), None)
    if to_k is not None:
        width = weights.A[to_k].shape[1]
        clues.append(
            f"{CONTEXT_WIDTHS.get(width, 'an SD-like model')} (cross-attention reads a {width}-wide text)"
        )
    elif mid is not None:
        width = weights.B[mid].shape[0]
        clues.append(
            f"{BLOCK_WIDTHS.get(width, 'an SD-like model')} (the middle block has {width} channels)"
        )
    if text is not None:
        width = weights.A[text].shape[1]
        clues.append(f"text encoder {width} wide ({CONTEXT_WIDTHS.get(width, 'unknown')})")
    said = [
        f"{k}: {weights.metadata[k]}"
        for k in ("ss_base_model_version", "ss_sd_model_name", "ss_v2")
        if weights.metadata.get(k)
    ]
    if said:
        clues.append("the file says " + ", ".join(said))
    return "; ".join(clues) or "unknown (no module shows the text width)"


def describe(path: str | Path) -> str:
    """A report on a LoRA file, for ``lorakit info``: its format and kind, the base model its shapes and
    metadata point to, its modules per kind and block, rank and alpha per module (grouped), the scale a UI
    applies at weight 1, parameters, size and metadata. A file lorakit does not apply is still described from
    its header, with the reason."""
    path = Path(path)
    size = (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if path.is_dir()
        else (path.stat().st_size if path.is_file() else 0)
    )
    try:
        w = load_lora(path)
    except UnsupportedKind as error:
        if not path.is_file():
            raise
        header, metadata = _read_header(path)
        lines = [
            f"file: {path} ({size / 1e6:.2f} MB, {len(header)} tensors)",
            f"not applied by lorakit: {error}",
        ]
        return "\n".join(lines + _metadata_lines(metadata))
    kinds = collections.Counter(w.kind(m) for m in w.modules)
    kind = (
        "LoCon (LoRA on 3x3 convolutions too)"
        if any(k.startswith("conv") and k != "conv 1x1" for k in kinds)
        else "LoRA on linear layers and 1x1 convolutions"
        if "conv 1x1" in kinds
        else "LoRA on linear layers"
    )
    text = set(w.text_modules)

    def counted(paths):
        c = collections.Counter(w.kind(m) for m in paths)
        return ", ".join(f"{k} {n}" for k, n in sorted(c.items()))

    unet = [m for m in w.modules if m not in text]
    parts = ([f"UNet {len(unet)}: {counted(unet)}"] if unet else []) + (
        [f"text encoder {len(text)}: {counted(text)}"] if text else []
    )
    names = collections.Counter(
        inject.module_kind(m) if "transformer_blocks" in m else m.split(".")[-1] for m in w.modules
    )
    lines = [
        f"file: {path} ({size / 1e6:.2f} MB)",
        f"format: {w.format}",
        f"kind: {kind}",
        f"base model: {guess_base(w)}",
    ]
    if w.uniform:
        lines.append(
            f"r: {w.r}  alpha: {w.alpha:g}  scaling: {w.scaling:g}{'  (rsLoRA)' if w.use_rslora else ''}"
        )
    else:
        lines.append(
            f"r: {w.r}  alpha: {w.alpha:g} on most modules; per-module ranks or alphas below"
        )
    lines += [
        f"modules: {len(w.modules)} ({', '.join(f'{k} x{n}' for k, n in names.items())})",
        f"  {'; '.join(parts)}",
        "per block:",
    ]
    blocks: dict[str, list[str]] = {}
    for m in w.modules:
        blocks.setdefault(block_of(m), []).append(m)
    for block, paths in blocks.items():
        lines.append(f"  {block:14s} {len(paths):3d}: {counted(paths)}")
    lines.append(
        "rank and alpha (the scale a UI applies at weight 1 is alpha / r"
        + (", rsLoRA: alpha / sqrt(r))" if w.use_rslora else ")")
        + ":"
    )
    groups: dict[tuple[int, float], list[str]] = {}
    for m in w.modules:
        groups.setdefault((w.rank(m), w.alpha_of(m)), []).append(m)
    for (r, alpha), paths in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        example = "" if len(groups) == 1 else f" (e.g. {paths[0]})"
        lines.append(
            f"  r {r}, alpha {alpha:g}: scale {w.scaling_of(paths[0]):.4g} on {len(paths)} modules{example}"
        )
    params = sum(w.A[m].numel() + w.B[m].numel() for m in w.modules)
    lines.append(f"parameters: {params:,}")
    return "\n".join(lines + _metadata_lines(w.metadata))


def _metadata_lines(metadata: dict[str, str]) -> list[str]:
    if not metadata:
        return []
    return ["metadata:"] + [
        f"  {k}: {v if len(v) < 80 else v[:77] + '...'}" for k, v in sorted(metadata.items())
    ]
