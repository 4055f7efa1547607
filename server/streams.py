"""Per-stream state of a ScoreStream call: one :class:`OnlineSelector` per recording and camera.

A stream keeps the bytes of each frame until the frame's decision is final (at most
``dt + dt1 + 1`` frames), so a flagged frame can go to the outbox as it arrived.
Nothing here knows about gRPC or protobuf.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

from alscout.errors import CapacityError, InvalidInputError
from alscout.runtime.temporal import Decision, OnlineSelector, SelectorConfig
from alscout.server.outbox import FlaggedFrame, check_id

__all__ = ["FramePayload", "StreamState", "StreamTable", "MAX_STREAMS_PER_CALL"]

log = logging.getLogger(__name__)

#: cameras x recordings one call may multiplex
MAX_STREAMS_PER_CALL = 64


@dataclass(frozen=True)
class FramePayload:
    """What the outbox needs of a frame besides its decision (see :class:`FlaggedFrame`)."""

    image: bytes
    image_format: str
    model_version: str
    model_hash: str
    capture_time_ns: int = 0
    width: int = 0
    height: int = 0
    pixel_format: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def as_fields(self) -> dict[str, object]:
        """The payload's fields by name (metadata copied), to build a FlaggedFrame from."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["metadata"] = dict(self.metadata)
        return values


class StreamState:
    """Selector and pending frame bytes of one stream (one camera of one recording)."""

    def __init__(self, recording_id: str, camera_id: str, config: SelectorConfig) -> None:
        self.recording_id = check_id("recording_id", recording_id)
        self.camera_id = check_id("camera_id", camera_id)
        self.selector = OnlineSelector.from_config(config)
        self._pending: dict[int, FramePayload] = {}
        self.n_frames = 0

    def check_next(self, frame_index: int) -> None:
        """Raise :class:`InvalidInputError` unless ``frame_index`` may come next."""
        if frame_index < 0:
            raise InvalidInputError(f"{self._name()}: frame_index must be >= 0, got {frame_index}")
        last = self.selector.last_frame
        if last is not None and frame_index <= last:
            raise InvalidInputError(
                f"{self._name()}: frame indices must strictly increase: frame {frame_index} "
                f"after frame {last}"
            )

    def push(
        self, frame_index: int, z: float, payload: FramePayload
    ) -> tuple[list[Decision], list[FlaggedFrame]]:
        """Add a scored frame; returns the decisions final now and the frames they flag."""
        self.check_next(frame_index)
        decisions = self.selector.push(frame_index, z)
        self._pending[frame_index] = payload
        self.n_frames += 1
        return decisions, self._settle(decisions)

    def finish(self) -> tuple[list[Decision], list[FlaggedFrame]]:
        """End the stream: the remaining decisions and the frames they flag."""
        decisions = self.selector.finish()
        flagged = self._settle(decisions)
        log.debug(
            "stream closed recording=%s camera=%s frames=%d flagged=%d",
            self.recording_id,
            self.camera_id,
            self.n_frames,
            self.selector.n_flagged,
        )
        return decisions, flagged

    @property
    def pending_frames(self) -> int:
        """Frames whose decision is not final yet."""
        return len(self._pending)

    def _settle(self, decisions: list[Decision]) -> list[FlaggedFrame]:
        flagged = []
        for decision in decisions:
            payload = self._pending.pop(decision.frame)
            if decision.flagged:
                flagged.append(
                    FlaggedFrame(
                        recording_id=self.recording_id,
                        camera_id=self.camera_id,
                        frame_index=decision.frame,
                        z=decision.z,
                        smoothed=decision.smoothed,
                        threshold=decision.threshold,
                        **payload.as_fields(),
                    )
                )
        return flagged

    def _name(self) -> str:
        return f"stream {self.recording_id}/{self.camera_id}"


class StreamTable:
    """The streams of one call, keyed by (recording_id, camera_id), in first-seen order."""

    def __init__(self, config: SelectorConfig, max_streams: int = MAX_STREAMS_PER_CALL) -> None:
        self.config = config
        self.max_streams = max_streams
        self._streams: dict[tuple[str, str], StreamState] = {}

    def get(self, recording_id: str, camera_id: str) -> StreamState:
        """The stream for these ids, created on first use (ids checked then)."""
        key = (recording_id, camera_id)
        state = self._streams.get(key)
        if state is None:
            state = StreamState(recording_id, camera_id, self.config)  # checks the ids
            if len(self._streams) >= self.max_streams:
                raise CapacityError(
                    f"a call may carry at most {self.max_streams} streams; open another call"
                )
            self._streams[key] = state
        return state

    def __iter__(self) -> Iterator[StreamState]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)
