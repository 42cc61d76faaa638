"""lorakit.files: atomic writes (a failed or full-disk write keeps the old file), the temporary
files of dead processes removed and a live one's kept, and one run at a time in a folder."""

import contextlib
import errno
import os
import signal
import subprocess
import sys

import pytest

from lorakit import files

HOLD = (
    "import sys\n"
    "from lorakit import files\n"
    "with files.lock_folder(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)
DIE_HOLDING = (
    "import os, signal, sys\n"
    "from lorakit import files\n"
    "with files.lock_folder(sys.argv[1]):\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
)


def dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


@contextlib.contextmanager
def live_process(code: str, *args):
    """A Python process running ``code`` until the block ends (its stdin closes); yields it."""
    process = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.communicate("", timeout=30)


def test_write_atomically_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "sub" / "lora.safetensors"
    files.write_atomically(target, b"first")
    files.write_atomically(target, lambda f: f.write(b"second"))
    assert target.read_bytes() == b"second"
    files.write_atomically(target.with_name("notes.txt"), "héllo")
    assert target.with_name("notes.txt").read_bytes() == "héllo".encode()
    assert sorted(os.listdir(target.parent)) == ["lora.safetensors", "notes.txt"]
    assert target.stat().st_mode & 0o044, "readable by others, as any file the user writes"


def test_a_failed_write_keeps_the_old_file_intact(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def crash_halfway(f):
        f.write(b"half a fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomically(target, crash_halfway)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_a_full_disk_keeps_the_old_file_and_says_so(tmp_path, monkeypatch):
    target = tmp_path / "lora.safetensors"
    target.write_bytes(b"the old file")
    written = []

    def disk_fills_up(fd, data):  # ENOSPC after the first 100 bytes, as a real full disk says
        written.append(os.write(fd, data[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", disk_fills_up)
    with pytest.raises(
        OSError, match=f"no space left on device: {target}.*the previous file is kept"
    ) as error:
        files.write_atomically(target, b"x" * 1000)
    assert error.value.errno == errno.ENOSPC and written == [100]
    assert target.read_bytes() == b"the old file" and [p.name for p in tmp_path.iterdir()] == [
        "lora.safetensors"
    ]


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    mine = tmp_path / f".lora.safetensors.{os.getpid()}.tmp"
    stale = tmp_path / f".checkpoint.pt.{dead_pid()}.tmp"
    other = tmp_path / "notes.tmp"
    for p in (mine, stale, other):
        p.write_bytes(b"x")
    assert files.remove_stale(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


def test_a_live_process_keeps_its_temporary_files(tmp_path):
    """Only a dead writer's files go: another process that is still writing keeps its own."""
    gone = dead_pid()
    with live_process("import sys; sys.stdin.read()") as writer:
        live = tmp_path / f".lora.safetensors.{writer.pid}.tmp"
        dead = [tmp_path / f".lora.safetensors.{gone}.tmp", tmp_path / f".samples.png.{gone}.tmp"]
        for p in (live, *dead):
            p.write_bytes(b"half a file")
        folder = tmp_path / f".a-folder.{gone}.tmp"  # not a file: not one of ours
        folder.mkdir()
        assert sorted(files.remove_stale(tmp_path)) == sorted(dead)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, folder.name])
    assert files.remove_stale(tmp_path / "nowhere") == []


def test_a_lock_held_by_a_live_process_refuses_a_second(tmp_path):
    folder = tmp_path / "run"
    with live_process(HOLD, folder) as holder:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"another lorakit run \(pid {holder.pid}\)"):
            with files.lock_folder(folder):
                pass
    with files.lock_folder(folder) as held:  # the holder is done: the folder is free
        assert held == folder and (folder / files.LOCK).read_text() == f"pid {os.getpid()}"
        with pytest.raises(RuntimeError, match=rf"\(pid {os.getpid()}\) is writing to {folder}"):
            with files.lock_folder(folder):  # a second run in this very process is refused too
                pass
    with files.lock_folder(folder):  # released on the way out
        pass


def test_the_lock_of_a_killed_process_is_released(tmp_path):
    folder = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", DIE_HOLDING, str(folder)])
    assert killed.returncode == -signal.SIGKILL
    assert (folder / files.LOCK).read_text().startswith("pid ")  # its lock file is still there
    with files.lock_folder(folder):
        assert (folder / files.LOCK).read_text() == f"pid {os.getpid()}"
