"""alscout errors map to gRPC status codes in one place."""

from __future__ import annotations

import grpc
import pytest

from alscout.errors import (
    AlscoutError,
    BackendUnavailableError,
    CapacityError,
    ConfigError,
    DataError,
    DeadlineExceededError,
    InvalidInputError,
    ModelError,
    ShuttingDownError,
    StreamBusyError,
    StreamTakenOverError,
)
from alscout.server.status import status_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInputError("bad frame"), grpc.StatusCode.INVALID_ARGUMENT),
        (DataError("bad file"), grpc.StatusCode.INVALID_ARGUMENT),
        (ConfigError("bad key"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelError("bad model"), grpc.StatusCode.FAILED_PRECONDITION),
        (BackendUnavailableError("no gpu"), grpc.StatusCode.UNAVAILABLE),
        (CapacityError("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (AlscoutError("other"), grpc.StatusCode.INTERNAL),
        (DeadlineExceededError("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ShuttingDownError("stopping"), grpc.StatusCode.UNAVAILABLE),
        (StreamBusyError("open elsewhere"), grpc.StatusCode.ALREADY_EXISTS),
        (StreamTakenOverError("resumed elsewhere"), grpc.StatusCode.ABORTED),
    ],
)
def test_alscout_errors_keep_their_message(error, code):
    assert status_for(error) == (code, str(error))


def test_other_errors_are_internal_without_details():
    code, message = status_for(KeyError("/secret/path"))
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in message and "KeyError" in message


def test_a_huge_message_is_cut_below_grpcs_trailer_limit():
    code, message = status_for(InvalidInputError("metadata key " + "k" * 70_000 + " is too long"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(message.encode()) < 16 * 1024
    assert message.endswith("more characters)")
