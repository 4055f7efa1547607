"""Crash-safe writes: the old file or the new one, and no temporary file left behind."""

from __future__ import annotations

import pytest

from alscout.files import fsync_dir, write_atomic


def test_write_atomic_replaces_the_whole_file(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new content", sync_dir=True)
    assert path.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_atomic(path, b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("alscout.files.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_staging_folder_holds_the_temporary_file(tmp_path, monkeypatch):
    staging = tmp_path / "tmp"
    staging.mkdir()
    seen = []
    real = __import__("os").replace
    monkeypatch.setattr("alscout.files.os.replace", lambda a, b: (seen.append(a), real(a, b)))
    write_atomic(tmp_path / "blob", b"x", staging=staging)
    assert (tmp_path / "blob").read_bytes() == b"x"
    assert len(seen) == 1 and str(seen[0]).startswith(str(staging))
    assert not list(staging.iterdir())
    fsync_dir(staging)  # a folder can be synced
