"""Image-caption folders in the Hugging Face ``imagefolder`` layout: read, check and write them.

Introduced in notebooks/06_train_style_lora.ipynb.

An *image folder* is pictures and a ``metadata.jsonl`` with one JSON object a line,
``{"file_name": "0001.png", "text": "a red circle"}``. The style sets in ``data/styles/`` use it,
and so can a user's own photos. ``ImageFolderDataset`` checks the whole folder when it is built
and lists every problem at once (file and line), so a training run never stops halfway on a bad
file; ``write_imagefolder`` makes such a folder. ``to_tensor``, ``to_image`` and ``to_rgb`` are
``lorakit.imaging``'s (lesson 03), named here too.

Left out: random crops (mirroring is ``train.TrainConfig.flip``, on cached latents), image folders
without ``metadata.jsonl`` (class-per-subfolder layouts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath

import torch
from PIL import Image

from lorakit import files
from lorakit.imaging import to_image, to_rgb, to_tensor

__all__ = [
    "MAX_ASPECT",
    "MAX_LISTED_PROBLEMS",
    "METADATA",
    "ImageFolderDataset",
    "read_imagefolder",
    "to_image",
    "to_rgb",
    "to_tensor",
    "write_imagefolder",
]

METADATA = "metadata.jsonl"
MAX_LISTED_PROBLEMS = 10
MAX_ASPECT = 8  # the longest side over the shortest: beyond it the centre crop would keep a sliver


def _to_square(image: Image.Image, resolution: int, center_crop: bool) -> Image.Image:
    """Resize to ``resolution`` x ``resolution``: scale the short side and crop the centre,
    or (``center_crop=False``) squash the whole picture to a square."""
    if not center_crop:
        return image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    w, h = image.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def _parse_row(where: str, line: bytes) -> tuple[str, str]:
    """The (file name, caption) a metadata line gives; raises ValueError saying what is wrong."""
    try:
        line = line.decode("utf-8-sig")  # -sig: tolerate the byte-order mark some editors write
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text: save {METADATA} as UTF-8.") from None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where} is not valid JSON: {error.msg} (column {error.colno})."
        ) from None
    if not isinstance(row, dict):
        raise ValueError(f'{where} is not a JSON object: write {{"file_name": ..., "text": ...}}.')
    if "text" not in row:
        raise ValueError(
            f'{where} has no \'text\' field: add the caption, e.g. "text": "a red circle".'
        )
    text = row["text"]
    if not isinstance(text, str):
        raise ValueError(f"{where} has a 'text' that is not a string: {text!r}.")
    if not text.strip():
        raise ValueError(f"{where} has an empty 'text': give every image a caption.")
    name = row.get("file_name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f'{where} has no \'file_name\' field: name the image, e.g. "file_name": "0001.png".'
        )
    return name, text


def _image_path(where: str, name: str, folder: Path, seen: dict[str, int], line_no: int) -> Path:
    """The file ``name`` leads to in ``folder``, once; raises ValueError saying what is wrong."""
    if os.path.isabs(name) or name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise ValueError(
            f"{where}: file_name {name!r} is an absolute path; give it relative to {folder}."
        )
    relative = os.path.normpath(name)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise ValueError(f"{where}: file_name {name!r} points outside the folder {folder}.")
    if relative in seen:
        raise ValueError(f"{where}: file_name {name!r} is a duplicate of line {seen[relative]}.")
    seen[relative] = line_no
    path = folder / relative
    if not path.is_file():
        raise ValueError(f"{where}: file {name!r} does not exist in {folder}.")
    if not path.resolve().is_relative_to(folder.resolve()):  # a link that leads out of the folder
        raise ValueError(
            f"{where}: file_name {name!r} is a link to {path.resolve()}, outside the folder "
            f"{folder}; copy the picture into the folder instead."
        )
    return path


def _check_picture(where: str, name: str, path: Path) -> None:
    """Raises ValueError if ``path`` is no picture training can use, saying why."""
    try:
        with Image.open(path) as image:
            image.verify()  # checksums and structure
        with Image.open(path) as image:
            image.load()  # a full decode catches truncated files that verify() lets through
            image = image.copy()
    except Exception as error:  # PIL raises many types for bad files
        raise ValueError(
            f"{where}: {name!r} is not a readable image ({type(error).__name__}: {error})."
        ) from None
    w, h = image.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ValueError(
            f"{where}: {name!r} is {w}x{h}, more than {MAX_ASPECT}:1; training crops the centre "
            "square of every picture, so crop this one yourself, or leave it out."
        )
    try:
        to_rgb(image)
    except ValueError as error:  # values that cannot be mapped to colours
        raise ValueError(f"{where}: {name!r} is {error}.") from None


def _check_row(line_no: int, line: bytes, folder: Path, seen: dict[str, int]) -> tuple[Path, str]:
    """The (image path, caption) of one metadata line; raises ValueError saying what is wrong."""
    where = f"{METADATA} line {line_no}"
    name, text = _parse_row(where, line)
    path = _image_path(where, name, folder, seen, line_no)
    _check_picture(where, name, path)
    return path, text


def read_imagefolder(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """Check an image folder and return its (image path, caption) rows.

    Raises one ValueError that lists every problem found (up to ``MAX_LISTED_PROBLEMS``).
    """
    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"image folder {folder} does not exist.")
    if not folder.is_dir():
        raise ValueError(
            f"{folder} is not a folder: give the folder that holds the images and {METADATA}."
        )
    metadata = folder / METADATA
    if not metadata.is_file():
        what = "is empty" if not any(folder.iterdir()) else f"has no {METADATA}"
        raise ValueError(
            f"image folder {folder} {what}: it needs the images and a {METADATA} with one line "
            f'per image, e.g. {{"file_name": "0001.png", "text": "a red circle"}}.'
        )
    rows, problems, seen = [], [], {}
    with open(metadata, "rb") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue  # blank lines (a trailing newline) are allowed
            try:
                rows.append(_check_row(line_no, line, folder, seen))
            except ValueError as error:
                problems.append(str(error))
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        tail = f"\n  ... and {more} more" if more else ""
        raise ValueError(
            f"image folder {folder} has {len(problems)} problem(s); fix them and retry:\n  "
            + "\n  ".join(listed)
            + tail
        )
    if not rows:
        raise ValueError(
            f"{metadata} has no rows: add one JSON line per image, "
            f'e.g. {{"file_name": "0001.png", "text": "a red circle"}}.'
        )
    return rows


class ImageFolderDataset(torch.utils.data.Dataset):
    """An image folder as ``(image in [-1, 1] of shape (3, R, R), caption)`` pairs, as
    ShapesDataset gives.

    Every row is checked when the dataset is built (see :func:`read_imagefolder`). Pictures of any
    mode (L, P, RGBA, CMYK, ...) are converted to RGB, transparency composited on white. With
    ``center_crop`` the short side is scaled to ``resolution`` and the centre cropped; without, the
    whole picture is squashed to a square.
    """

    def __init__(self, folder: str | os.PathLike, resolution: int = 64, center_crop: bool = True):
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}.")
        self.folder, self.resolution, self.center_crop = Path(folder), resolution, center_crop
        self.rows = read_imagefolder(self.folder)

    def __len__(self) -> int:
        return len(self.rows)

    def caption(self, index: int) -> str:
        return self.rows[index][1]

    def image(self, index: int) -> Image.Image:
        """Picture ``index`` as RGB at ``resolution`` x ``resolution``."""
        with Image.open(self.rows[index][0]) as image:
            return _to_square(to_rgb(image), self.resolution, self.center_crop)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if not 0 <= index < len(self.rows):
            raise IndexError(f"index {index} is outside 0..{len(self.rows) - 1}.")
        return to_tensor(self.image(index)), self.caption(index)  # (3, R, R), str


def write_imagefolder(
    folder: str | os.PathLike, images: Sequence[Image.Image | torch.Tensor], captions: Sequence[str]
) -> Path:
    """Write ``images`` as ``0000.png``, ``0001.png``, ... and their ``captions`` as
    ``metadata.jsonl``.

    Tensors are read as (3, H, W) in [-1, 1]. Each file is written to a temporary name and then
    renamed, so an interrupted call never leaves a half-written file. Returns the folder.
    """
    if len(images) != len(captions):
        raise ValueError(
            f"got {len(images)} images but {len(captions)} captions: give one caption per image."
        )
    if not images:
        raise ValueError("no images to write: an image folder needs at least one image.")
    for i, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"caption {i} is empty: give every image a caption.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        image = to_image(image) if isinstance(image, torch.Tensor) else to_rgb(image)
        name = f"{i:04d}.png"
        files.write_atomically(folder / name, lambda f, image=image: image.save(f, format="PNG"))
        lines.append(json.dumps({"file_name": name, "text": caption}, ensure_ascii=False))
    text = ("\n".join(lines) + "\n").encode("utf-8")
    files.write_atomically(folder / METADATA, text)
    return folder
