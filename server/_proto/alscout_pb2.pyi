import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    ENCODING_JPEG: _ClassVar[Encoding]
    ENCODING_PNG: _ClassVar[Encoding]

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGB8: _ClassVar[PixelFormat]
    PIXEL_FORMAT_BGR8: _ClassVar[PixelFormat]
    PIXEL_FORMAT_GRAY8: _ClassVar[PixelFormat]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_PENDING: _ClassVar[Decision]
    DECISION_FLAGGED: _ClassVar[Decision]
    DECISION_NOT_FLAGGED: _ClassVar[Decision]
ENCODING_UNSPECIFIED: Encoding
ENCODING_JPEG: Encoding
ENCODING_PNG: Encoding
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
PIXEL_FORMAT_RGB8: PixelFormat
PIXEL_FORMAT_BGR8: PixelFormat
PIXEL_FORMAT_GRAY8: PixelFormat
DECISION_UNSPECIFIED: Decision
DECISION_PENDING: Decision
DECISION_FLAGGED: Decision
DECISION_NOT_FLAGGED: Decision

class EncodedImage(_message.Message):
    __slots__ = ("data", "encoding")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    encoding: Encoding
    def __init__(self, data: _Optional[bytes] = ..., encoding: _Optional[_Union[Encoding, str]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("data", "width", "height", "pixel_format")
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    width: int
    height: int
    pixel_format: PixelFormat
    def __init__(self, data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., pixel_format: _Optional[_Union[PixelFormat, str]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("recording_id", "camera_id", "frame_index", "capture_timestamp", "encoded", "raw", "metadata", "want_heatmap", "resume", "resumable", "end_of_stream")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECORDING_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    WANT_HEATMAP_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    RESUMABLE_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    recording_id: str
    camera_id: str
    frame_index: int
    capture_timestamp: _timestamp_pb2.Timestamp
    encoded: EncodedImage
    raw: RawImage
    metadata: _containers.ScalarMap[str, str]
    want_heatmap: bool
    resume: ResumeRequest
    resumable: bool
    end_of_stream: bool
    def __init__(self, recording_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., frame_index: _Optional[int] = ..., capture_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., encoded: _Optional[_Union[EncodedImage, _Mapping]] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., want_heatmap: _Optional[bool] = ..., resume: _Optional[_Union[ResumeRequest, _Mapping]] = ..., resumable: _Optional[bool] = ..., end_of_stream: _Optional[bool] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("last_decided_frame", "resume_token")
    LAST_DECIDED_FRAME_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    last_decided_frame: int
    resume_token: str
    def __init__(self, last_decided_frame: _Optional[int] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ResumeResult(_message.Message):
    __slots__ = ("found", "last_received_frame")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    LAST_RECEIVED_FRAME_FIELD_NUMBER: _ClassVar[int]
    found: bool
    last_received_frame: int
    def __init__(self, found: _Optional[bool] = ..., last_received_frame: _Optional[int] = ...) -> None: ...

class FinalDecision(_message.Message):
    __slots__ = ("frame_index", "decision", "reason", "z", "smoothed", "threshold")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    SMOOTHED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    decision: Decision
    reason: str
    z: float
    smoothed: float
    threshold: float
    def __init__(self, frame_index: _Optional[int] = ..., decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[str] = ..., z: _Optional[float] = ..., smoothed: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "infer_ms", "score_ms", "total_ms", "queue_ms", "batch_size")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    INFER_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    infer_ms: float
    score_ms: float
    total_ms: float
    queue_ms: float
    batch_size: int
    def __init__(self, decode_ms: _Optional[float] = ..., infer_ms: _Optional[float] = ..., score_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class HeatMap(_message.Message):
    __slots__ = ("width", "height", "data", "stride")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    data: _containers.RepeatedScalarFieldContainer[float]
    stride: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[_Iterable[float]] = ..., stride: _Optional[int] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("recording_id", "camera_id", "frame_index", "z", "smoothed", "decision", "reason", "model_version", "model_hash", "timings", "heatmap", "final_decisions", "end_of_stream", "resume", "resume_token")
    RECORDING_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    SMOOTHED_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    FINAL_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    recording_id: str
    camera_id: str
    frame_index: int
    z: float
    smoothed: float
    decision: Decision
    reason: str
    model_version: str
    model_hash: str
    timings: Timings
    heatmap: HeatMap
    final_decisions: _containers.RepeatedCompositeFieldContainer[FinalDecision]
    end_of_stream: bool
    resume: ResumeResult
    resume_token: str
    def __init__(self, recording_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., frame_index: _Optional[int] = ..., z: _Optional[float] = ..., smoothed: _Optional[float] = ..., decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[str] = ..., model_version: _Optional[str] = ..., model_hash: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., heatmap: _Optional[_Union[HeatMap, _Mapping]] = ..., final_decisions: _Optional[_Iterable[_Union[FinalDecision, _Mapping]]] = ..., end_of_stream: _Optional[bool] = ..., resume: _Optional[_Union[ResumeResult, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BoxSize(_message.Message):
    __slots__ = ("height", "width")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    height: float
    width: float
    def __init__(self, height: _Optional[float] = ..., width: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "model_hash", "num_heads", "default_boxes", "input_height", "input_width", "training_data_digest", "backend", "file_format", "scoring_path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BOXES_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DATA_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FILE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SCORING_PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    model_hash: str
    num_heads: int
    default_boxes: _containers.RepeatedCompositeFieldContainer[BoxSize]
    input_height: int
    input_width: int
    training_data_digest: str
    backend: str
    file_format: str
    scoring_path: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., model_hash: _Optional[str] = ..., num_heads: _Optional[int] = ..., default_boxes: _Optional[_Iterable[_Union[BoxSize, _Mapping]]] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., training_data_digest: _Optional[str] = ..., backend: _Optional[str] = ..., file_format: _Optional[str] = ..., scoring_path: _Optional[str] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("model_file",)
    MODEL_FILE_FIELD_NUMBER: _ClassVar[int]
    model_file: str
    def __init__(self, model_file: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("previous", "current")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    previous: ModelInfo
    current: ModelInfo
    def __init__(self, previous: _Optional[_Union[ModelInfo, _Mapping]] = ..., current: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...
