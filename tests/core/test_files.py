"""Crash-safe writes: the old file or the new one, and no temporary file left behind."""

from __future__ import annotations

import pytest

from alscout.errors import DataError
from alscout.files import frame_files, fsync_dir, natural_key, write_atomic


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


def test_natural_key_orders_digit_runs_as_numbers():
    names = ["f10.png", "f2.png", "F1.png", "f2b.png", "a.png", "f02.png"]
    assert sorted(names, key=natural_key) == [
        "a.png",
        "F1.png",
        "f02.png",
        "f2.png",
        "f2b.png",
        "f10.png",
    ]


def test_frame_files_are_the_images_in_natural_order(tmp_path):
    for name in ["f10.jpg", "f2.PNG", "f1.bmp", "f9.jpeg", "notes.txt", "._f1.jpg", ".f0.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "f3.jpg").mkdir()  # a folder, not a frame
    assert [p.name for p in frame_files(tmp_path)] == ["f1.bmp", "f2.PNG", "f9.jpeg", "f10.jpg"]


def test_frame_files_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere: cannot list the frame folder"):
        frame_files(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("no image")
    with pytest.raises(DataError, match=r"no images \(\.jpg, \.jpeg, \.png, \.bmp\)"):
        frame_files(tmp_path)
