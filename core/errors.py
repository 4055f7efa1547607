"""One error hierarchy for the whole product.

The server maps these classes to gRPC status codes in one place
(``alscout.server.status``); the CLI turns them into one-line messages.
Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AlscoutError",
    "InvalidInputError",
    "DataError",
    "ModelError",
    "ConfigError",
    "BackendUnavailableError",
    "CapacityError",
    "OutboxFullError",
    "DeadlineExceededError",
    "ShuttingDownError",
    "StreamBusyError",
    "StreamTakenOverError",
    "ResumeDeniedError",
    "SinkError",
    "SinkUnavailableError",
    "ServiceUnavailableError",
]


class AlscoutError(Exception):
    """Base class of every error alscout raises on purpose."""


class InvalidInputError(AlscoutError, ValueError):
    """An argument or a frame is malformed: wrong rank, NaN, out of range, ..."""


class DataError(AlscoutError, ValueError):
    """A dataset or annotation file is missing, unreadable or inconsistent."""


class ModelError(AlscoutError):
    """A model file is corrupt or does not follow the model contract (SPEC §4)."""


class ConfigError(AlscoutError, ValueError):
    """A configuration value is missing or out of range."""


class BackendUnavailableError(AlscoutError):
    """An inference backend's packages or hardware are not present on this machine."""


class CapacityError(AlscoutError):
    """A queue, quota or budget is full; the caller may retry later."""


class OutboxFullError(CapacityError):
    """The outbox quota is taken by frames that score higher than the one offered."""


class DeadlineExceededError(CapacityError):
    """A frame's deadline passed before it could be scored (gRPC DEADLINE_EXCEEDED)."""


class ShuttingDownError(CapacityError):
    """The server is draining; no new frames are taken (gRPC UNAVAILABLE)."""


class StreamBusyError(InvalidInputError):
    """The stream is attached to another live call (gRPC ALREADY_EXISTS)."""


class StreamTakenOverError(CapacityError):
    """A resuming call took the stream over from this one (gRPC ABORTED)."""


class ResumeDeniedError(InvalidInputError):
    """A resume without the stream's resume token: only the stream's owner may resume it
    (gRPC PERMISSION_DENIED)."""


class SinkError(AlscoutError):
    """An upload failed or was not confirmed; the uploader retries it later."""


class SinkUnavailableError(SinkError):
    """A whole sink cannot be read (missing bucket, bad credentials, a store that keeps
    failing): ends a fleet ingest with nothing written; the message names the sink."""


class ServiceUnavailableError(AlscoutError):
    """The scoring server could not be reached or refused the call."""
