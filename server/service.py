"""The Scorer servicer: frames in, scores and final decisions out (docs/api.md).

Decoding and scoring run in a thread pool so the event loop stays free for other
calls; each ScoreStream call scores its frames in order and keeps one
:class:`~alscout.server.streams.StreamState` per (recording, camera). A bad frame ends
its own call with the status of :mod:`alscout.server.status`; other calls carry on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np

from alscout.errors import InvalidInputError
from alscout.runtime.backends.registry import open_backend
from alscout.runtime.decode import decode_frame
from alscout.runtime.model_info import ModelInfo
from alscout.runtime.pipeline import FrameScore, PipelineConfig, ScoringPipeline
from alscout.runtime.temporal import Decision, SelectorConfig
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.outbox import FlaggedFrame, Outbox, check_id
from alscout.server.status import abort_with
from alscout.server.streams import FramePayload, StreamState, StreamTable

__all__ = ["ModelHolder", "ScorerService", "model_info_message"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ENCODINGS = {pb.ENCODING_JPEG: "jpeg", pb.ENCODING_PNG: "png"}
_PIXEL_FORMATS = {
    pb.PIXEL_FORMAT_RGB8: "rgb8",
    pb.PIXEL_FORMAT_BGR8: "bgr8",
    pb.PIXEL_FORMAT_GRAY8: "gray8",
}


@dataclass
class _Loaded:
    pipeline: ScoringPipeline
    users: int = 0
    retired: bool = False


class ModelHolder:
    """The current scoring pipeline; swapped by :meth:`reload` without stopping calls.

    A replaced pipeline is closed once the last frame scored with it is done.
    """

    def __init__(self, model_path: Path, backend: str, threads: int, config: PipelineConfig):
        self.model_path = model_path
        self.backend_name = backend
        self.threads = threads
        self.config = config
        self._lock = threading.Lock()
        self._current = _Loaded(self._open(model_path))

    def _open(self, path: Path) -> ScoringPipeline:
        backend = open_backend(path, self.backend_name, threads=self.threads)
        return ScoringPipeline(backend, self.config)

    @property
    def pipeline(self) -> ScoringPipeline:
        """The pipeline new frames are scored with."""
        return self._current.pipeline

    @contextmanager
    def use(self) -> Iterator[ScoringPipeline]:
        """The current pipeline, kept open while the block runs."""
        with self._lock:
            loaded = self._current
            loaded.users += 1
        try:
            yield loaded.pipeline
        finally:
            with self._lock:
                loaded.users -= 1
                close = loaded.retired and loaded.users == 0
            if close:
                loaded.pipeline.close()

    def reload(self, model_file: str) -> tuple[ScoringPipeline, ScoringPipeline]:
        """Load ``model_file`` (a name in the model's folder; "" = the start-up file).

        Returns (previous, current) pipelines. On any error the current one stays.
        """
        if model_file and (Path(model_file).name != model_file or model_file in (".", "..")):
            raise InvalidInputError(
                f"model_file {model_file!r} must be a file name in the model's folder, "
                "without path separators"
            )
        path = self.model_path.parent / model_file if model_file else self.model_path
        if not path.is_file():
            raise InvalidInputError(f"model_file {model_file!r}: no such file next to the model")
        fresh = _Loaded(self._open(path))
        with self._lock:
            old, self._current = self._current, fresh
            old.retired = True
            close = old.users == 0
        if close:
            old.pipeline.close()
        log.info(
            "model reloaded path=%s version=%s hash=%s previous=%s",
            path,
            fresh.pipeline.model_info.version,
            fresh.pipeline.model_info.sha256[:12],
            old.pipeline.model_info.version,
        )
        return old.pipeline, fresh.pipeline

    def close(self) -> None:
        """Close the current pipeline (at shutdown, after calls have drained)."""
        with self._lock:
            self._current.retired = True
            close = self._current.users == 0
        if close:
            self._current.pipeline.close()


class ScorerService(alscout_pb2_grpc.ScorerServicer):
    """Implements ``alscout.v1.Scorer`` over a :class:`ModelHolder` and an :class:`Outbox`."""

    def __init__(
        self,
        models: ModelHolder,
        selector: SelectorConfig,
        outbox: Outbox,
        executor: Executor,
        max_pixels: int,
    ) -> None:
        self.models = models
        self.selector = selector
        self.outbox = outbox
        self.executor = executor
        self.max_pixels = max_pixels

    async def ScoreStream(  # noqa: N802  # names come from the proto
        self, request_iterator: AsyncIterator[pb.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FrameResult]:
        streams = StreamTable(self.selector)
        n_frames = 0
        peer = context.peer()  # read now: grpc may crash reading it after a cancellation
        try:
            async for frame in request_iterator:
                started = time.perf_counter()
                try:
                    state = streams.get(frame.recording_id, frame.camera_id)
                    state.check_next(frame.frame_index)
                    score, payload, decode_ms = await self._run(self._score, frame)
                    decisions, flagged = state.push(frame.frame_index, score.z, payload)
                    await self._store(flagged)
                except Exception as error:  # noqa: BLE001  # every failure ends this call only
                    await abort_with(context, error)
                n_frames += 1
                yield _result(frame, score, decode_ms, started, decisions, self._stride)
            for state in streams:
                decisions, flagged = state.finish()
                try:
                    await self._store(flagged)
                except Exception as error:  # noqa: BLE001
                    await abort_with(context, error)
                yield _closing(state, decisions)
        finally:
            # However the call ends (error, cancellation: grpc may also report a cancelled
            # call as a half-close), the frames it scored are decided and flagged ones kept.
            pending = sum(s.pending_frames for s in streams)
            leftover = [f for s in streams if not s.selector.finished for f in s.finish()[1]]
            if leftover:
                self._store_later(leftover)
            log.info(
                "stream call ended peer=%s streams=%d frames=%d decided_in_cleanup=%d "
                "flagged_in_cleanup=%d",
                peer,
                len(streams),
                n_frames,
                pending,
                len(leftover),
            )

    async def Score(  # noqa: N802  # names come from the proto
        self, request: pb.Frame, context: grpc.aio.ServicerContext
    ) -> pb.FrameResult:
        started = time.perf_counter()
        try:
            check_id("recording_id", request.recording_id)
            check_id("camera_id", request.camera_id)
            score, _, decode_ms = await self._run(self._score, request)
        except Exception as error:  # noqa: BLE001  # mapped to a status in one place
            await abort_with(context, error)
        result = _result(request, score, decode_ms, started, [], self._stride)
        result.decision = pb.DECISION_UNSPECIFIED
        result.reason = ""
        return result

    async def GetModelInfo(  # noqa: N802  # names come from the proto
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        pipeline = self.models.pipeline
        return model_info_message(pipeline.model_info, pipeline.backend.name)

    async def ReloadModel(  # noqa: N802  # names come from the proto
        self, request: pb.ReloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadModelResponse:
        try:
            old, new = await self._run(self.models.reload, request.model_file)
        except Exception as error:  # noqa: BLE001
            await abort_with(context, error)
        return pb.ReloadModelResponse(
            previous=model_info_message(old.model_info, old.backend.name),
            current=model_info_message(new.model_info, new.backend.name),
        )

    @property
    def _stride(self) -> int:
        return self.models.config.heatmap_stride

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _store(self, flagged: list[FlaggedFrame]) -> None:
        """Store flagged frames; shielded, so a call cancelled meanwhile does not lose them."""
        if flagged:
            await asyncio.shield(self._run(self._put_all, flagged))

    def _put_all(self, flagged: list[FlaggedFrame]) -> None:
        for item in flagged:
            self.outbox.put(item)

    def _store_later(self, flagged: list[FlaggedFrame]) -> None:
        """Store frames without waiting (the call is over); failures are logged."""

        def done(future: Future[None]) -> None:
            if future.exception() is not None:
                log.error(
                    "outbox write failed frames=%d", len(flagged), exc_info=future.exception()
                )

        try:
            self.executor.submit(self._put_all, flagged).add_done_callback(done)
        except RuntimeError:  # the pool is shut down: store here rather than lose frames
            self._put_all(flagged)

    def _score(self, frame: pb.Frame) -> tuple[FrameScore, FramePayload, float]:
        """Decode and score one frame (in a worker thread)."""
        started = time.perf_counter()
        image, fmt, raw = _decode(frame, self.max_pixels)
        decode_ms = 1000.0 * (time.perf_counter() - started)
        with self.models.use() as pipeline:
            (score,) = pipeline.score([image], heatmaps=frame.want_heatmap)
        stamp = frame.capture_timestamp
        payload = FramePayload(
            image=raw.data,
            image_format=fmt,
            model_version=score.model_version,
            model_hash=score.model_hash,
            capture_time_ns=stamp.seconds * 1_000_000_000 + stamp.nanos,
            width=raw.width if fmt == "raw" else image.shape[1],
            height=raw.height if fmt == "raw" else image.shape[0],
            pixel_format=_PIXEL_FORMATS.get(raw.pixel_format, "") if fmt == "raw" else "",
            metadata=dict(frame.metadata),
        )
        return score, payload, decode_ms


def _decode(frame: pb.Frame, max_pixels: int) -> tuple[np.ndarray, str, pb.RawImage]:
    """RGB ``[H, W, 3]`` uint8, the format name, and the image message (data, sizes)."""
    kind = frame.WhichOneof("image")
    if kind is None:
        raise InvalidInputError(f"frame {frame.frame_index} has no image: set encoded or raw")
    if kind == "encoded":
        encoding = _ENCODINGS.get(frame.encoded.encoding)
        if encoding is None:
            raise InvalidInputError(
                f"frame {frame.frame_index}: unknown encoding {frame.encoded.encoding}; "
                "use ENCODING_JPEG or ENCODING_PNG"
            )
        image = decode_frame(frame.encoded.data, encoding=encoding, max_pixels=max_pixels)
        return image, encoding, pb.RawImage(data=frame.encoded.data)
    raw = frame.raw
    pixel_format = _PIXEL_FORMATS.get(raw.pixel_format)
    if pixel_format is None:
        raise InvalidInputError(
            f"frame {frame.frame_index}: unknown pixel format {raw.pixel_format}; "
            "use PIXEL_FORMAT_RGB8, PIXEL_FORMAT_BGR8 or PIXEL_FORMAT_GRAY8"
        )
    image = decode_frame(
        raw.data,
        encoding="raw",
        width=raw.width,
        height=raw.height,
        pixel_format=pixel_format,
        max_pixels=max_pixels,
    )
    return image, "raw", raw


def _final(decision: Decision) -> pb.FinalDecision:
    return pb.FinalDecision(
        frame_index=decision.frame,
        decision=pb.DECISION_FLAGGED if decision.flagged else pb.DECISION_NOT_FLAGGED,
        reason=str(decision.reason),
        z=decision.z,
        smoothed=decision.smoothed,
        threshold=decision.threshold,
    )


def _result(
    frame: pb.Frame,
    score: FrameScore,
    decode_ms: float,
    started: float,
    decisions: list[Decision],
    stride: int,
) -> pb.FrameResult:
    finals = [_final(d) for d in decisions]
    own = next((f for f in finals if f.frame_index == frame.frame_index), None)
    result = pb.FrameResult(
        recording_id=frame.recording_id,
        camera_id=frame.camera_id,
        frame_index=frame.frame_index,
        z=score.z,
        decision=pb.DECISION_PENDING if own is None else own.decision,
        reason="pending" if own is None else own.reason,
        model_version=score.model_version,
        model_hash=score.model_hash,
        final_decisions=finals,
    )
    if own is not None:
        result.smoothed = own.smoothed
    if score.heatmap is not None:
        cells = np.asarray(score.heatmap, dtype=np.float32)
        result.heatmap.height, result.heatmap.width = cells.shape
        result.heatmap.data.extend(cells.ravel().tolist())
        result.heatmap.stride = stride
    result.timings.decode_ms = decode_ms
    result.timings.infer_ms = score.infer_ms
    result.timings.score_ms = score.score_ms
    result.timings.total_ms = 1000.0 * (time.perf_counter() - started)
    return result


def _closing(state: StreamState, decisions: list[Decision]) -> pb.FrameResult:
    return pb.FrameResult(
        recording_id=state.recording_id,
        camera_id=state.camera_id,
        final_decisions=[_final(d) for d in decisions],
        end_of_stream=True,
    )


def model_info_message(info: ModelInfo, backend: str) -> pb.ModelInfo:
    """The protobuf form of a model's metadata."""
    return pb.ModelInfo(
        name=info.name,
        version=info.version,
        model_hash=info.sha256,
        num_heads=info.num_heads,
        default_boxes=[pb.BoxSize(height=h, width=w) for h, w in info.default_boxes],
        input_height=info.input_size[0],
        input_width=info.input_size[1],
        training_data_digest=info.training_data_digest,
        backend=backend,
        file_format=info.file_format,
    )
