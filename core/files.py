"""Files every layer handles: crash-safe writes, and which files hold images.

A crash-safe write leaves a reader the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["IMAGE_FILE_SUFFIXES", "write_atomic", "fsync_dir"]

#: Lower-case suffixes of the image files read from a frame folder, in the order
#: messages list them (compare ``path.suffix.lower()``).
IMAGE_FILE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")


def write_atomic(
    path: Path, data: bytes, *, sync_dir: bool = False, staging: Path | None = None
) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    Args:
        path: the file to create or replace.
        data: its whole new content.
        sync_dir: fsync ``path``'s folder too, so the rename survives power loss.
        staging: folder for the temporary file (same file system as ``path``);
            default ``path``'s own folder.
    """
    folder = path.parent if staging is None else staging
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so that names created or removed in it are durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
