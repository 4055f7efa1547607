"""Python client of the Scorer service, blocking and asyncio, with reconnect and resume.

``client.stream(recording_id, camera_id, frames)`` sends one stream's frames and
yields the server's results. When the connection drops (UNAVAILABLE, or ABORTED when
another call took the stream), it reconnects with backoff and resumes (docs/api.md,
"Resuming"): the first message of the new call names the last final decision the
client has seen; the server answers with the decisions released since and the last
frame it has taken, and the client re-sends only frames after that one. Each frame's
final decision therefore reaches the caller exactly once, and no frame the server has
already taken (so none already decided) is sent twice. The client keeps every frame
until its final decision arrives: when the server answers a resume with found=false
(it restarted, or the stream expired), it sends every undecided frame again, oldest
first, so the new stream decides it. A fresh call refused ALREADY_EXISTS before its
first result (the server has not yet seen this client's previous call end) is retried
as a fresh call, never as a resume.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc

from alscout.errors import InvalidInputError
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc

__all__ = ["StreamFrame", "ScorerClient", "AsyncScorerClient", "RETRYABLE", "RETRYABLE_UNARY"]

log = logging.getLogger(__name__)

#: status codes after which a stream reconnects and resumes (resuming is always safe;
#: grpc's asyncio client reports a write on a cut connection as INTERNAL)
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL}
)
#: status codes after which a unary call is sent again
RETRYABLE_UNARY = frozenset({grpc.StatusCode.UNAVAILABLE})
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


class _Progress:
    """What one stream has sent and seen, across reconnects (shared by both clients).

    ``undecided``: every frame sent whose final decision has not been handed on (index
    > ``last_decided``), oldest first; final decisions arrive in frame order, so a
    frame is released as soon as its own comes, and the deque holds at most the
    selector's lag plus the window. ``unacked``: the frames among them due to be sent
    (again) or whose own result has not arrived. ``last_decided``: the highest frame
    whose final decision was handed on.
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

    def resume_message(self) -> pb.Frame:
        return pb.Frame(
            recording_id=self.recording_id,
            camera_id=self.camera_id,
            resume=pb.ResumeRequest(last_decided_frame=self.last_decided),
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


class _Backoff:
    def __init__(self, retries: int, base_s: float, codes: frozenset = RETRYABLE) -> None:
        self.retries = retries
        self.base_s = base_s
        self.codes = codes
        self.failures = 0

    def next_delay(self, error: grpc.RpcError, busy: bool = False) -> float:
        """Seconds to wait before the next attempt; raises ``error`` when out of retries.

        ``busy``: ALREADY_EXISTS is retried too (a fresh call that found the stream
        still held by the call it replaces, which the server has not yet seen end).
        """
        code = _code(error)
        self.failures += 1
        retryable = code in self.codes or (busy and code == grpc.StatusCode.ALREADY_EXISTS)
        if not retryable or self.failures > self.retries:
            raise error
        delay = min(5.0, self.base_s * 2 ** (self.failures - 1))
        log.warning(
            "stream call failed code=%s attempt=%d retry_in_s=%.2f details=%s",
            getattr(code, "name", code),
            self.failures,
            delay,
            error.details() if hasattr(error, "details") else "",
        )
        return delay


def _code(error: BaseException) -> grpc.StatusCode | None:
    code = getattr(error, "code", None)
    return code() if callable(code) else None


def _busy(error: grpc.RpcError, resume: bool, answered: bool) -> bool:
    """True when a fresh attempt was refused ALREADY_EXISTS before any result: it is
    retried as a fresh call (a resume would take over a stream that may be another's)."""
    return not resume and not answered and _code(error) == grpc.StatusCode.ALREADY_EXISTS


class _Client:
    """What both clients hold: the channel (``_api``: ``grpc`` or ``grpc.aio``), the stub,
    the call metadata and the retry settings (arguments: see :class:`ScorerClient`)."""

    _api: Any = grpc

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        retries: int = 5,
        backoff_s: float = 0.1,
        window: int = 32,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        if credentials is None:
            self._channel = self._api.insecure_channel(target, options=options)
        else:
            self._channel = self._api.secure_channel(target, credentials, options=options)
        self._stub = alscout_pb2_grpc.ScorerStub(self._channel)
        self._metadata = _metadata(token)
        self.retries = retries
        self.backoff_s = backoff_s
        self.window = window


class ScorerClient(_Client):
    """Blocking client of ``alscout.v1.Scorer``; a context manager that closes its channel.

    Args:
        target: ``host:port``.
        credentials: TLS channel credentials
            (:func:`alscout.server.security.channel_credentials`); None: plain TCP.
        token: bearer token sent with every call, or None.
        retries: consecutive failed attempts tolerated per call before the error is raised.
        backoff_s: first wait between attempts, doubled after each failure (at most 5 s).
        window: most frames sent whose own result has not come back.
    """

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> ScorerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def score(
        self,
        frame: StreamFrame,
        recording_id: str,
        camera_id: str,
        *,
        want_heatmap: bool = False,
        timeout: float | None = None,
    ) -> pb.FrameResult:
        """Score one frame on its own (z, heat map, timings; no temporal decision)."""
        message = frame.message(recording_id, camera_id, want_heatmap)
        return self._unary(self._stub.Score, message, timeout)

    def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        """The served model's metadata."""
        return self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def reload(self, model_file: str = "", timeout: float | None = None) -> pb.ReloadModelResponse:
        """Ask the server to load ``model_file`` (a name next to its model; "": its own)."""
        request = pb.ReloadModelRequest(model_file=model_file)
        return self._stub.ReloadModel(request, timeout=timeout, metadata=self._metadata)

    def _unary(self, method: object, request: object, timeout: float | None) -> object:
        backoff = _Backoff(self.retries, self.backoff_s, RETRYABLE_UNARY)
        while True:
            try:
                return method(request, timeout=timeout, metadata=self._metadata)  # type: ignore[operator]
            except grpc.RpcError as error:
                time.sleep(backoff.next_delay(error))

    def stream(
        self,
        recording_id: str,
        camera_id: str,
        frames: Iterable[StreamFrame],
        *,
        want_heatmap: bool = False,
    ) -> Iterator[pb.FrameResult]:
        """Send ``frames`` (strictly increasing indices) as one stream; yield the results.

        Yields each frame's own result (PENDING until its decision is final) and the
        closing result (``end_of_stream``) last; after a resume, also the resume answer
        when it carries decisions the client had not seen. Each frame's final decision
        comes exactly once; a frame sent again after a resume that found no stream (the
        server restarted) is answered again, so its own result may come twice.
        Reconnects and resumes on UNAVAILABLE / ABORTED / INTERNAL, and retries a fresh
        call refused ALREADY_EXISTS before its first result as a fresh call, up to
        ``retries`` consecutive failures.
        """
        progress = _Progress(recording_id, camera_id, want_heatmap)
        source = iter(frames)
        backoff = _Backoff(self.retries, self.backoff_s)
        resume = False
        while not progress.finished:
            feeder = _Feeder(progress, source, self.window, resume)
            call = self._stub.ScoreStream(feeder.requests(), metadata=self._metadata)
            answered = False
            try:
                for result in call:
                    answered = True
                    backoff.failures = 0
                    out = feeder.on_result(result)
                    if out is not None:
                        yield out
                    if progress.finished:
                        break
            except grpc.RpcError as error:
                feeder.stop()
                busy = _busy(error, resume, answered)
                time.sleep(backoff.next_delay(error, busy))
                resume = not busy
            finally:
                feeder.stop()
                call.cancel()


class _Feeder:
    """The request side of one attempt of a blocking stream call (runs in a grpc thread)."""

    def __init__(
        self, progress: _Progress, source: Iterator[StreamFrame], window: int, resume: bool
    ) -> None:
        self.progress = progress
        self.source = source
        self.window = window
        self.resume = resume
        self._cond = threading.Condition()
        self._resumed = not resume
        self._stopped = False

    def on_result(self, result: pb.FrameResult) -> pb.FrameResult | None:
        """Book a result (under the lock the request thread shares); see _Progress.accept."""
        with self._cond:
            if result.HasField("resume"):
                self._resumed = True
            out = self.progress.accept(result)
            self._cond.notify_all()
        return out

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _wait(self, ready: object) -> bool:
        """Wait until ``ready()`` or stop; True when ready."""
        with self._cond:
            while not self._stopped and not ready():  # type: ignore[operator]
                self._cond.wait(0.1)
            return not self._stopped

    def requests(self) -> Iterator[pb.Frame]:
        progress = self.progress
        if self.resume:
            yield progress.resume_message()
            if not self._wait(lambda: self._resumed):
                return
        # after any frame an earlier attempt's thread was still pulling is booked
        with progress.pull_lock, self._cond:
            again = list(progress.unacked)
        for frame in again:  # sent by an earlier attempt, not taken by this server
            index = frame.frame_index
            if not self._wait(lambda i=index: progress.in_flight_before(i) < self.window):
                return
            yield progress.message(frame)
        while True:
            if not self._wait(lambda: len(progress.unacked) < self.window):
                return
            with progress.pull_lock:
                if self._stopped:
                    return  # this attempt is over: the next one sends what comes next
                frame = next(self.source, None)
                if frame is not None:
                    with self._cond:
                        progress.book(frame)
            if frame is None:
                yield progress.end_message()
                return
            yield progress.message(frame)


class AsyncScorerClient(_Client):
    """The asyncio twin of :class:`ScorerClient` (same arguments, ``async`` methods)."""

    _api = grpc.aio

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncScorerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def score(
        self,
        frame: StreamFrame,
        recording_id: str,
        camera_id: str,
        *,
        want_heatmap: bool = False,
        timeout: float | None = None,
    ) -> pb.FrameResult:
        """Score one frame on its own (z, heat map, timings; no temporal decision)."""
        message = frame.message(recording_id, camera_id, want_heatmap)
        return await self._unary(self._stub.Score, message, timeout)

    async def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        """The served model's metadata."""
        return await self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def reload(
        self, model_file: str = "", timeout: float | None = None
    ) -> pb.ReloadModelResponse:
        """Ask the server to load ``model_file`` (a name next to its model; "": its own)."""
        request = pb.ReloadModelRequest(model_file=model_file)
        return await self._stub.ReloadModel(request, timeout=timeout, metadata=self._metadata)

    async def _unary(self, method: object, request: object, timeout: float | None) -> object:
        backoff = _Backoff(self.retries, self.backoff_s, RETRYABLE_UNARY)
        while True:
            try:
                return await method(request, timeout=timeout, metadata=self._metadata)  # type: ignore[operator]
            except grpc.RpcError as error:
                await asyncio.sleep(backoff.next_delay(error))

    async def stream(
        self,
        recording_id: str,
        camera_id: str,
        frames: Iterable[StreamFrame] | AsyncIterable[StreamFrame],
        *,
        want_heatmap: bool = False,
    ) -> AsyncIterator[pb.FrameResult]:
        """As :meth:`ScorerClient.stream`; ``frames`` may be an async iterable."""
        progress = _Progress(recording_id, camera_id, want_heatmap)
        source = _aiter(frames)
        backoff = _Backoff(self.retries, self.backoff_s)
        resume = False
        changed = asyncio.Event()
        pull_lock = asyncio.Lock()
        while not progress.finished:
            answered, over = asyncio.Event(), asyncio.Event()
            call = self._stub.ScoreStream(
                self._requests(progress, source, resume, answered, changed, over, pull_lock),
                metadata=self._metadata,
            )
            try:
                async for result in call:
                    answered.set()
                    backoff.failures = 0
                    out = progress.accept(result)
                    changed.set()
                    if out is not None:
                        yield out
                    if progress.finished:
                        break
            except grpc.RpcError as error:
                over.set()
                changed.set()
                busy = _busy(error, resume, answered.is_set())
                await asyncio.sleep(backoff.next_delay(error, busy))
                resume = not busy
            finally:
                over.set()
                changed.set()
                call.cancel()

    async def _requests(
        self,
        progress: _Progress,
        source: AsyncIterator[StreamFrame],
        resume: bool,
        answered: asyncio.Event,
        changed: asyncio.Event,
        over: asyncio.Event,
        pull_lock: asyncio.Lock,
    ) -> AsyncIterator[pb.Frame]:
        """The request side of one attempt.

        Nothing follows a call's first message until the server has answered it: a
        refusal (ALREADY_EXISTS) then reaches the client as it is, where a write racing
        it would have turned it into INTERNAL in grpc's asyncio client.
        """

        async def until(ready: Callable[[], bool]) -> bool:
            """Wait until ``ready()`` or the attempt is over; True when ready."""
            while not ready() and not over.is_set():
                changed.clear()
                await changed.wait()
            return not over.is_set()

        if resume:
            yield progress.resume_message()
            if not await until(answered.is_set):
                return
        async with pull_lock:  # an earlier attempt may be pulling a frame still
            again = list(progress.unacked)
        for frame in again:  # sent by an earlier attempt, not taken by this server
            index = frame.frame_index
            if not await until(lambda i=index: progress.in_flight_before(i) < self.window):
                return
            yield progress.message(frame)
            if not await until(answered.is_set):
                return
        while True:
            if not await until(lambda: len(progress.unacked) < self.window):
                return
            async with pull_lock:
                if over.is_set():
                    return  # this attempt is over: the next one sends what comes next
                frame = await anext(source, None)
                if frame is not None:
                    progress.book(frame)
            if frame is None:
                yield progress.end_message()
                return
            yield progress.message(frame)
            if not await until(answered.is_set):
                return


async def _aiter(
    frames: Iterable[StreamFrame] | AsyncIterable[StreamFrame],
) -> AsyncIterator[StreamFrame]:
    if isinstance(frames, AsyncIterable):
        async for frame in frames:
            yield frame
    else:
        for frame in frames:
            yield frame


def _metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    if token is None:
        return None
    from alscout.server.security import token_metadata

    return token_metadata(token)
