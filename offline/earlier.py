"""Frames already uploaded, per recording and camera: SPEC §2b's dt2 rule, off-line.

A run snapshots its upload record once, when it starts, and hands the snapshot to every
worker: a vehicle's outbox (:func:`from_outbox`) or the fleet's labeling pool (built
by the CLI from :meth:`alscout.trainer.fleet.pool.LabelPool.uploaded_frames`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from alscout.errors import ConfigError

__all__ = ["EarlierUploads", "from_outbox"]


@dataclass(frozen=True)
class EarlierUploads:
    """``frames[(recording_id, camera_id)]``: frame indices already uploaded, ascending.

    ``source``: where the snapshot came from (for messages), "" for none.
    """

    frames: Mapping[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str, int]], source: str) -> EarlierUploads:
        """A snapshot from ``(recording_id, camera_id, frame_index)`` rows."""
        grouped: dict[tuple[str, str], set[int]] = {}
        for recording_id, camera_id, frame_index in rows:
            grouped.setdefault((recording_id, camera_id), set()).add(int(frame_index))
        return cls({key: tuple(sorted(v)) for key, v in sorted(grouped.items())}, source)

    def of_stream(self, recording_id: str, camera_id: str) -> tuple[int, ...]:
        """The uploaded frames of one stream (empty when none)."""
        return tuple(self.frames.get((recording_id, camera_id), ()))

    def digest(self) -> str:
        """SHA-256 of the snapshot's content (for the run record)."""
        text = json.dumps([[*key, list(v)] for key, v in sorted(self.frames.items())])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return sum(len(v) for v in self.frames.values())


def from_outbox(root: str | Path) -> EarlierUploads:
    """The frames a vehicle's outbox holds as waiting, parked or uploaded.

    The same frames the server's :meth:`DurableOutbox.earlier_frames` gives the selector.
    """
    from alscout.server.durable_outbox import INDEX_NAME, DurableOutbox

    root = Path(root)
    if not (root / INDEX_NAME).is_file():
        raise ConfigError(f"{root}: not an outbox folder (no {INDEX_NAME})")
    with DurableOutbox(root) as outbox:
        rows = [
            (f.recording_id, f.camera_id, f.frame_index)
            for f in outbox.frames()
            if f.state in ("pending", "uploaded", "parked")
        ]
    return EarlierUploads.of(rows, str(root))
