"""Per-stream state, server-wide: one :class:`OnlineSelector` per recording and camera.

A :class:`StreamState` keeps the payload of each frame until the frame's decision is
final (at most ``dt + dt1 + 1`` frames), a ring of the last ``context_frames`` decided
frames (context stored with a flagged frame), and a log of its recent final decisions
so a client whose call was cut can resume (docs/api.md, "Resuming"). The
:class:`StreamRegistry` holds the states of every call, keyed by (recording, camera);
a state is attached to one call at a time, or detached (its call was cut) and kept for
the resume window. :class:`SelectorChoices` gives each new stream its selector
settings: the configured ones, started from the model's shipped threshold when the
target rate asks for one. Nothing here knows about gRPC or protobuf.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import fields

from alscout.errors import (
    CapacityError,
    InvalidInputError,
    ResumeDeniedError,
    StreamBusyError,
    StreamTakenOverError,
)
from alscout.runtime.pipeline import ScoringPipeline
from alscout.runtime.shipped_thresholds import ShippedChoice, with_shipped_threshold
from alscout.runtime.temporal import Decision, OnlineSelector, SelectorConfig
from alscout.server.metrics import ServerMetrics
from alscout.server.outbox import ContextFrame, FlaggedFrame, FramePayload
from alscout.storage.layout import check_id

__all__ = [
    "StreamState",
    "StreamRegistry",
    "SelectorChoices",
    "StreamBusyError",
    "StreamTakenOverError",
    "MAX_STREAMS_PER_CALL",
]

log = logging.getLogger(__name__)

#: cameras x recordings one call may multiplex
MAX_STREAMS_PER_CALL = 64
_FLAGGED_FIELDS = {f.name for f in fields(FlaggedFrame)}


class StreamState:
    """Selector, pending payloads, context ring and decision log of one stream.

    ``earlier``: frames of this recording/camera already uploaded or stored (SPEC §2b
    dt2 rule). ``context_frames``: frames before and after a flagged frame stored with
    it (after: at most dt + dt1, the frames pending then). ``log_size``: final
    decisions kept for resuming. ``resume_token``: a random secret sent only to the
    calls that feed the stream; a resume must present it (:meth:`check_resume_token`).
    """

    def __init__(
        self,
        recording_id: str,
        camera_id: str,
        config: SelectorConfig,
        *,
        earlier: Iterable[int] = (),
        context_frames: int = 0,
        log_size: int = 4096,
    ) -> None:
        self.recording_id = check_id("recording_id", recording_id)
        self.camera_id = check_id("camera_id", camera_id)
        self.selector = OnlineSelector.from_config(config, earlier)
        self.context_frames = context_frames
        self._pending: dict[int, FramePayload] = {}
        self._before: deque[tuple[int, FramePayload]] = deque(maxlen=max(context_frames, 1))
        self._log: deque[Decision] = deque(maxlen=log_size)
        self._evicted_through = -1  # highest frame whose decision left the log
        self.n_frames = 0
        #: held while frames are pushed, stored and logged, and while a resume reads
        self.lock = asyncio.Lock()
        #: the call this stream is attached to (None: detached)
        self.owner: object | None = None
        self.detached_at: float | None = None
        self.resume_token = secrets.token_urlsafe(16)

    @property
    def key(self) -> tuple[str, str]:
        """(recording_id, camera_id)."""
        return (self.recording_id, self.camera_id)

    @property
    def last_frame(self) -> int:
        """The last frame index taken into the stream, -1 before the first."""
        last = self.selector.last_frame
        return -1 if last is None else last

    def check_resume_token(self, token: str) -> None:
        """Raise :class:`ResumeDeniedError` unless ``token`` is this stream's resume token.

        Compared in constant time. Without this check any caller that knows the ids
        could take a live stream over and receive its owner's decisions.
        """
        if not hmac.compare_digest(token.encode(), self.resume_token.encode()):
            raise ResumeDeniedError(
                f"{self.name}: missing or wrong resume_token: a stream is resumed only "
                "with the resume_token of its earlier results"
            )

    def check_next(self, frame_index: int, after: int | None = None) -> None:
        """Raise :class:`InvalidInputError` unless ``frame_index`` may follow ``after``.

        ``after`` defaults to :attr:`last_frame` (a call that has frames in flight
        passes the last index it read).
        """
        if frame_index < 0:
            raise InvalidInputError(f"{self.name}: frame_index must be >= 0, got {frame_index}")
        last = self.last_frame if after is None else after
        if frame_index <= last:
            raise InvalidInputError(
                f"{self.name}: frame indices must strictly increase: frame {frame_index} "
                f"after frame {last}"
            )

    def push(
        self, frame_index: int, z: float, payload: FramePayload, gated: bool = False
    ) -> tuple[list[Decision], list[FlaggedFrame]]:
        """Add a scored frame; returns the decisions final now and the frames they flag.

        ``gated``: the quality gate held the frame back (its decision: ``low_quality``).
        Call :meth:`record` with the decisions once the flagged frames are stored.
        """
        self.check_next(frame_index)
        decisions = self.selector.push(frame_index, z, gated)
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

    def record(self, decisions: Iterable[Decision]) -> None:
        """Log decisions that were released (their flagged frames are stored)."""
        for decision in decisions:
            if len(self._log) == self._log.maxlen:
                self._evicted_through = self._log[0].frame
            self._log.append(decision)

    def decisions_after(self, frame_index: int) -> list[Decision]:
        """Logged decisions of frames after ``frame_index``, in frame order.

        Raises :class:`CapacityError` when some of them have left the log already.
        """
        if self._evicted_through > frame_index:
            raise CapacityError(
                f"{self.name}: decisions after frame {frame_index} are no longer held (the "
                f"server keeps the last {self._log.maxlen}); start the stream anew"
            )
        return [d for d in self._log if d.frame > frame_index]

    @property
    def pending_frames(self) -> int:
        """Frames whose decision is not final yet."""
        return len(self._pending)

    @property
    def name(self) -> str:
        """``stream <recording>/<camera>``, for messages."""
        return f"stream {self.recording_id}/{self.camera_id}"

    def _settle(self, decisions: list[Decision]) -> list[FlaggedFrame]:
        flagged = []
        for decision in decisions:
            payload = self._pending.pop(decision.frame)
            if decision.flagged:
                flagged.append(self._flagged(decision, payload))
            if self.context_frames:
                self._before.append((decision.frame, payload))
        return flagged

    def _flagged(self, decision: Decision, payload: FramePayload) -> FlaggedFrame:
        context: tuple[ContextFrame, ...] = ()
        if "context" in _FLAGGED_FIELDS and self.context_frames:
            n = self.context_frames
            after = [(i, p) for i, p in self._pending.items() if i > decision.frame][:n]
            context = tuple(_context(i, p) for i, p in [*self._before, *after])
        return FlaggedFrame(
            recording_id=self.recording_id,
            camera_id=self.camera_id,
            frame_index=decision.frame,
            z=decision.z,
            smoothed=decision.smoothed,
            threshold=decision.threshold,
            context=context,
            **payload.as_fields(),
        )


class SelectorChoices:
    """The selector settings of new streams, per model (docs/temporal.md, "Shipped
    thresholds").

    With the adaptive threshold, a model that ships a threshold calibrated for the
    target rate (and the settings it is scored with) starts every stream from it; any
    other model falls back to the warm-up. Each model's choice is logged once: at
    INFO when its threshold is used, as a WARNING saying why when it is not.
    """

    def __init__(self, config: SelectorConfig) -> None:
        self.config = config
        self._chosen: dict[str, ShippedChoice] = {}

    def choice(self, pipeline: ScoringPipeline) -> ShippedChoice:
        """The choice for the model ``pipeline`` scores with (decided once per model)."""
        info = pipeline.model_info
        key = f"{info.sha256}:{info.version}"
        chosen = self._chosen.get(key)
        if chosen is None:
            chosen = with_shipped_threshold(self.config, pipeline)
            self._chosen[key] = chosen
            if chosen.used:
                log.info("selector threshold: %s", chosen.message)
            elif self.config.adaptive and self.config.initial_threshold is None:
                log.warning("selector threshold: %s", chosen.message)
        return chosen

    def for_pipeline(self, pipeline: ScoringPipeline) -> SelectorConfig:
        """The settings a new stream scored by ``pipeline`` starts with."""
        return self.choice(pipeline).selector


def _context(frame_index: int, payload: FramePayload) -> ContextFrame:
    return ContextFrame(
        frame_index=frame_index,
        image=payload.image,
        image_format=payload.image_format,
        width=payload.width,
        height=payload.height,
        pixel_format=payload.pixel_format,
    )


class StreamRegistry:
    """Every stream's state on the server, keyed by (recording_id, camera_id).

    A state is *attached* to the call that feeds it, or *detached* (its call was cut)
    and kept for resuming until :meth:`expired` hands it back for closing.
    """

    def __init__(self, metrics: ServerMetrics | None = None) -> None:
        self._streams: dict[tuple[str, str], StreamState] = {}
        # finished streams kept for a resume whose closing answer was lost: state, until
        self._closed: dict[tuple[str, str], tuple[StreamState, float]] = {}
        self._metrics = metrics or ServerMetrics()

    def get(self, recording_id: str, camera_id: str) -> StreamState | None:
        """The state of this stream, attached or detached, or None."""
        return self._streams.get((recording_id, camera_id))

    def add(self, state: StreamState, owner: object) -> None:
        """Register a new state attached to ``owner``."""
        if state.key in self._streams:
            raise StreamBusyError(f"{state.name} exists already")
        self._streams[state.key] = state
        state.owner = owner
        self._update()

    def attach(self, state: StreamState, owner: object) -> None:
        """Attach ``state`` to ``owner`` (a resume), taking it from any other call."""
        if state.owner is not None and state.owner is not owner:
            log.info("stream taken over by a resuming call stream=%s", state.name)
        state.owner = owner
        state.detached_at = None
        self._update()

    def detach(self, state: StreamState, owner: object) -> bool:
        """Detach ``state`` from ``owner`` (its call was cut); False if not its owner."""
        if state.owner is not owner or self._streams.get(state.key) is not state:
            return False
        state.owner = None
        state.detached_at = time.monotonic()
        self._update()
        return True

    def remove(self, state: StreamState, reason: str, keep_s: float = 0.0) -> None:
        """Forget ``state`` (it was finished); counted as freed for ``reason``.

        ``keep_s`` > 0 keeps its decision log that long for :meth:`closed`.
        """
        if self._streams.get(state.key) is state:
            del self._streams[state.key]
            state.owner = None
            self._metrics.freed_streams.labels(reason=reason).inc()
            self._update()
            if keep_s > 0:
                self._closed[state.key] = (state, time.monotonic() + keep_s)

    def closed(self, recording_id: str, camera_id: str) -> StreamState | None:
        """A stream finished within its keep time (for a resume), or None."""
        entry = self._closed.get((recording_id, camera_id))
        if entry is None or entry[1] <= time.monotonic():
            self._closed.pop((recording_id, camera_id), None)
            return None
        return entry[0]

    def expired(self, window_s: float, now: float | None = None) -> list[StreamState]:
        """Detached states older than ``window_s`` seconds."""
        now = time.monotonic() if now is None else now
        for key in [k for k, (_, until) in self._closed.items() if until <= now]:
            del self._closed[key]
        return [
            s
            for s in self._streams.values()
            if s.owner is None and s.detached_at is not None and now - s.detached_at >= window_s
        ]

    @property
    def n_attached(self) -> int:
        """States attached to a call."""
        return sum(1 for s in self._streams.values() if s.owner is not None)

    def __iter__(self) -> Iterator[StreamState]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)

    def _update(self) -> None:
        attached = self.n_attached
        self._metrics.active_streams.set(attached)
        self._metrics.detached_streams.set(len(self._streams) - attached)
