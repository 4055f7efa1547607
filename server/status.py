"""The one place where alscout errors become gRPC status codes."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from alscout.errors import (
    AlscoutError,
    BackendUnavailableError,
    CapacityError,
    ConfigError,
    DataError,
    DeadlineExceededError,
    InvalidInputError,
    ModelError,
    ResumeDeniedError,
    ShuttingDownError,
    StreamBusyError,
    StreamTakenOverError,
)

__all__ = ["STATUS_CODES", "status_for", "abort_with"]

log = logging.getLogger(__name__)

#: error class -> status code; the most specific class that matches wins (MRO order).
STATUS_CODES: dict[type[BaseException], grpc.StatusCode] = {
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    StreamBusyError: grpc.StatusCode.ALREADY_EXISTS,
    StreamTakenOverError: grpc.StatusCode.ABORTED,
    ResumeDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    DataError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelError: grpc.StatusCode.FAILED_PRECONDITION,
    BackendUnavailableError: grpc.StatusCode.UNAVAILABLE,
    CapacityError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    AlscoutError: grpc.StatusCode.INTERNAL,
}


#: longest status message sent: gRPC refuses trailers over 16 KiB (the client would see
#: RESOURCE_EXHAUSTED instead of the real code), and messages may quote client input
MAX_MESSAGE_CHARS = 2000


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """(status code, message) for ``error``; anything not an alscout error is INTERNAL.

    Errors alscout does not raise on purpose carry no detail to the client (they may
    hold paths or internals); the server log has the traceback. Messages are cut to
    :data:`MAX_MESSAGE_CHARS`.
    """
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            message = str(error)
            if len(message) > MAX_MESSAGE_CHARS:
                cut = len(message) - MAX_MESSAGE_CHARS
                message = f"{message[:MAX_MESSAGE_CHARS]}... ({cut} more characters)"
            return code, message
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see server log"


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException) -> NoReturn:
    """End the call with the status of ``error``; logs unexpected errors with traceback."""
    code, message = status_for(error)
    if code is grpc.StatusCode.INTERNAL:
        log.error("call failed: %s", message, exc_info=error)
    else:
        log.info("call refused code=%s message=%s", code.name, message)
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover  # abort always raises
