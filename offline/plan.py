"""Which recordings a run covers: one :class:`RecordingUnit` per source, ids resolved early.

A unit is a source and the options that shape its frames (topic, frame limit, how
decoded frames are passed on). Its :attr:`~RecordingUnit.unit_id` is stable across
runs (a digest of those), so a re-run finds the units already committed. Recording and
camera ids follow ``alscout stream`` (:func:`~alscout.server.cli_stream.default_ids`,
then ``--recording-id`` / ``--camera-id``); they are resolved before any scoring, so two
sources that would write the same stream are refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from alscout.errors import ConfigError, DataError
from alscout.server.cli_stream import default_ids
from alscout.server.sources import FRAME_ENCODINGS
from alscout.storage.layout import check_id

__all__ = ["RecordingUnit", "StreamClaim", "plan_units", "check_collisions"]


class StreamClaim(NamedTuple):
    """The stream a unit writes (``camera_id`` None: not known before it is read)."""

    unit_id: str
    source: str
    recording_id: str
    camera_id: str | None


@dataclass(frozen=True)
class RecordingUnit:
    """One recording to score: ``source`` (a path made absolute, or an ``s3://`` URL).

    ``recording_id``/``camera_id``: the stream's ids; ``camera_id`` is None only for an
    MCAP file in S3 without ``topic`` or a given camera id (the worker reads its first
    image topic). ``topic``: MCAP image topic. ``max_frames``: score at most this many
    frames. ``frame_encoding``: how decoded frames travel (as ``alscout stream``'s).
    """

    source: str
    recording_id: str
    camera_id: str | None
    topic: str | None = None
    max_frames: int | None = None
    frame_encoding: str = "raw"

    @property
    def unit_id(self) -> str:
        """``<recording>-<12 hex digits>``: stable across runs, unique per source and options."""
        options = (self.topic, self.max_frames, self.frame_encoding)
        text = json.dumps([self.source, self.recording_id, self.camera_id, *options])
        return f"{self.recording_id}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"

    @property
    def claim(self) -> StreamClaim:
        """The stream this unit writes."""
        return StreamClaim(self.unit_id, self.source, self.recording_id, self.camera_id)

    def resolve_camera(self, topic: str | None) -> str:
        """The camera id once the source is open (``topic``: the MCAP topic it reads)."""
        if self.camera_id is not None:
            return self.camera_id
        return default_ids(self.source, topic)[1]


def plan_units(
    sources: Sequence[str],
    *,
    recording_id: str | None = None,
    camera_id: str | None = None,
    topic: str | None = None,
    max_frames: int | None = None,
    frame_encoding: str = "raw",
) -> list[RecordingUnit]:
    """A unit per source, ids resolved as ``alscout stream`` would; collisions refused.

    Raises :class:`ConfigError` for a bad option or two sources of one stream, and
    :class:`DataError` for a local source that does not exist.
    """
    if not sources:
        raise ConfigError("name at least one SOURCE to score")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
    if frame_encoding not in FRAME_ENCODINGS:
        raise ConfigError(f"frame encoding must be one of {FRAME_ENCODINGS}")
    for kind, value in (("--recording-id", recording_id), ("--camera-id", camera_id)):
        if value is not None:
            check_id(kind, value)
    units = []
    for spec in sources:
        source = _normalised(spec)
        rec = recording_id or default_ids(source, None)[0]
        cam = camera_id or _camera_of(source, topic)
        units.append(RecordingUnit(source, rec, cam, topic, max_frames, frame_encoding))
    check_collisions(unit.claim for unit in units)
    return units


def check_collisions(claims: Iterable[StreamClaim]) -> None:
    """Raise :class:`ConfigError` when two units would write one stream.

    A unit whose camera is not known yet collides with any unit of its recording.
    """
    seen: dict[str, list[StreamClaim]] = {}
    for claim in claims:
        for other in seen.get(claim.recording_id, []):
            if other.unit_id == claim.unit_id:
                continue
            if None in (claim.camera_id, other.camera_id) or claim.camera_id == other.camera_id:
                raise ConfigError(
                    f"{other.source} and {claim.source} would both write stream "
                    f"{claim.recording_id}/{claim.camera_id or other.camera_id or '?'}; give "
                    "them other names, score them with --recording-id / --camera-id one at "
                    "a time, or use another --out"
                )
        seen.setdefault(claim.recording_id, []).append(claim)


def _normalised(spec: str) -> str:
    """A local path made absolute (a re-run from another folder finds its units)."""
    if "://" in spec:
        if not spec.startswith("s3://"):
            raise ConfigError(
                f"{spec}: alscout score reads files, folders and s3:// recordings, not live "
                "streams (use alscout stream)"
            )
        return spec
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder")
    return os.path.abspath(path)


def _camera_of(source: str, topic: str | None) -> str | None:
    """The camera id ``alscout stream`` would derive; None when only the worker can tell."""
    base = source.partition("?")[0]
    if not base.lower().endswith(".mcap"):
        return default_ids(source, None)[1]
    if topic is not None:
        return default_ids(source, topic)[1]
    if source.startswith("s3://"):
        return None  # the first image topic of a file not downloaded yet
    from alscout.server.sources import McapSource

    return default_ids(source, McapSource(source).topic)[1]
