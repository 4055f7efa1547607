"""Files every layer handles: crash-safe writes, and which files of a folder are frames.

A crash-safe write leaves a reader the old file or the new one, never half of one.
A frame folder is read in one order everywhere (training, evaluation, streaming,
export), :func:`frame_files`, so ground truth and scores refer to the same images.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from alscout.errors import DataError

__all__ = ["IMAGE_FILE_SUFFIXES", "frame_files", "natural_key", "write_atomic", "fsync_dir"]

#: Lower-case suffixes of the image files read from a frame folder, in the order
#: messages list them (compare ``path.suffix.lower()``).
IMAGE_FILE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str, str], ...]:
    """Sort key that orders ``frame2`` before ``frame10``: digit runs compare as numbers,
    other text case-insensitively; ties fall back to the exact text, so the order is total.
    """
    parts = _DIGITS.split(name)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts if p)


def frame_files(folder: Path | str) -> list[Path]:
    """The frames of ``folder``: its image files (:data:`IMAGE_FILE_SUFFIXES`) in natural
    name order (``f1, f2, f10``), the order every tool numbers frames in.

    Hidden files (``.name``, e.g. macOS ``._f1.jpg``) and sub-folders are skipped.
    Raises :class:`DataError` when the folder cannot be listed or holds no image.
    """
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError as error:
        raise DataError(
            f"{folder}: cannot list the frame folder ({error.strerror or error})"
        ) from None
    files = [
        p
        for p in entries
        if p.suffix.lower() in IMAGE_FILE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    if not files:
        raise DataError(
            f"{folder}: no images ({', '.join(IMAGE_FILE_SUFFIXES)}) in the frame folder"
        )
    return sorted(files, key=lambda p: natural_key(p.name))


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
