"""The Scorer servicer: frames in, scores and final decisions out (docs/api.md).

Each ScoreStream call runs a reader task that checks, decodes (within the decode
budgets, in a pool of its own: server/admission.py) and queues its frames to the shared
:class:`~alscout.server.batching.Batcher`, while the call's generator awaits their
scores in order, pushes them into the stream's selector, stores flagged frames and
answers. A call holds at most ``max_inflight`` frames received but not answered; a
client that stays ahead of that for ``queue_wait_ms`` ends its call with
RESOURCE_EXHAUSTED. Stream states live in a server-wide
:class:`~alscout.server.streams.StreamRegistry`, so a cut call can be resumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

import grpc
import numpy as np

from alscout.errors import CapacityError, InvalidInputError, OutboxFullError, ResumeDeniedError
from alscout.runtime.pipeline import FrameScore, ScoringPipeline
from alscout.runtime.temporal import Decision
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.admission import DecodeAdmission
from alscout.server.batch_policy import choose_batch_policy
from alscout.server.batching import Batcher
from alscout.server.calls import (
    END,
    Call,
    Close,
    Job,
    Resumed,
    deadline_of,
    end_stream,
    resume_message,
    unflag,
    with_token,
)
from alscout.server.config import ServerConfig
from alscout.server.messages import (
    closing_message,
    frame_result,
    model_info_message,
    payload,
)
from alscout.server.metrics import ServerMetrics
from alscout.server.models import ModelHolder
from alscout.server.outbox import FlaggedFrame, FramePayload, Outbox
from alscout.server.security import RefusalLog
from alscout.server.status import abort_with, status_for
from alscout.server.streams import (
    MAX_STREAMS_PER_CALL,
    SelectorChoices,
    StreamBusyError,
    StreamRegistry,
    StreamState,
    StreamTakenOverError,
)
from alscout.storage.layout import check_id

__all__ = ["ModelHolder", "ScorerService", "model_info_message"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ScorerService(alscout_pb2_grpc.ScorerServicer):
    """Implements ``alscout.v1.Scorer`` over a :class:`ModelHolder`, a batcher and an outbox."""

    def __init__(
        self,
        models: ModelHolder,
        outbox: Outbox,
        executor: Executor,
        config: ServerConfig,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.models = models
        self.outbox = outbox
        self.executor = executor
        self.config = config
        self.metrics = metrics or ServerMetrics()
        self.streams = StreamRegistry(self.metrics)
        self.admission = DecodeAdmission(
            config, self.metrics, target_size=lambda: self.models.pipeline.input_size
        )
        policy = choose_batch_policy(
            models.pipeline.backend.name,
            max_batch=config.max_batch,
            max_delay_ms=config.max_delay_ms,
        )
        self.batcher = Batcher(
            self._score_batch,
            executor,
            max_batch=policy.max_batch,
            max_delay_ms=policy.max_delay_ms,
            max_queue=config.max_queue,
            metrics=self.metrics,
        )
        self.metrics.set_scoring_path(self.models.pipeline.scoring_path)
        # each stream's threshold: the configured one, or the model's shipped one
        self.selectors = SelectorChoices(config.selector)
        self.selectors.choice(self.models.pipeline)  # says at start-up which, and why
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()
        self._refusals = RefusalLog()  # resumes refused for a wrong token, per peer

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the batcher and the sweeper of expired streams (in the event loop)."""
        self.batcher.start()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="sweeper")

    async def stop(self) -> None:
        """After the calls have drained: close every stream left, stop the batcher."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for state in self.streams:
            await self._close_stream(state, "shutdown")
        await self.batcher.stop()

    async def _sweep(self) -> None:
        period = min(1.0, max(0.05, self.config.resume_window_s / 4))
        while True:
            await asyncio.sleep(period)
            for state in self.streams.expired(self.config.resume_window_s):
                try:
                    await self._close_stream(state, "resume_expired")
                except Exception:  # one bad stream must not stop the sweep
                    log.exception("closing an expired stream failed stream=%s", state.name)

    # -- RPCs ------------------------------------------------------------------------

    async def ScoreStream(  # noqa: N802  # names come from the proto
        self, request_iterator: AsyncIterator[pb.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FrameResult]:
        call = Call(peer=context.peer())  # read now: grpc may crash reading it later
        jobs: asyncio.Queue[object] = asyncio.Queue()
        slots = asyncio.Semaphore(self.config.max_inflight)
        deadline = deadline_of(context)
        reader = asyncio.get_running_loop().create_task(
            self._read(call, request_iterator, jobs, slots, deadline)
        )
        outcome = "cancelled"  # until the call ends otherwise

        async def fail(error: BaseException) -> None:
            # free the streams first: abort sends the status at once, and a fresh call
            # on the same ids right after it must not find them still held (ALREADY_EXISTS)
            reader.cancel()
            await self._release_call(call, jobs, "error")
            await self._abort(context, error)

        try:
            while True:
                try:
                    job = await asyncio.wait_for(jobs.get(), self.config.idle_timeout_s)
                except TimeoutError:
                    outcome = "idle"
                    break
                if job is END:
                    outcome = "finished"
                    break
                if isinstance(job, BaseException):
                    outcome = "error"
                    await fail(job)
                if isinstance(job, Resumed):
                    yield resume_message(job)
                    continue
                if isinstance(job, Close):
                    try:
                        decisions = await self._close_stream(job.state, "finished", owner=call)
                    except Exception as error:  # noqa: BLE001
                        outcome = "error"
                        await fail(error)
                    call.streams.pop(job.state.key, None)
                    yield with_token(closing_message(job.state, decisions), job.state)
                    continue
                assert isinstance(job, Job)
                try:
                    result = await self._answer(call, job)
                except Exception as error:  # noqa: BLE001  # every failure ends this call only
                    outcome = "error"
                    await fail(error)
                yield result
                slots.release()
            if outcome == "finished" and context.cancelled():
                outcome = "cancelled"  # grpc may report a cut call as a half-close
            if outcome in ("finished", "idle"):
                for state in list(call.streams.values()):
                    if outcome == "finished" and state.key in call.resumable:
                        continue  # not ended by its client: a cut, kept for resuming
                    try:
                        decisions = await self._close_stream(state, outcome, owner=call)
                    except Exception as error:  # noqa: BLE001
                        outcome = "error"
                        await fail(error)
                    call.streams.pop(state.key)
                    yield with_token(closing_message(state, decisions), state)
            if outcome == "idle":
                self.metrics.errors.labels(code=grpc.StatusCode.DEADLINE_EXCEEDED.name).inc()
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no frame for {self.config.idle_timeout_s} s: the call's streams are "
                    "closed (their decisions were sent above)",
                )
        finally:
            reader.cancel()
            await self._release_call(call, jobs, outcome)

    async def Score(  # noqa: N802  # names come from the proto
        self, request: pb.Frame, context: grpc.aio.ServicerContext
    ) -> pb.FrameResult:
        received = time.perf_counter()
        try:
            check_id("recording_id", request.recording_id)
            check_id("camera_id", request.camera_id)
            deadline = deadline_of(context)
            future, decoded = await self.admission.admit(
                request, self.admission.call_budget(), lambda i: self._enqueue(i, deadline)
            )
            decode_ms = decoded.decode_ms
            batched = await future
        except Exception as error:  # noqa: BLE001  # mapped to a status in one place
            await self._abort(context, error)
        self.metrics.frames.labels(rpc="Score").inc()
        result = frame_result(
            request, batched, decode_ms, received, [], self.config.pipeline.heatmap_stride
        )
        result.decision = pb.DECISION_UNSPECIFIED
        result.reason = ""
        self.metrics.latency.labels(stage="total").observe(time.perf_counter() - received)
        return result

    async def GetModelInfo(  # noqa: N802  # names come from the proto
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        return _model_info(self.models.pipeline)

    async def ReloadModel(  # noqa: N802  # names come from the proto
        self, request: pb.ReloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadModelResponse:
        try:
            old, new = await self._run(self.models.reload, request.model_file)
        except Exception as error:  # noqa: BLE001
            await self._abort(context, error)
        self.metrics.reloads.inc()
        self.metrics.set_scoring_path(new.scoring_path)
        return pb.ReloadModelResponse(previous=_model_info(old), current=_model_info(new))

    # -- a call's frames -------------------------------------------------------------

    async def _read(
        self,
        call: Call,
        requests: AsyncIterator[pb.Frame],
        jobs: asyncio.Queue[object],
        slots: asyncio.Semaphore,
        deadline: float | None,
    ) -> None:
        """Read, check, decode and queue the call's frames; ends with END or an error."""
        pixels = self.admission.call_budget()  # of this call's frames in flight
        try:
            async for frame in requests:
                key = (frame.recording_id, frame.camera_id)
                if frame.HasField("resume"):
                    call.resumable.add(key)
                    jobs.put_nowait(await self._resume(call, frame))
                    continue
                if frame.end_of_stream:
                    jobs.put_nowait(end_stream(call, key))
                    continue
                if frame.resumable:
                    call.resumable.add(key)
                received = time.perf_counter()
                state = await self._stream_for(call, frame)
                state.check_next(frame.frame_index, call.last_read.get(state.key))
                await self._take_slot(slots, state)
                call.last_read[state.key] = frame.frame_index
                future, decoded = await self.admission.admit(
                    frame, pixels, lambda i: self._enqueue(i, deadline)
                )
                jobs.put_nowait(Job(frame, state, received, decoded, future))
            jobs.put_nowait(END)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001  # handed to the call, which aborts
            jobs.put_nowait(error)

    async def _take_slot(self, slots: asyncio.Semaphore, state: StreamState) -> None:
        wait_s = self.config.queue_wait_ms / 1000.0
        try:
            await asyncio.wait_for(slots.acquire(), wait_s)
        except TimeoutError:
            self.metrics.rejected.labels(reason="backpressure").inc()
            raise CapacityError(
                f"{state.name}: the client sends faster than the server scores: "
                f"{self.config.max_inflight} frames of this call were already waiting for "
                f"{self.config.queue_wait_ms:g} ms; wait for results before sending more, "
                "or lower the frame rate"
            ) from None

    async def _enqueue(self, image: np.ndarray, deadline: float | None) -> asyncio.Future:
        wait_s = self.config.queue_wait_ms / 1000.0
        try:
            return await asyncio.wait_for(self.batcher.enqueue(image, deadline), wait_s)
        except TimeoutError:
            self.metrics.rejected.labels(reason="backpressure").inc()
            raise CapacityError(
                f"the server is overloaded: {self.batcher.depth} frames wait for inference; "
                "retry later"
            ) from None

    async def _stream_for(self, call: Call, frame: pb.Frame) -> StreamState:
        """The stream a frame belongs to: this call's, or a new one attached to it."""
        key = (frame.recording_id, frame.camera_id)
        if key in call.ended:  # before call.streams: its close may not have run yet
            raise InvalidInputError(f"stream {key[0]}/{key[1]} was ended in this call")
        state = call.streams.get(key)
        if state is not None:
            return state
        if len(call.streams) >= MAX_STREAMS_PER_CALL:
            raise CapacityError(
                f"a call may carry at most {MAX_STREAMS_PER_CALL} streams; open another call"
            )
        check_id("recording_id", frame.recording_id)
        check_id("camera_id", frame.camera_id)
        old = self.streams.get(*key)
        if old is not None:
            if old.owner is not None:
                raise StreamBusyError(
                    f"{old.name} is open in another call; send a resume request to take it "
                    "over, or use another recording_id"
                )
            # a detached stream the client does not resume: close it, start anew
            await self._close_stream(old, "cancelled")
        earlier = await self._earlier(*key)
        state = StreamState(
            *key,
            self.selectors.for_pipeline(self.models.pipeline),
            earlier=earlier,
            context_frames=self.config.context_frames,
            log_size=self.config.resume_log,
        )
        self.streams.add(state, call)
        call.streams[key] = state
        return state

    async def _resume(self, call: Call, frame: pb.Frame) -> Resumed:
        """Attach a stream to this call and collect the decisions the client missed."""
        key = (frame.recording_id, frame.camera_id)
        check_id("recording_id", frame.recording_id)
        check_id("camera_id", frame.camera_id)
        if key in call.streams:
            raise InvalidInputError(f"stream {key[0]}/{key[1]}: resume must come first")
        if frame.resume.last_decided_frame < -1:
            raise InvalidInputError(
                f"stream {key[0]}/{key[1]}: resume.last_decided_frame must be -1 (no decision "
                f"received) or a frame index >= 0, got {frame.resume.last_decided_frame}"
            )
        state = self.streams.get(*key)
        closed = self.streams.closed(*key) if state is None else None
        held = state if state is not None else closed
        if held is not None:
            try:
                held.check_resume_token(frame.resume.resume_token)
            except ResumeDeniedError as error:
                self._refusals.refused(call.peer, "PERMISSION_DENIED", str(error))
                raise
        found = state is not None or closed is not None
        self.metrics.resumes.labels(found=str(found).lower()).inc()
        if closed is not None:  # finished after a half-close whose answer was lost
            decisions = closed.decisions_after(frame.resume.last_decided_frame)
            return Resumed(closed, True, closed.last_frame, decisions, end_of_stream=True)
        if state is None:
            state = await self._stream_for(call, frame)
            return Resumed(state, False, -1, [])
        self.streams.attach(state, call)
        call.streams[key] = state
        async with state.lock:  # frames of the previous call are settled
            decisions = state.decisions_after(frame.resume.last_decided_frame)
            last = state.last_frame
        call.last_read[key] = last
        log.info(
            "stream resumed stream=%s last_received=%d replayed=%d peer=%s",
            state.name,
            last,
            len(decisions),
            call.peer,
        )
        return Resumed(state, True, last, decisions)

    async def _answer(self, call: Call, job: Job) -> pb.FrameResult:
        """Await a frame's score, push it into its stream, store flags, build the answer."""
        batched = await job.future
        fmt, raw, width, height, decode_ms = job.decoded
        frame = job.frame
        data = payload(frame, batched.score, fmt, raw, width, height)
        score = batched.score
        task = asyncio.ensure_future(
            self._settle(job.state, call, frame.frame_index, score.z, data, score.gated)
        )
        decisions = await asyncio.shield(task)
        call.n_frames += 1
        stride = self.config.pipeline.heatmap_stride
        result = frame_result(frame, batched, decode_ms, job.received, decisions, stride)
        result.resume_token = job.state.resume_token
        self.metrics.latency.labels(stage="total").observe(time.perf_counter() - job.received)
        return result

    async def _settle(
        self,
        state: StreamState,
        call: Call,
        frame_index: int,
        z: float,
        data: FramePayload,
        gated: bool = False,
    ) -> list[Decision]:
        """Push, store and log as one step that a cancelled call cannot cut in two."""
        async with state.lock:
            if state.owner is not call:
                raise StreamTakenOverError(f"{state.name} was taken over by a resuming call")
            decisions, flagged = state.push(frame_index, z, data, gated)
            decisions = unflag(decisions, await self._store(flagged))
            state.record(decisions)
        self.metrics.frames.labels(rpc="ScoreStream").inc()
        self._count(decisions)
        return decisions

    async def _close_stream(
        self, state: StreamState, reason: str, owner: object | None = None
    ) -> list[Decision]:
        """Finish a stream (decide its pending frames, store flags) and free it."""

        async def close() -> list[Decision]:
            async with state.lock:
                if owner is not None and state.owner is not owner:
                    return []
                decisions, flagged = state.finish()
                decisions = unflag(decisions, await self._store(flagged))
                state.record(decisions)
                keep = reason in ("finished", "idle")  # the closing answer may be lost
                self.streams.remove(state, reason, self.config.resume_window_s if keep else 0.0)
            self._count(decisions)
            return decisions

        return await asyncio.shield(asyncio.ensure_future(close()))

    async def _release_call(self, call: Call, jobs: asyncio.Queue[object], outcome: str) -> None:
        """Withdraw unscored frames; detach (or close) the streams the call still holds.

        Once per call; returns when the streams it closes are closed.
        """
        if call.released:
            return
        call.released = True
        while not jobs.empty():
            job = jobs.get_nowait()
            if isinstance(job, Job):
                job.future.cancel()
        window = self.config.resume_window_s > 0
        kept = 0
        closing = []
        for state in call.streams.values():
            cut = outcome == "cancelled" or (outcome == "finished" and state.key in call.resumable)
            if window and cut:
                kept += self.streams.detach(state, call)
            elif state.owner is call:
                task = asyncio.ensure_future(self._close_stream(state, outcome, owner=call))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                closing.append(task)
        if closing:  # freed before the call's status goes out: a fresh call finds them free
            outcomes = await asyncio.shield(asyncio.gather(*closing, return_exceptions=True))
            for failed in [o for o in outcomes if isinstance(o, BaseException)]:
                log.error("closing a stream failed peer=%s", call.peer, exc_info=failed)
        log.info(
            "stream call ended peer=%s outcome=%s frames=%d kept_for_resume=%d",
            call.peer,
            outcome,
            call.n_frames,
            kept,
        )

    # -- helpers ---------------------------------------------------------------------

    async def _earlier(self, recording_id: str, camera_id: str) -> list[int]:
        earlier_frames = getattr(self.outbox, "earlier_frames", None)
        if earlier_frames is None:
            return []
        return list(await self._run(earlier_frames, recording_id, camera_id))

    def _count(self, decisions: list[Decision]) -> None:
        for d in decisions:
            self.metrics.decisions.labels(decision="flagged" if d.flagged else "not_flagged").inc()
            if d.flagged:
                self.metrics.flags.inc()

    async def _abort(self, context: grpc.aio.ServicerContext, error: BaseException) -> None:
        self.metrics.errors.labels(code=status_for(error)[0].name).inc()
        await abort_with(context, error)

    def _score_batch(self, images: Sequence[np.ndarray]) -> list[FrameScore]:
        """Score a batch with the current model (in a worker thread); heat maps always."""
        with self.models.use() as pipeline:
            return pipeline.score(images, heatmaps=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _store(self, flagged: list[FlaggedFrame]) -> set[int]:
        """Store flagged frames; returns the frames the outbox refused for its quota."""
        if not flagged:
            return set()
        return await self._run(self._put_all, flagged)

    def _put_all(self, flagged: list[FlaggedFrame]) -> set[int]:
        refused = set()
        for item in flagged:
            try:
                self.outbox.put(item)
            except OutboxFullError as error:  # this frame only: the stream carries on
                log.warning(
                    "flagged frame not kept recording=%s camera=%s frame=%d: %s",
                    item.recording_id,
                    item.camera_id,
                    item.frame_index,
                    error,
                )
                refused.add(item.frame_index)
        return refused


def _model_info(pipeline: ScoringPipeline) -> pb.ModelInfo:
    """The GetModelInfo answer for ``pipeline``: its model, backend and scoring path."""
    message = model_info_message(pipeline.model_info, pipeline.backend.name)
    message.scoring_path = pipeline.scoring_path
    return message
