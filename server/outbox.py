"""Where flagged frames wait for upload: an :class:`Outbox` protocol and two outboxes.

:class:`MemoryOutbox` keeps frames in a list (tests, dry runs). :class:`DirectoryOutbox`
writes each frame as ``<root>/<recording>/<camera>/<frame:012d>.<ext>`` plus a JSON
sidecar, both atomically (temporary file, fsync, rename); the sidecar is written last
and marks the frame complete, so an uploader never sees half a frame. Durability
across power loss (fsync of the folder, a journal) is a later issue.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from alscout.errors import InvalidInputError

__all__ = ["FlaggedFrame", "Outbox", "MemoryOutbox", "DirectoryOutbox", "check_id", "ID_PATTERN"]

log = logging.getLogger(__name__)

#: recording and camera ids become folder names: a safe alphabet, no "..".
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: image format -> file suffix
SUFFIXES = {"jpeg": ".jpg", "png": ".png", "raw": ".raw"}


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe id (:data:`ID_PATTERN`, no ".."), else raise."""
    if not ID_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidInputError(
            f"{kind} {value!r} is not allowed: use 1-128 characters of A-Z a-z 0-9 . _ - "
            "without '..' (ids become folder names)"
        )
    return value


@dataclass(frozen=True)
class FlaggedFrame:
    """A frame the selector flagged, with the bytes it arrived as.

    ``image``: the encoded (JPEG/PNG) or raw bytes as received. ``image_format``:
    "jpeg" | "png" | "raw"; raw frames also carry ``width``, ``height`` (pixels) and
    ``pixel_format``. ``capture_time_ns``: capture timestamp, ns since the epoch (0 if
    unknown). ``z``/``smoothed``/``threshold``: the scores behind the decision.
    """

    recording_id: str
    camera_id: str
    frame_index: int
    image: bytes
    image_format: str
    z: float
    smoothed: float
    threshold: float
    model_version: str
    model_hash: str
    capture_time_ns: int = 0
    width: int = 0
    height: int = 0
    pixel_format: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id("recording_id", self.recording_id)
        check_id("camera_id", self.camera_id)
        if self.image_format not in SUFFIXES:
            raise InvalidInputError(f"unknown image format {self.image_format!r}")

    def sidecar(self) -> dict[str, object]:
        """Everything but the image bytes, JSON-ready."""
        record = asdict(self)
        del record["image"]
        return record


@runtime_checkable
class Outbox(Protocol):
    """Receives flagged frames; ``put`` may block (the server calls it off the event loop)."""

    def put(self, frame: FlaggedFrame) -> None:
        """Store one flagged frame; raises on failure (the frame is not stored)."""
        ...


class MemoryOutbox:
    """Keeps flagged frames in memory, in arrival order; thread-safe."""

    def __init__(self) -> None:
        self._frames: list[FlaggedFrame] = []
        self._lock = threading.Lock()

    def put(self, frame: FlaggedFrame) -> None:
        with self._lock:
            self._frames.append(frame)

    @property
    def frames(self) -> list[FlaggedFrame]:
        """A copy of the frames stored so far."""
        with self._lock:
            return list(self._frames)


class DirectoryOutbox:
    """Writes flagged frames under ``root`` atomically; thread-safe."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, frame: FlaggedFrame) -> Path:
        """The image file of ``frame``; its sidecar has ``.json`` appended."""
        name = f"{frame.frame_index:012d}{SUFFIXES[frame.image_format]}"
        return self.root / frame.recording_id / frame.camera_id / name

    def put(self, frame: FlaggedFrame) -> None:
        image_path = self.path_for(frame)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(image_path, frame.image)
        sidecar = json.dumps(frame.sidecar(), sort_keys=True).encode("utf-8")
        _write_atomic(image_path.with_name(image_path.name + ".json"), sidecar)
        log.info(
            "frame flagged recording=%s camera=%s frame=%d path=%s",
            frame.recording_id,
            frame.camera_id,
            frame.frame_index,
            image_path,
        )

    def stored(self) -> list[Path]:
        """Image files whose sidecar exists (complete frames), sorted."""
        return sorted(p.with_name(p.name.removesuffix(".json")) for p in self.root.rglob("*.json"))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
