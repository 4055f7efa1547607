"""Where flagged frames wait for upload: the frame types, the :class:`Outbox` protocol.

The product's outbox, :class:`~alscout.server.durable_outbox.DurableOutbox`, lives in
its own module; it is crash-safe, has a disk quota and remembers uploaded frames for
SPEC §2b's dt2 rule (:meth:`Outbox.earlier_frames`).

:class:`MemoryOutbox` keeps frames in a list (tests, dry runs). :class:`DirectoryOutbox`
writes each frame as ``<root>/<recording>/<camera>/<frame:012d>.<ext>`` plus a JSON
sidecar (no quota, no upload record): a plain folder for tools that want one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol, TypedDict, runtime_checkable

import numpy as np

from alscout.errors import (
    InvalidInputError,
)
from alscout.files import write_atomic
from alscout.storage.layout import SUFFIXES, check_id

__all__ = [
    "metadata_nbytes",
    "FramePayload",
    "PayloadFields",
    "ContextFrame",
    "FlaggedFrame",
    "Outbox",
    "MemoryOutbox",
    "DirectoryOutbox",
]

log = logging.getLogger(__name__)


def _check_format(image_format: str) -> None:
    if image_format not in SUFFIXES:
        raise InvalidInputError(
            f"unknown image format {image_format!r}; use one of {sorted(SUFFIXES)}"
        )


def metadata_nbytes(metadata: Mapping[str, str]) -> int:
    """UTF-8 bytes of a frame's metadata, keys and values together (what quotas count)."""
    return sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in metadata.items())


class PayloadFields(TypedDict):
    """:meth:`FramePayload.as_fields`: one key per field of :class:`FramePayload`."""

    image: bytes
    image_format: str
    model_version: str
    model_hash: str
    capture_time_ns: int
    width: int
    height: int
    pixel_format: str
    metadata: dict[str, str]
    heatmap: np.ndarray | None


@dataclass(frozen=True)
class FramePayload:
    """What the outbox needs of a frame besides its decision.

    ``image``: the encoded (JPEG/PNG) or raw bytes as received. ``image_format``:
    "jpeg" | "png" | "raw"; raw frames also carry ``width``, ``height`` (pixels) and
    ``pixel_format``. ``capture_time_ns``: capture timestamp, ns since the epoch (0 if
    unknown). ``metadata``: string keys and values (the server bounds their sizes,
    ``max_metadata_*`` in its config). ``heatmap``: the pixel score map, float32
    ``[h, w]`` (any stride), or None.
    """

    image: bytes
    image_format: str
    model_version: str
    model_hash: str
    capture_time_ns: int = 0
    width: int = 0
    height: int = 0
    pixel_format: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    heatmap: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_format(self.image_format)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise InvalidInputError("metadata keys and values must be strings")
        if self.heatmap is not None:
            heatmap = np.asarray(self.heatmap)
            if heatmap.ndim != 2 or not np.all(np.isfinite(heatmap)):
                raise InvalidInputError(
                    f"heatmap must be a finite [h, w] array, got shape {heatmap.shape}"
                )
            object.__setattr__(self, "heatmap", np.ascontiguousarray(heatmap, np.float32))

    @property
    def metadata_bytes(self) -> int:
        """UTF-8 bytes of the metadata's keys and values (:func:`metadata_nbytes`)."""
        return metadata_nbytes(self.metadata)

    def as_fields(self) -> PayloadFields:
        """The payload's fields by name (metadata copied), to build a FlaggedFrame from."""
        return PayloadFields(
            image=self.image,
            image_format=self.image_format,
            model_version=self.model_version,
            model_hash=self.model_hash,
            capture_time_ns=self.capture_time_ns,
            width=self.width,
            height=self.height,
            pixel_format=self.pixel_format,
            metadata=dict(self.metadata),
            heatmap=self.heatmap,
        )


