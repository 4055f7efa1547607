"""Who may feed, resume and end a stream: the resume token, streams ended in a call, and
streams freed before an error status reaches the client (issue #13: D11a, D5, D9)."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from server_harness import Feeder, jpeg_frame, make_config, split, video_frames

from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.outbox import MemoryOutbox


def wait_for(feeder: Feeder, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(feeder.results) < n:
        assert feeder.error is None, feeder.error
        assert time.monotonic() < deadline, "the server did not answer in time"
        time.sleep(0.005)


def resume_frame(rec: str, **resume) -> pb.Frame:
    return pb.Frame(recording_id=rec, camera_id="front", resume=pb.ResumeRequest(**resume))


def end_frame(rec: str) -> pb.Frame:
    return pb.Frame(recording_id=rec, camera_id="front", end_of_stream=True)


def test_every_result_of_a_stream_carries_its_own_resume_token(stub):
    frames = [jpeg_frame(d, i, "tok1") for i, d in enumerate(video_frames(6, seed=70))]
    frames += [jpeg_frame(d, i, "tok1", "rear") for i, d in enumerate(video_frames(6, seed=71))]
    results = list(stub.ScoreStream(iter(frames)))
    tokens: dict[str, set[str]] = {}
    for r in results:
        tokens.setdefault(r.camera_id, set()).add(r.resume_token)
    assert set(tokens) == {"front", "rear"}
    assert all(len(t) == 1 for t in tokens.values())  # the same token all the stream long
    front, rear = tokens["front"].pop(), tokens["rear"].pop()
    assert len(front) >= 16 and front != rear


def test_a_resume_without_the_streams_token_is_refused_and_the_owner_carries_on(
    served, stub, caplog
):
    _, _, scoring = served
    rec = "owned"
    data = video_frames(12, seed=72)
    frames = [jpeg_frame(d, i, rec, resumable=True) for i, d in enumerate(data)]
    with grpc.insecure_channel(f"127.0.0.1:{served[0]}") as channel:
        owner = Feeder(alscout_pb2_grpc.ScorerStub(channel), [*frames, end_frame(rec)])
        owner.send(6)
        wait_for(owner, 6)
        token = owner.results[0].resume_token
        refused = 0
        caplog.set_level(logging.WARNING, logger="alscout.server.service")
        for bad in (
            resume_frame(rec, last_decided_frame=-1),  # an old client, or a guess
            resume_frame(rec, last_decided_frame=-1, resume_token="A" * len(token)),
            resume_frame(rec, last_decided_frame=-1, resume_token=token[:-1]),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.ScoreStream(iter([bad]), timeout=10))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "resume_token" in caught.value.details()
            refused += 1
        assert scoring.service.streams.get(rec, "front").owner is not None
        owner.send(7, 6)  # the rest and the end_of_stream message
        owner.finish()
    assert refused == 3
    lines = [r.getMessage() for r in caplog.records if "call refused" in r.getMessage()]
    assert len(lines) == 1  # at most one line per peer address per 10 s
    assert "code=PERMISSION_DENIED" in lines[0] and "peer=ipv4:127.0.0.1:" in lines[0]
    assert owner.error is None, owner.error  # the owner's call was never taken over
    own, closing, finals, _ = split(owner.results)
    assert len(own) == 12 and len(closing) == 1
    assert sorted(k[2] for k in finals) == list(range(12)) and set(finals.values()) == {1}


def test_the_owner_resumes_with_its_token(served, stub):
    rec = "owned2"
    data = video_frames(10, seed=73)
    frames = [jpeg_frame(d, i, rec, resumable=True) for i, d in enumerate(data)]
    with grpc.insecure_channel(f"127.0.0.1:{served[0]}") as channel:
        first = Feeder(alscout_pb2_grpc.ScorerStub(channel), frames)
        first.send(6)
        wait_for(first, 6)
        token = first.results[-1].resume_token
        first.finish()  # a half-close without end_of_stream: a cut, kept for resuming
    decided = max((d.frame_index for r in first.results for d in r.final_decisions), default=-1)
    again = [resume_frame(rec, last_decided_frame=decided, resume_token=token)]
    results = list(stub.ScoreStream(iter([*again, *frames[6:], end_frame(rec)]), timeout=30))
    answer = results[0]
    assert answer.resume.found and answer.resume.last_received_frame == 5
    assert answer.resume_token == token
    assert results[-1].end_of_stream
    _, _, finals, _ = split(first.results + results)
    assert sorted(k[2] for k in finals) == list(range(10)) and set(finals.values()) == {1}


def test_a_frame_after_end_of_stream_in_the_same_call_is_invalid(stub):
    rec = "ended"
    data = video_frames(5, seed=74)
    frames = [jpeg_frame(d, i, rec, resumable=True) for i, d in enumerate(data[:4])]
    frames += [end_frame(rec), jpeg_frame(data[4], 4, rec, resumable=True)]
    results = []
    with pytest.raises(grpc.RpcError) as caught:
        for result in stub.ScoreStream(iter(frames), timeout=30):
            results.append(result)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"stream {rec}/front was ended in this call" in caught.value.details()
    own, closing, finals, _ = split(results)
    assert len(own) == 4 and len(closing) == 1 and len(finals) == 4


class _SlowOutbox(MemoryOutbox):
    """Takes 0.5 s to store a flagged frame: closing a stream takes that long."""

    def put(self, frame) -> None:
        time.sleep(0.5)
        super().put(frame)


@pytest.fixture(scope="module")
def slow_outbox_server(harness, tiny_model):
    outbox = _SlowOutbox()
    scoring, port = harness.start(make_config(tiny_model, resume_window_s=0.3), outbox)
    yield port, outbox
    harness.stop(scoring)


def test_a_stream_is_freed_before_its_calls_error_status_is_sent(slow_outbox_server):
    port, outbox = slow_outbox_server
    rec = "freed"
    data = video_frames(5, seed=75)
    # five frames, all pending (dt + dt1 = 5); the sixth is broken and ends the call
    frames = [jpeg_frame(d, i, rec) for i, d in enumerate(data)]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ScoreStream(iter([*frames, jpeg_frame(b"no jpeg", 5, rec)]), timeout=30))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stored = outbox.frames  # the stream was closed (its flags stored) before the status
        # at once, the same ids in a fresh call: the stream is free already
        results = list(stub.ScoreStream(iter(frames), timeout=30))
    assert results[-1].end_of_stream
    assert stored and {f.recording_id for f in stored} == {rec}
