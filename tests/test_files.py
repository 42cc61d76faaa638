import os

import pytest

from lorakit import files


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
