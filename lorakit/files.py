"""Writing files atomically, and one run at a time in a folder: a crash, a full disk or a second
run never leaves half a file behind, or a folder whose files belong to two runs.

Introduced in notebooks/05_inject_lora.ipynb, whose LoRA files go through it, as every file lorakit
writes does (checkpoints, the CLI's configs and pictures, image folders); lessons use it through
``formats`` and ``train``, never directly. :func:`write_atomically` makes the whole content in
memory first (megabytes, not gigabytes), writes it to a temporary file beside the target, then
renames it over the target with ``os.replace``, atomic on POSIX and Windows: a reader sees the old
file or the new one, never a mix, and a failed write (a full disk says ``no space left on device:
<path>``) leaves the old file and no temporary one. :func:`remove_stale` deletes the temporary
files of runs killed before they could; :func:`lock_folder` keeps a second run out of a folder that
a first is writing to.

Left out: fsync of the file and the folder (a power cut right after the rename may still lose the
new file on some file systems, but never corrupts the old one).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

LOCK = ".lorakit.lock"
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")  # .<name>.<pid>.tmp, as write_atomically names them
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

__all__ = ["LOCK", "NO_SPACE", "lock_folder", "remove_stale", "write_atomically"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomically(
    path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], object]
) -> Path:
    """Write ``content`` to ``path`` atomically; returns ``path``.

    ``content``: the bytes, a text (written as UTF-8), or a function that writes the content to
    the binary file object it is given (``lambda f: torch.save(state, f)``,
    ``lambda f: image.save(f, "PNG")``).
    """
    path = Path(path)
    if callable(content):
        buffer = io.BytesIO()
        content(buffer)
        data = buffer.getvalue()
    else:
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666
        )
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as error:
        if error.errno in NO_SPACE:
            kept = "the previous file is kept" if path.exists() else "nothing was written"
            full = OSError(
                f"no space left on device: {path} ({len(data):,} bytes to write; {kept}). "
                "Free some space, or write somewhere else."
            )
            full.errno = error.errno
            raise full from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: keep its file
    return True


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.<pid>.tmp``) that killed processes left in
    ``folder``; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [
        p
        for p in folder.iterdir()
        if (m := _TEMPORARY.match(p.name)) and p.is_file() and not _alive(int(m[1]))
    ]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` for one run: a second ``lock_folder`` on it, from any process, raises
    ``RuntimeError`` until the first is done. The lock is the operating system's (released even if
    the process is killed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK, "a+")  # noqa: SIM115 (held for the whole run)
    try:
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RuntimeError(
                f"another lorakit run ({holder}) is writing to {folder}: wait for it to finish, "
                "or give this run another output folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield folder
    finally:
        handle.close()
