"""Protobuf <-> alscout conversions of the Scorer service: frames in, results out.

Decoding a ``Frame`` into RGB pixels (after bounding its metadata: the request's
``map<string, string>`` becomes a Python dict here, and the stream and the outbox keep
it), the payload the outbox keeps, and the ``FrameResult`` / ``FinalDecision`` /
``ModelInfo`` messages sent back.
"""

from __future__ import annotations

import time

import numpy as np

from alscout.errors import InvalidInputError
from alscout.runtime.decode import checked_size, decode_frame
from alscout.runtime.model_info import ModelInfo
from alscout.runtime.pipeline import FrameScore
from alscout.runtime.temporal import Decision
from alscout.server._proto import alscout_pb2 as pb
from alscout.server.batching import BatchedScore
from alscout.server.config import MetadataLimits
from alscout.server.outbox import FramePayload
from alscout.server.streams import StreamState

__all__ = [
    "check_metadata",
    "decode",
    "declared_size",
    "payload",
    "final_message",
    "frame_result",
    "closing_message",
    "model_info_message",
]

#: the limits a frame's metadata gets when the caller passes none (ServerConfig's defaults)
_DEFAULT_LIMITS = MetadataLimits()
_ENCODINGS = {pb.ENCODING_JPEG: "jpeg", pb.ENCODING_PNG: "png"}
_PIXEL_FORMATS = {
    pb.PIXEL_FORMAT_RGB8: "rgb8",
    pb.PIXEL_FORMAT_BGR8: "bgr8",
    pb.PIXEL_FORMAT_GRAY8: "gray8",
}


def check_metadata(frame: pb.Frame, limits: MetadataLimits) -> dict[str, str]:
    """The frame's metadata as a dict; raises :class:`InvalidInputError` naming the
    server setting (``max_metadata_*``) a key, a value or the whole exceeds (UTF-8 bytes)."""
    metadata = frame.metadata
    where = f"frame {frame.frame_index}"
    advice = "send less metadata per frame, or raise the server's limit"
    if len(metadata) > limits.keys:
        raise InvalidInputError(
            f"{where}: metadata has {len(metadata)} keys, more than max_metadata_keys = "
            f"{limits.keys}; {advice}"
        )
    total = 0
    out = {}
    for key, value in metadata.items():
        key_bytes, value_bytes = len(key.encode("utf-8")), len(value.encode("utf-8"))
        if key_bytes > limits.key_bytes:
            raise InvalidInputError(
                f"{where}: metadata key {key[:32]!r}... is {key_bytes} bytes, more than "
                f"max_metadata_key_bytes = {limits.key_bytes}; {advice}"
            )
        if value_bytes > limits.value_bytes:
            raise InvalidInputError(
                f"{where}: metadata value of {key!r} is {value_bytes} bytes, more than "
                f"max_metadata_value_bytes = {limits.value_bytes}; {advice}"
            )
        total += key_bytes + value_bytes
        out[key] = value
    if total > limits.total_bytes:
        raise InvalidInputError(
            f"{where}: metadata holds {total} bytes of keys and values, more than "
            f"max_metadata_bytes = {limits.total_bytes}; {advice}"
        )
    return out


def decode(
    frame: pb.Frame, max_pixels: int, metadata_limits: MetadataLimits = _DEFAULT_LIMITS
) -> tuple[np.ndarray, str, pb.RawImage, float]:
    """RGB ``[H, W, 3]`` uint8, the format name, the image message, decode milliseconds.

    The frame's metadata is checked against ``metadata_limits`` first (the server passes
    its config's; the defaults otherwise), before any pixel is decoded.
    """
    started = time.perf_counter()
    check_metadata(frame, metadata_limits)
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
        raw = pb.RawImage(data=frame.encoded.data)
    else:
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
        encoding = "raw"
    return image, encoding, raw, 1000.0 * (time.perf_counter() - started)


def declared_size(frame: pb.Frame, max_pixels: int) -> tuple[int, int]:
    """(width, height) a frame decodes to, from its header or raw size, before decoding.

    Raises :class:`InvalidInputError` for a size over ``max_pixels`` or a header that
    cannot be read; (0, 0) for a frame :func:`decode` refuses for another reason (no
    image, unknown encoding or pixel format), so that it says why.
    """
    kind = frame.WhichOneof("image")
    if kind == "encoded":
        encoding = _ENCODINGS.get(frame.encoded.encoding)
        if encoding is None or not frame.encoded.data:
            return 0, 0
        return checked_size(frame.encoded.data, encoding, max_pixels=max_pixels)
    if kind == "raw" and frame.raw.pixel_format in _PIXEL_FORMATS:
        raw = frame.raw
        return checked_size(
            raw.data, "raw", width=raw.width, height=raw.height, max_pixels=max_pixels
        )
    return 0, 0


def payload(
    frame: pb.Frame, score: FrameScore, fmt: str, raw: pb.RawImage, width: int, height: int
) -> FramePayload:
    """What the outbox keeps of a frame: bytes as received, model, heat map, metadata."""
    stamp = frame.capture_timestamp
    return FramePayload(
        image=raw.data,
        image_format=fmt,
        model_version=score.model_version,
        model_hash=score.model_hash,
        capture_time_ns=stamp.seconds * 1_000_000_000 + stamp.nanos,
        width=width,
        height=height,
        pixel_format=_PIXEL_FORMATS.get(raw.pixel_format, "") if fmt == "raw" else "",
        metadata=dict(frame.metadata),
        heatmap=score.heatmap,
    )


def final_message(decision: Decision) -> pb.FinalDecision:
    """The protobuf form of a final decision."""
    return pb.FinalDecision(
        frame_index=decision.frame,
        decision=pb.DECISION_FLAGGED if decision.flagged else pb.DECISION_NOT_FLAGGED,
        reason=str(decision.reason),
        z=decision.z,
        smoothed=decision.smoothed,
        threshold=decision.threshold,
    )


def frame_result(
    frame: pb.Frame,
    batched: BatchedScore,
    decode_ms: float,
    received: float,
    decisions: list[Decision],
    stride: int,
) -> pb.FrameResult:
    """A frame's answer: z, its state, the decisions final now, heat map and timings."""
    score = batched.score
    finals = [final_message(d) for d in decisions]
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
    if score.heatmap is not None and frame.want_heatmap:
        cells = np.asarray(score.heatmap, dtype=np.float32)
        result.heatmap.height, result.heatmap.width = cells.shape
        result.heatmap.data.extend(cells.ravel().tolist())
        result.heatmap.stride = stride
    t = result.timings
    t.decode_ms = decode_ms
    t.infer_ms = score.infer_ms
    t.score_ms = score.score_ms
    t.queue_ms = batched.queue_ms
    t.batch_size = batched.batch_size
    t.total_ms = 1000.0 * (time.perf_counter() - received)
    return result


def closing_message(state: StreamState, decisions: list[Decision]) -> pb.FrameResult:
    """The closing message of a stream: its remaining decisions, end_of_stream set."""
    return pb.FrameResult(
        recording_id=state.recording_id,
        camera_id=state.camera_id,
        final_decisions=[final_message(d) for d in decisions],
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
