"""Writing files atomically: a crash or a full disk never leaves half a file behind.

Plumbing, not a lesson's concept: no lesson calls it, but every file a lesson's training writes
(lesson 06's checkpoints and LoRA files) goes through it.

Every file lorakit writes (LoRA files, checkpoints, image folders) goes through
:func:`write_atomically`: the content is written to a temporary file beside the target, then
renamed over it with ``os.replace``, which is atomic on POSIX and Windows. A reader sees the
old file or the new one, never a mix; a failed write leaves the old file as it was.

Left out: fsync of the folder (a power cut right after the rename may still lose the new file
on some file systems, but never corrupts the old one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then move the temporary file to ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path