@dataclass(frozen=True)
class ContextFrame:
    """A frame near a flagged one (N before and after), stored with it for the labeler."""

    frame_index: int
    image: bytes
    image_format: str
    width: int = 0
    height: int = 0
    pixel_format: str = ""

    def __post_init__(self) -> None:
        _check_format(self.image_format)


@dataclass(frozen=True, kw_only=True)
class FlaggedFrame(FramePayload):
    """A frame the selector flagged: the payload's fields plus the decision behind it.

    ``z``/``smoothed``/``threshold``: the scores behind the decision (eviction under a
    quota goes by ``smoothed``). ``context``: neighbouring frames stored with it.
    """

    recording_id: str
    camera_id: str
    frame_index: int
    z: float
    smoothed: float
    threshold: float
    context: tuple[ContextFrame, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("recording_id", self.recording_id)
        check_id("camera_id", self.camera_id)
        if isinstance(self.frame_index, bool) or not isinstance(self.frame_index, int):
            raise InvalidInputError(f"frame_index must be an int, got {self.frame_index!r}")
        if self.frame_index < 0:
            raise InvalidInputError(f"frame_index must be >= 0, got {self.frame_index}")
        object.__setattr__(self, "context", tuple(self.context))
        for item in self.context:
            if not isinstance(item, ContextFrame):
                raise InvalidInputError(f"context holds ContextFrame items, got {type(item)}")

    def sidecar(self) -> dict[str, object]:
        """Everything but the bytes (image, heat map, context images), JSON-ready."""
        record: dict[str, object] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("image", "heatmap", "context")
        }
        record["metadata"] = dict(self.metadata)
        record["heatmap_shape"] = None if self.heatmap is None else list(self.heatmap.shape)
        record["context"] = [
            {
                "frame_index": c.frame_index,
                "image_format": c.image_format,
                "width": c.width,
                "height": c.height,
                "pixel_format": c.pixel_format,
            }
            for c in self.context
        ]
        return record


@runtime_checkable
class Outbox(Protocol):
    """Receives flagged frames; ``put`` may block (the server calls it off the event loop)."""

    def put(self, frame: FlaggedFrame) -> None:
        """Store one flagged frame; when it returns the frame is stored, else it raised."""
        ...

    def earlier_frames(self, recording_id: str, camera_id: str) -> list[int]:
        """Frames of this recording and camera already stored or uploaded, ascending."""
        ...


class MemoryOutbox:
    """Keeps flagged frames in memory, in arrival order; thread-safe."""

    def __init__(self) -> None:
        self._frames: list[FlaggedFrame] = []
        self._lock = threading.Lock()

    def put(self, frame: FlaggedFrame) -> None:
        with self._lock:
            self._frames.append(frame)

    def earlier_frames(self, recording_id: str, camera_id: str) -> list[int]:
        with self._lock:
            return sorted(
                {
                    f.frame_index
                    for f in self._frames
                    if f.recording_id == recording_id and f.camera_id == camera_id
                }
            )

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
        write_atomic(image_path, frame.image)
        sidecar = json.dumps(frame.sidecar(), sort_keys=True).encode("utf-8")
        write_atomic(image_path.with_name(image_path.name + ".json"), sidecar)
        log.info(
            "frame flagged recording=%s camera=%s frame=%d path=%s",
            frame.recording_id,
            frame.camera_id,
            frame.frame_index,
            image_path,
        )

    def earlier_frames(self, recording_id: str, camera_id: str) -> list[int]:
        check_id("recording_id", recording_id)
        check_id("camera_id", camera_id)
        folder = self.root / recording_id / camera_id
        return sorted(int(p.name[:12]) for p in folder.glob("*.json") if p.name[:12].isdigit())

    def stored(self) -> list[Path]:
        """Image files whose sidecar exists (complete frames), sorted."""
        return sorted(p.with_name(p.name.removesuffix(".json")) for p in self.root.rglob("*.json"))
