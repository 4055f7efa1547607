"""Requests that are the client's fault end INVALID_ARGUMENT, logged as a warning at most.

Undecodable bytes (bad UTF-8 in a string field, corrupt protobuf) are sent through a
channel's generic ``unary_unary`` / ``stream_stream`` with identity serializers, as an
attacker with its own stubs would; resume requests with impossible frame indices go
through the generated stub.
"""

from __future__ import annotations

import logging

import grpc
import pytest
from server_harness import jpeg_frame, video_frames

from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc

#: a Frame whose recording_id (field 1, a string) holds bytes that are not UTF-8
BAD_UTF8 = b"\x0a\x02\xff\xfe" + pb.Frame(frame_index=1).SerializeToString()
#: a field with wire type 7, which does not exist
CORRUPT = b"\xff\xff\xff\xff"


def _identity(data: bytes) -> bytes:
    return data


def _counts(scoring) -> tuple[float, float]:
    value = scoring.metrics.value
    return (
        value("alscout_errors_total", code="INVALID_ARGUMENT"),
        value("alscout_errors_total", code="INTERNAL"),
    )


@pytest.mark.parametrize("data", [BAD_UTF8, CORRUPT], ids=["bad-utf8", "corrupt"])
@pytest.mark.parametrize("rpc", ["Score", "ScoreStream"])
def test_an_undecodable_request_is_invalid_argument_with_one_warning(served, caplog, rpc, data):
    port, _, scoring = served
    before = _counts(scoring)
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = f"/alscout.v1.Scorer/{rpc}"
        with pytest.raises(grpc.RpcError) as caught:
            if rpc == "Score":
                channel.unary_unary(method, _identity, _identity)(data, timeout=10)
            else:
                list(channel.stream_stream(method, _identity, _identity)(iter([data]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be parsed" in caught.value.details()
    invalid, internal = _counts(scoring)
    assert (invalid - before[0], internal - before[1]) == (1, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and not warnings[0].exc_info
    assert rpc in warnings[0].getMessage()


def test_a_good_request_after_a_bad_one_is_served(served):
    with grpc.insecure_channel(f"127.0.0.1:{served[0]}") as channel:
        with pytest.raises(grpc.RpcError):
            channel.unary_unary("/alscout.v1.Scorer/Score", _identity, _identity)(CORRUPT)
        stub = alscout_pb2_grpc.ScorerStub(channel)
        assert stub.Score(jpeg_frame(video_frames(1)[0], 0), timeout=10).z > 0


@pytest.mark.parametrize("last_decided", [-2, -(2**63)])
def test_a_resume_after_an_impossible_frame_is_invalid_argument(served, stub, last_decided):
    frames = [jpeg_frame(d, i, "faults", resumable=True) for i, d in enumerate(video_frames(3))]
    list(stub.ScoreStream(iter(frames)))  # resumable, so kept after the half-close
    resume = pb.Frame(
        recording_id="faults",
        camera_id="front",
        resume=pb.ResumeRequest(last_decided_frame=last_decided),
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ScoreStream(iter([resume])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "last_decided_frame" in caught.value.details()
    assert "-1" in caught.value.details()
