"""The labeling pool on disk: frames gathered from the fleet, their hashes and labels.

Layout under the pool's root::

    manifest.json                       every item, duplicate, rejection and label import
    images/<recording>/<camera>/<frame:012d>.<ext>
    .lock                               held (flock) by the one writer at a time

The pool is append-only: items are added and labeled (a later label import may
replace an item's boxes), never removed. It is crash-safe: images are written
(temporary file, fsync, rename) before the manifest that names them, and the
manifest is replaced atomically the same way, with its folder fsynced; a crash
leaves the previous manifest, at worst with an image file nobody names yet, which
the next ingest of the same upload overwrites. Writers take an exclusive lock on
``.lock`` and re-read the manifest inside it, so two ingests never lose each
other's items.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alscout.errors import DataError
from alscout.files import write_atomic
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord

__all__ = ["PoolItem", "Duplicate", "Rejection", "LabelPool", "FORMAT", "now_iso"]

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"


def now_iso() -> str:
    """The current UTC time, ISO 8601, seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PoolItem:
    """One frame in the pool. ``file``: its image, relative to the pool root (POSIX).

    ``width``/``height``: pixels of the stored image. ``phash``: 64-bit perceptual
    hash as 16 hex digits. ``boxes``: the labels in image pixels, None while the
    frame is unlabeled (an empty tuple is a frame labeled as having no pedestrian).
    ``source``: the upload it came from; ``vehicle``: the vehicle or sink it came
    from; ``z``/``smoothed``: the scores that flagged it, with ``model_version``.
    """

    item_id: int
    file: str
    recording_id: str
    camera_id: str
    frame_index: int
    width: int
    height: int
    phash: str
    sha256: str
    source: str
    vehicle: str = ""
    ingested: str = ""
    model_version: str = ""
    z: float = 0.0
    smoothed: float = 0.0
    boxes: tuple[Box, ...] | None = None
    label_file: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        """(recording_id, camera_id, frame_index): one frame of one stream."""
        return self.recording_id, self.camera_id, self.frame_index

    @property
    def labeled(self) -> bool:
        return self.boxes is not None

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["boxes"] = None if self.boxes is None else [asdict(b) for b in self.boxes]
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> PoolItem:
        values = dict(record)
        boxes = values.get("boxes")
        values["boxes"] = None if boxes is None else tuple(Box(**b) for b in boxes)
        return cls(**values)


@dataclass(frozen=True)
class Duplicate:
    """An upload not added because it nearly equals ``duplicate_of`` (an item id)."""

    source: str
    recording_id: str
    camera_id: str
    frame_index: int
    vehicle: str
    duplicate_of: int
    distance: int
    ingested: str = ""


@dataclass(frozen=True)
class Rejection:
    """An upload or label file refused, and why (the message names the file)."""

    source: str
    reason: str
    when: str = ""


@dataclass
class _Manifest:
    items: list[PoolItem] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    label_imports: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0


class LabelPool:
    """Reads the pool at ``root``; :meth:`edit` is the only way to change it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self._state = self._read()

    # reading -----------------------------------------------------------------------
    @property
    def items(self) -> list[PoolItem]:
        return list(self._state.items)

    @property
    def duplicates(self) -> list[Duplicate]:
        return list(self._state.duplicates)

    @property
    def rejected(self) -> list[Rejection]:
        return list(self._state.rejected)

    @property
    def label_imports(self) -> list[dict[str, Any]]:
        return list(self._state.label_imports)

    @property
    def generation(self) -> int:
        """How many times the manifest was written."""
        return self._state.generation

    def labeled(self) -> list[PoolItem]:
        return [item for item in self._state.items if item.labeled]

    def uploaded_frames(self) -> list[tuple[str, str, int]]:
        """(recording_id, camera_id, frame_index) of every frame the fleet received:
        the items and the near-duplicates not added (they were uploaded all the same).
        The upload record SPEC §2b's dt2 rule reads (``alscout score --earlier``)."""
        keys = {item.key for item in self._state.items}
        keys.update((d.recording_id, d.camera_id, d.frame_index) for d in self._state.duplicates)
        return sorted(keys)

    def unlabeled(self) -> list[PoolItem]:
        return [item for item in self._state.items if not item.labeled]

    def image_path(self, item: PoolItem) -> Path:
        return self.root / item.file

    def refresh(self) -> None:
        """Re-read the manifest (another process may have changed it)."""
        self._state = self._read()

    def to_dataset(self, labeled_only: bool = True, name: str = "pool") -> Dataset:
        """The pool's images as a :class:`Dataset` (image ids = item ids), for training."""
        items = self.labeled() if labeled_only else self.items
        records = [
            ImageRecord(
                image_id=item.item_id,
                source=self.image_path(item),
                width=item.width,
                height=item.height,
                boxes=item.boxes or (),
                sequence=f"{item.recording_id}/{item.camera_id}",
            )
            for item in items
        ]
        return Dataset(records, name=name)

    # writing -----------------------------------------------------------------------
    @contextlib.contextmanager
    def edit(self) -> Iterator[_Manifest]:
        """Lock the pool, yield its freshly read manifest to change, write it atomically.

        Nothing is written when the block raises, nor when it changed nothing (the
        generation counts the manifest's changes, not the attempts).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                before = json.dumps(_record(state), sort_keys=True)
                yield state
                if json.dumps(_record(state), sort_keys=True) == before:
                    log.debug("pool unchanged root=%s generation=%d", self.root, state.generation)
                    self._state = state
                    return
                state.generation += 1
                self._write(state)
                self._state = state
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write_image(self, relative: str, data: bytes) -> Path:
        """Store image bytes at ``root/relative`` atomically (before the manifest names it)."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, sync_dir=True)
        return path

    @staticmethod
    def with_labels(item: PoolItem, boxes: tuple[Box, ...], label_file: str) -> PoolItem:
        return replace(item, boxes=tuple(boxes), label_file=label_file)

    # files -------------------------------------------------------------------------
    def _read(self) -> _Manifest:
        if not self.manifest_path.exists():
            return _Manifest()
        try:
            record = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise DataError(
                f"{self.manifest_path}: unreadable pool manifest ({error}); restore it from "
                "a backup before ingesting more"
            ) from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            found = record.get("format") if isinstance(record, dict) else None
            raise DataError(
                f"{self.manifest_path}: pool format {found!r}, this alscout reads format {FORMAT}"
            )
        try:
            return _Manifest(
                items=[PoolItem.from_json(r) for r in record["items"]],
                duplicates=[Duplicate(**r) for r in record["duplicates"]],
                rejected=[Rejection(**r) for r in record["rejected"]],
                label_imports=list(record["label_imports"]),
                generation=int(record["generation"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(
                f"{self.manifest_path}: malformed pool manifest ({error!r}); restore it from "
                "a backup before ingesting more"
            ) from None

    def _write(self, state: _Manifest) -> None:
        data = json.dumps(_record(state), indent=1, allow_nan=False).encode("utf-8")
        write_atomic(self.manifest_path, data, sync_dir=True)
        log.debug(
            "pool manifest written root=%s generation=%d items=%d",
            self.root,
            state.generation,
            len(state.items),
        )


def _record(state: _Manifest) -> dict[str, Any]:
    """The manifest's JSON object."""
    return {
        "format": FORMAT,
        "generation": state.generation,
        "items": [item.to_json() for item in state.items],
        "duplicates": [asdict(d) for d in state.duplicates],
        "rejected": [asdict(r) for r in state.rejected],
        "label_imports": state.label_imports,
    }
