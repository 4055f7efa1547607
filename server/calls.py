"""What one ScoreStream call holds, and the small pieces of its answers.

:class:`Call` (the call's streams, what it has read and ended), :class:`Job` (a frame
between reading and answering), :class:`Resumed` / :class:`Close` (a resume answer, a
stream the client ended) and the helpers the servicer
(:mod:`alscout.server.service`) builds its answers with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field

import grpc

from alscout.errors import InvalidInputError
from alscout.runtime.temporal import Decision, Reason
from alscout.server._proto import alscout_pb2 as pb
from alscout.server.batching import BatchedScore
from alscout.server.messages import final_message
from alscout.server.streams import StreamState

__all__ = [
    "Job",
    "Resumed",
    "Close",
    "Call",
    "END",
    "unflag",
    "end_stream",
    "deadline_of",
    "resume_message",
    "with_token",
]


@dataclass
class Job:
    """A frame of a call between its reading and its answer."""

    frame: pb.Frame
    state: StreamState
    received: float  # perf_counter seconds
    decoded: tuple[str, pb.RawImage, int, int, float]  # format, image msg, w, h, decode ms
    future: asyncio.Future[BatchedScore]


@dataclass
class Resumed:
    """The answer to a resume request, ready to send."""

    state: StreamState
    found: bool
    last_received: int
    decisions: list[Decision]
    end_of_stream: bool = False


@dataclass
class Close:
    """A stream the client ended with an end_of_stream message."""

    state: StreamState


@dataclass
class Call:
    """What one ScoreStream call holds.

    ``resumable``: streams whose client ends them explicitly (a half-close without
    end_of_stream is a cut for them). ``ended``: streams ended in this call.
    """

    peer: str
    streams: dict[tuple[str, str], StreamState] = field(default_factory=dict)
    last_read: dict[tuple[str, str], int] = field(default_factory=dict)
    resumable: set[tuple[str, str]] = field(default_factory=set)
    ended: set[tuple[str, str]] = field(default_factory=set)
    n_frames: int = 0
    released: bool = False


END = object()


def unflag(decisions: list[Decision], refused: set[int]) -> list[Decision]:
    """The decisions, with the frames the outbox refused answered NOT_FLAGGED (outbox_full).

    A frame is reported FLAGGED only once it is durable; one the quota refused is
    reported as not flagged, with the reason, rather than ending the call.
    """
    if not refused:
        return decisions
    return [
        dataclasses.replace(d, flagged=False, reason=Reason.OUTBOX_FULL)
        if d.frame in refused
        else d
        for d in decisions
    ]


def end_stream(call: Call, key: tuple[str, str]) -> Close:
    """The close job of a stream the client ends; it must be open in this call."""
    if key not in call.streams or key in call.ended:
        raise InvalidInputError(
            f"end_of_stream for stream {key[0]}/{key[1]}, which is not open in this call"
        )
    call.ended.add(key)
    return Close(call.streams[key])


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline in ``time.monotonic()`` seconds, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def resume_message(job: Resumed) -> pb.FrameResult:
    return pb.FrameResult(
        recording_id=job.state.recording_id,
        camera_id=job.state.camera_id,
        final_decisions=[final_message(d) for d in job.decisions],
        resume=pb.ResumeResult(found=job.found, last_received_frame=job.last_received),
        end_of_stream=job.end_of_stream,
        resume_token=job.state.resume_token,
    )


def with_token(result: pb.FrameResult, state: StreamState) -> pb.FrameResult:
    result.resume_token = state.resume_token
    return result
