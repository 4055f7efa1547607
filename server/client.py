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
as a fresh call, never as a resume. A resume carries the stream's resume token, which
every result of the stream holds; a call cut before any result came is retried as a
fresh call that sends every frame again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import Any, TypeVar

import grpc

from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.client_progress import StreamFrame, StreamProgress
from alscout.server.client_retries import (
    RETRYABLE,
    RETRYABLE_UNARY,
    Retries,
    refused_busy,
)

__all__ = ["StreamFrame", "ScorerClient", "AsyncScorerClient", "RETRYABLE", "RETRYABLE_UNARY"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


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

    def _unary(self, method: Callable[..., _T], request: object, timeout: float | None) -> _T:
        backoff = Retries(self.retries, self.backoff_s, RETRYABLE_UNARY)
        while True:
            try:
                return method(request, timeout=timeout, metadata=self._metadata)
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
        progress = StreamProgress(recording_id, camera_id, want_heatmap)
        source = iter(frames)
        backoff = Retries(self.retries, self.backoff_s)
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
                busy = refused_busy(error, resume, answered)
                time.sleep(backoff.next_delay(error, busy))
                resume = not busy and progress.can_resume
            finally:
                feeder.stop()
                call.cancel()


class _Feeder:
    """The request side of one attempt of a blocking stream call (runs in a grpc thread)."""

    def __init__(
        self, progress: StreamProgress, source: Iterator[StreamFrame], window: int, resume: bool
    ) -> None:
        self.progress = progress
        self.source = source
        self.window = window
        self.resume = resume
        self._cond = threading.Condition()
        self._resumed = not resume
        self._stopped = False

    def on_result(self, result: pb.FrameResult) -> pb.FrameResult | None:
        """Book a result (under the lock the request thread shares); see StreamProgress.accept."""
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

    def _wait(self, ready: Callable[..., bool]) -> bool:
        """Wait until ``ready()`` or stop; True when ready.

        ``ready`` is called with no arguments; ``...`` lets a lambda in a loop bind its
        loop variable as a default argument (``lambda i=index: ...``).
        """
        with self._cond:
            while not self._stopped and not ready():
                self._cond.wait(0.1)
            return not self._stopped

    def requests(self) -> Iterator[pb.Frame]:
        progress = self.progress
        frame: StreamFrame | None
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

    async def _unary(
        self, method: Callable[..., Awaitable[_T]], request: object, timeout: float | None
    ) -> _T:
        backoff = Retries(self.retries, self.backoff_s, RETRYABLE_UNARY)
        while True:
            try:
                return await method(request, timeout=timeout, metadata=self._metadata)
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
        progress = StreamProgress(recording_id, camera_id, want_heatmap)
        source = _aiter(frames)
        backoff = Retries(self.retries, self.backoff_s)
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
                busy = refused_busy(error, resume, answered.is_set())
                await asyncio.sleep(backoff.next_delay(error, busy))
                resume = not busy and progress.can_resume
            finally:
                over.set()
                changed.set()
                call.cancel()

    async def _requests(
        self,
        progress: StreamProgress,
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

        async def until(ready: Callable[..., bool]) -> bool:
            """Wait until ``ready()`` or the attempt is over; True when ready (see _wait)."""
            while not ready() and not over.is_set():
                changed.clear()
                await changed.wait()
            return not over.is_set()

        frame: StreamFrame | None
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
