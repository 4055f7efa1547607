"""What a client holds for one stream: the frames it sends, and those still undecided.

Both clients (:mod:`alscout.server.client`) keep a :class:`StreamProgress` across
reconnects; it builds each request message and books each result, so that a resume
re-sends exactly the frames the server has not taken and every final decision is
handed on once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from alscout.errors import InvalidInputError
from alscout.server._proto import alscout_pb2 as pb

__all__ = ["StreamFrame", "StreamProgress"]

log = logging.getLogger(__name__)

_ENCODINGS = {"jpeg": pb.ENCODING_JPEG, "png": pb.ENCODING_PNG}
_PIXEL_FORMATS = {
    "rgb8": pb.PIXEL_FORMAT_RGB8,
    "bgr8": pb.PIXEL_FORMAT_BGR8,
    "gray8": pb.PIXEL_FORMAT_GRAY8,
}


@dataclass(frozen=True)
class StreamFrame:
    """One frame to send: its index in the stream and its bytes.

    ``encoding``: "jpeg" | "png" (compressed bytes) or "raw" (``height * width *
    channels`` bytes, row-major, with ``width``, ``height`` in pixels and
    ``pixel_format`` "rgb8" | "bgr8" | "gray8"). ``capture_time_ns``: ns since the epoch.
    """

    frame_index: int
    image: bytes
    encoding: str = "jpeg"
    width: int = 0
    height: int = 0
    pixel_format: str = ""
    capture_time_ns: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.frame_index, bool) or not isinstance(self.frame_index, int):
            raise InvalidInputError(f"frame_index must be an int, got {self.frame_index!r}")
        if self.encoding == "raw":
            if self.pixel_format not in _PIXEL_FORMATS or self.width < 1 or self.height < 1:
                raise InvalidInputError(
                    f"frame {self.frame_index}: raw frames need width, height >= 1 and "
                    f"pixel_format in {sorted(_PIXEL_FORMATS)}"
                )
        elif self.encoding not in _ENCODINGS:
            raise InvalidInputError(
                f"frame {self.frame_index}: encoding must be jpeg, png or raw, got "
                f"{self.encoding!r}"
            )

    def message(self, recording_id: str, camera_id: str, want_heatmap: bool) -> pb.Frame:
        """The ``Frame`` message of this frame."""
        frame = pb.Frame(
            recording_id=recording_id,
            camera_id=camera_id,
            frame_index=self.frame_index,
            metadata=dict(self.metadata),
            want_heatmap=want_heatmap,
        )
        if self.capture_time_ns:
            seconds, nanos = divmod(self.capture_time_ns, 1_000_000_000)
            frame.capture_timestamp.seconds, frame.capture_timestamp.nanos = seconds, nanos
        if self.encoding == "raw":
            frame.raw.data = self.image
            frame.raw.width, frame.raw.height = self.width, self.height
            frame.raw.pixel_format = _PIXEL_FORMATS[self.pixel_format]
        else:
            frame.encoded.data = self.image
            frame.encoded.encoding = _ENCODINGS[self.encoding]
        return frame


class StreamProgress:
    """What one stream has sent and seen, across reconnects (shared by both clients).

    ``undecided``: every frame sent whose final decision has not been handed on (index
    > ``last_decided``), oldest first; final decisions arrive in frame order, so a
    frame is released as soon as its own comes, and the deque holds at most the
    selector's lag plus the window. ``unacked``: the frames among them due to be sent
    (again) or whose own result has not arrived. ``last_decided``: the highest frame
    whose final decision was handed on. ``resume_token``: the stream's secret from the
    server's results (None until the first result); a resume must carry it.
    """

    def __init__(self, recording_id: str, camera_id: str, want_heatmap: bool) -> None:
        self.recording_id = recording_id
        self.camera_id = camera_id
        self.want_heatmap = want_heatmap
        self.undecided: deque[StreamFrame] = deque()
        self.unacked: deque[StreamFrame] = deque()
        self.last_decided = -1
        self.last_sent = -1
        self.finished = False
        self.resume_token: str | None = None
        #: held while a frame is taken from the source and booked (blocking client)
        self.pull_lock = threading.Lock()

    def book(self, frame: StreamFrame) -> None:
        """Record ``frame`` as sent (checks that indices increase)."""
        if frame.frame_index <= self.last_sent:
            raise InvalidInputError(
                f"frame indices must strictly increase: {frame.frame_index} after {self.last_sent}"
            )
        self.undecided.append(frame)
        self.unacked.append(frame)
        self.last_sent = frame.frame_index

    def in_flight_before(self, frame_index: int) -> int:
        """How many unacknowledged frames come before ``frame_index`` (re-send window)."""
        n = 0
        for frame in self.unacked:
            if frame.frame_index >= frame_index:
                break
            n += 1
        return n

    @property
    def can_resume(self) -> bool:
        """Whether a resume is possible: a result (so the resume token) has come.

        Without one the server took no frame this client knows of; the next attempt is a
        fresh call that sends every undecided frame again.
        """
        return self.resume_token is not None

    def resume_message(self) -> pb.Frame:
        return pb.Frame(
            recording_id=self.recording_id,
            camera_id=self.camera_id,
            resume=pb.ResumeRequest(
                last_decided_frame=self.last_decided, resume_token=self.resume_token or ""
            ),
        )

    def message(self, frame: StreamFrame) -> pb.Frame:
        message = frame.message(self.recording_id, self.camera_id, self.want_heatmap)
        message.resumable = True
        return message

    def end_message(self) -> pb.Frame:
        return pb.Frame(
            recording_id=self.recording_id, camera_id=self.camera_id, end_of_stream=True
        )

    def accept(self, result: pb.FrameResult) -> pb.FrameResult | None:
        """Book a result; returns it (decisions already seen removed) or None to skip.

        A resume answer with ``found = false`` (the server restarted, or the stream
        expired) means the server holds none of this stream's frames: every frame not
        yet decided is due again, oldest first, so the new stream decides it.
        """
        if result.resume_token:  # the same all the stream long; a new stream has a new one
            self.resume_token = result.resume_token
        if result.HasField("resume"):
            if result.resume.found:
                last = result.resume.last_received_frame
                while self.unacked and self.unacked[0].frame_index <= last:
                    self.unacked.popleft()  # the server has it: never sent again
            else:
                self.unacked.clear()
                self.unacked.extend(self.undecided)
                log.warning(
                    "stream %s/%s not found on resume: sending %d undecided frames again",
                    self.recording_id,
                    self.camera_id,
                    len(self.unacked),
                )
        elif not result.end_of_stream:
            while self.unacked and self.unacked[0].frame_index <= result.frame_index:
                self.unacked.popleft()
        if result.end_of_stream:
            self.finished = True
        fresh = [d for d in result.final_decisions if d.frame_index > self.last_decided]
        if len(fresh) != len(result.final_decisions):
            del result.final_decisions[:]
            result.final_decisions.extend(fresh)
        if fresh:
            self.last_decided = fresh[-1].frame_index
            while self.undecided and self.undecided[0].frame_index <= self.last_decided:
                self.undecided.popleft()
        if result.HasField("resume") and not fresh and not result.end_of_stream:
            return None
        return result
