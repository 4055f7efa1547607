"""The Scorer service over a real channel: decisions, concurrency, bad input, model calls."""

from __future__ import annotations

import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from server_harness import (
    SELECTOR,
    Feeder,
    jpeg_frame,
    make_config,
    split,
    video_frames,
)
from shared_inputs import load_asset

from alscout.errors import OutboxFullError
from alscout.runtime.temporal import flag_recording
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.outbox import MemoryOutbox


def offline(z: list[float], frames: list[int] | None = None):
    return flag_recording(z, SELECTOR, frames=frames)


def test_streamed_decisions_equal_the_offline_rule(stub, served):
    _, outbox, _ = served
    data = video_frames(40)
    indices = [i * 2 for i in range(40)]  # gaps are allowed
    results = list(
        stub.ScoreStream(iter(jpeg_frame(d, i) for d, i in zip(data, indices, strict=True)))
    )
    own, closing, finals, by_key = split(results)
    assert [r.frame_index for r in own] == indices
    assert len(closing) == 1 and closing[0].recording_id == "rec1"
    assert all(r.decision == pb.DECISION_PENDING for r in own)  # latency dt + dt1 > 0
    # every frame gets exactly one final decision
    assert set(finals) == {("rec1", "front", i) for i in indices}
    assert set(finals.values()) == {1}
    z = [r.z for r in own]
    assert len({round(v, 6) for v in z}) > 10
    expected = offline(z, indices)
    got = [by_key[("rec1", "front", i)] for i in indices]
    assert [d.decision == pb.DECISION_FLAGGED for d in got] == [e.flagged for e in expected]
    assert [d.reason for d in got] == [str(e.reason) for e in expected]
    np.testing.assert_allclose([d.smoothed for d in got], [e.smoothed for e in expected])
    flagged = [e.frame for e in expected if e.flagged]
    assert flagged, "the test stream should flag something"
    # a decision for frame t arrives with the first frame >= t + dt + dt1
    latency = SELECTOR.dt + SELECTOR.dt1
    for r in own:
        assert all(d.frame_index + latency <= r.frame_index for d in r.final_decisions)
    stored = [f for f in outbox.frames if f.recording_id == "rec1"]
    assert [f.frame_index for f in stored] == flagged
    assert all(f.image == data[indices.index(f.frame_index)] for f in stored)
    assert all(r.model_version == "test-1" and len(r.model_hash) == 64 for r in own)


def test_unary_score_equals_streamed_z_and_sends_a_heatmap(stub):
    data = video_frames(3, seed=4)
    streamed = [
        r
        for r in stub.ScoreStream(iter(jpeg_frame(d, i, "rec2") for i, d in enumerate(data)))
        if not r.end_of_stream
    ]
    for i, d in enumerate(data):
        result = stub.Score(jpeg_frame(d, i, "rec2", want_heatmap=True))
        assert result.decision == pb.DECISION_UNSPECIFIED
        assert result.z == pytest.approx(streamed[i].z, rel=1e-6)
        heat = result.heatmap
        assert (heat.height, heat.width, heat.stride) == (6, 8, 16)  # 96x128 / 16
        assert len(heat.data) == 48 and max(heat.data) > 0
        assert not streamed[i].HasField("heatmap")


def test_one_call_multiplexes_cameras_independently(stub):
    a, b = video_frames(12, seed=1), video_frames(12, seed=2)
    frames = []
    for i in range(12):
        frames += [jpeg_frame(a[i], i, "rec3", "left"), jpeg_frame(b[i], i, "rec3", "right")]
    results = list(stub.ScoreStream(iter(frames)))
    own, closing, finals, by_key = split(results)
    assert len(closing) == 2 and set(finals.values()) == {1} and len(finals) == 24
    for cam in ("left", "right"):
        z = [r.z for r in own if r.camera_id == cam]
        expected = offline(z)
        assert [by_key[("rec3", cam, i)].reason for i in range(12)] == [
            str(e.reason) for e in expected
        ]


def test_concurrent_streams_do_not_disturb_each_other(served):
    data = {"recA": video_frames(20, seed=5), "recB": video_frames(20, seed=6)}
    target = f"127.0.0.1:{served[0]}"
    with grpc.insecure_channel(target) as c1, grpc.insecure_channel(target) as c2:
        feeders = {
            "recA": Feeder(alscout_pb2_grpc.ScorerStub(c1),
                           [jpeg_frame(d, i, "recA") for i, d in enumerate(data["recA"])]),
            "recB": Feeder(alscout_pb2_grpc.ScorerStub(c2),
                           [jpeg_frame(d, i, "recB") for i, d in enumerate(data["recB"])]),
        }  # fmt: skip
        for start in range(0, 20, 5):  # interleave the two calls
            for feeder in feeders.values():
                feeder.send(5, start)
        for feeder in feeders.values():
            feeder.finish()
    for rec, feeder in feeders.items():
        assert feeder.error is None
        own, _, finals, by_key = split(feeder.results)
        assert set(finals.values()) == {1} and len(finals) == 20
        assert {r.recording_id for r in feeder.results} == {rec}
        expected = offline([r.z for r in own])
        assert [by_key[(rec, "front", i)].reason for i in range(20)] == [
            str(e.reason) for e in expected
        ]


def _bad_cases():
    good = video_frames(1, seed=9)[0]
    big_header = bytearray(good)
    pos = big_header.index(b"\xff\xc0")  # baseline start-of-frame: height, width follow
    big_header[pos + 5 : pos + 9] = (20000).to_bytes(2, "big") + (20000).to_bytes(2, "big")
    raw = dict(width=128, height=96, pixel_format=pb.PIXEL_FORMAT_RGB8)
    return {
        "corrupt jpeg": ([jpeg_frame(good[: len(good) // 3] + b"\x00" * 50, 0)], "jpeg"),
        "not a jpeg": ([jpeg_frame(b"hello world", 0)], "jpeg"),
        "wrong dimensions": (
            [pb.Frame(recording_id="r", camera_id="c",
                      raw=pb.RawImage(data=b"\x00" * 100, **raw))],
            "size mismatch",
        ),
        "unknown pixel format": (
            [pb.Frame(recording_id="r", camera_id="c",
                      raw=pb.RawImage(data=b"\x00" * 36864, width=128, height=96,
                                      pixel_format=42))],
            "pixel format",
        ),
        "oversized": (
            [pb.Frame(recording_id="r", camera_id="c",
                      raw=pb.RawImage(data=b"\x00" * 3, width=1000, height=1000,
                                      pixel_format=pb.PIXEL_FORMAT_RGB8))],
            "too large",
        ),
        "oversized jpeg header": ([jpeg_frame(bytes(big_header), 0)], "too large"),
        "no image": ([pb.Frame(recording_id="r", camera_id="c")], "no image"),
        "index backwards": ([jpeg_frame(good, 5), jpeg_frame(good, 3)], "strictly increase"),
        "index repeated": ([jpeg_frame(good, 5), jpeg_frame(good, 5)], "strictly increase"),
        "slash in id": ([jpeg_frame(good, 0, recording="a/b")], "recording_id"),
        "dot-dot in id": ([jpeg_frame(good, 0, camera="..")], "camera_id"),
        "empty id": ([jpeg_frame(good, 0, recording="")], "recording_id"),
    }  # fmt: skip


BAD = _bad_cases()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_ends_that_call_only(served, stub, case):
    frames, words = BAD[case]
    data = video_frames(10, seed=11)
    with grpc.insecure_channel(f"127.0.0.1:{served[0]}") as channel:
        good = Feeder(alscout_pb2_grpc.ScorerStub(channel),
                      [jpeg_frame(d, i, "good") for i, d in enumerate(data)])  # fmt: skip
        good.send(5)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ScoreStream(iter(frames)))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in caught.value.details()
        if len(frames) == 1:  # the unary call refuses it the same way
            with pytest.raises(grpc.RpcError) as unary:
                stub.Score(frames[0])
            assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        good.send(5, 5)
        good.finish()
    assert good.error is None
    _, closing, finals, _ = split(good.results)
    assert len(closing) == 1 and len(finals) == 10 and set(finals.values()) == {1}


def test_model_info_and_reload(harness, tiny_model, tmp_path):
    model = tmp_path / "tiny.onnx"
    shutil.copy(tiny_model, model)
    asset = load_asset("tiny_detector")
    asset.write(tmp_path / "tiny2.onnx", asset.INFO.__class__(
        **{**asset.INFO.__dict__, "version": "test-2"}))  # fmt: skip
    scoring, port = harness.start(make_config(model))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alscout_pb2_grpc.ScorerStub(channel)
            info = stub.GetModelInfo(pb.GetModelInfoRequest())
            assert (info.name, info.version, info.num_heads) == ("tiny-detector", "test-1", 5)
            assert (info.input_height, info.input_width) == (96, 128)
            assert info.backend == "onnxruntime-cpu" and len(info.default_boxes) == 5
            frame = jpeg_frame(video_frames(1)[0], 0)
            assert stub.Score(frame).model_version == "test-1"
            reply = stub.ReloadModel(pb.ReloadModelRequest(model_file="tiny2.onnx"))
            assert (reply.previous.version, reply.current.version) == ("test-1", "test-2")
            assert stub.Score(frame).model_version == "test-2"
            for bad in ("../tiny.onnx", "missing.onnx", "/etc/passwd"):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.ReloadModel(pb.ReloadModelRequest(model_file=bad))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            (tmp_path / "broken.onnx").write_bytes(b"not a model")
            with pytest.raises(grpc.RpcError) as caught:
                stub.ReloadModel(pb.ReloadModelRequest(model_file="broken.onnx"))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert stub.GetModelInfo(pb.GetModelInfoRequest()).version == "test-2"
            assert stub.ReloadModel(pb.ReloadModelRequest()).current.version == "test-1"
    finally:
        harness.stop(scoring)


# -- batching, backpressure, deadlines, reload, idle, context ------------------------


def lockstep(stub, frames):
    """Send a frame, wait for its result, send the next: a well-behaved client."""
    feeder = Feeder(stub, frames)
    for i in range(len(frames)):
        feeder.send(1, i)
        deadline = time.monotonic() + 30
        while len([r for r in feeder.results if not r.end_of_stream]) <= i:
            assert feeder.error is None, feeder.error
            assert time.monotonic() < deadline
            time.sleep(0.005)
    feeder.finish()
    return feeder


@pytest.fixture(scope="module")
def slow(harness, tiny_model):
    """A server whose batches wait 300 ms for company and whose calls hold 2 frames."""
    outbox = MemoryOutbox()
    config = make_config(
        tiny_model, max_batch=16, max_delay_ms=300, max_inflight=2, queue_wait_ms=20,
        resume_window_s=0.0,
    )  # fmt: skip
    scoring, port = harness.start(config, outbox)
    yield port, outbox, scoring
    harness.stop(scoring)


def test_a_client_that_outruns_its_limit_is_refused_while_others_carry_on(slow):
    port, _, scoring = slow
    metrics = scoring.metrics
    data = video_frames(30, seed=21)
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as c1, grpc.insecure_channel(target) as c2:
        polite = threading.Thread(
            target=lambda: results.append(lockstep(
                alscout_pb2_grpc.ScorerStub(c2),
                [jpeg_frame(d, i, "polite") for i, d in enumerate(data[:5])])),
        )  # fmt: skip
        results: list = []
        polite.start()
        with pytest.raises(grpc.RpcError) as caught:
            list(alscout_pb2_grpc.ScorerStub(c1).ScoreStream(
                iter(jpeg_frame(d, i, "greedy") for i, d in enumerate(data))))  # fmt: skip
        polite.join(60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "faster than the server scores" in caught.value.details()
    assert metrics.value("alscout_frames_rejected_total", reason="backpressure") >= 1
    assert metrics.value("alscout_errors_total", code="RESOURCE_EXHAUSTED") >= 1
    (feeder,) = results
    assert feeder.error is None
    _, closing, finals, _ = split(feeder.results)
    assert len(closing) == 1 and len(finals) == 5 and set(finals.values()) == {1}


def test_frames_past_their_deadline_are_not_scored(slow):
    port, _, scoring = slow
    batches = len(scoring.service.batcher.batch_sizes)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Score(jpeg_frame(video_frames(1)[0], 0), timeout=0.1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)  # past the batch's 300 ms wait: the frame was dropped, not scored
        assert len(scoring.service.batcher.batch_sizes) == batches
        assert stub.Score(jpeg_frame(video_frames(1)[0], 0), timeout=10).z > 0


@pytest.fixture(scope="module")
def batching(harness, tiny_model):
    """Batches of up to 8 frames formed within 100 ms; 2 context frames; short idle."""
    outbox = MemoryOutbox()
    config = make_config(
        tiny_model, max_batch=8, max_delay_ms=100, context_frames=2, idle_timeout_s=1.0,
        resume_window_s=0.0,
    )  # fmt: skip
    scoring, port = harness.start(config, outbox)
    yield port, outbox, scoring
    harness.stop(scoring)


def test_concurrent_streams_share_inference_batches_without_changing_scores(batching):
    port, outbox, scoring = batching
    data = {rec: video_frames(16, seed=30 + n) for n, rec in enumerate(("b1", "b2", "b3"))}
    target = f"127.0.0.1:{port}"
    channels = [grpc.insecure_channel(target) for _ in data]
    try:
        feeders = {
            rec: Feeder(alscout_pb2_grpc.ScorerStub(ch),
                        [jpeg_frame(d, i, rec) for i, d in enumerate(frames)])
            for ch, (rec, frames) in zip(channels, data.items(), strict=True)
        }  # fmt: skip
        for feeder in feeders.values():
            feeder.send(16)
        for feeder in feeders.values():
            feeder.finish()
        stub = alscout_pb2_grpc.ScorerStub(channels[0])
        alone = [stub.Score(jpeg_frame(d, i, "b1")).z for i, d in enumerate(data["b1"][:4])]
    finally:
        for ch in channels:
            ch.close()
    sizes = [
        r.timings.batch_size for f in feeders.values() for r in f.results if r.timings.batch_size
    ]
    assert max(sizes) > 1  # frames were scored together
    assert max(scoring.service.batcher.batch_sizes) <= 8
    for rec, feeder in feeders.items():
        assert feeder.error is None
        own, closing, finals, by_key = split(feeder.results)
        assert len(closing) == 1 and len(finals) == 16 and set(finals.values()) == {1}
        expected = offline([r.z for r in own])
        got = [by_key[(rec, "front", i)] for i in range(16)]
        assert [d.reason for d in got] == [str(e.reason) for e in expected]
    b1 = [r.z for r in feeders["b1"].results if not r.end_of_stream][:4]
    np.testing.assert_allclose(b1, alone, rtol=1e-6)  # a batch does not change a score
    # flagged frames carry their heat map and two frames of context on each side
    stored = [f for f in outbox.frames if f.recording_id in data]
    assert stored
    for f in stored:
        assert f.heatmap is not None and f.heatmap.shape == (6, 8)
        t = f.frame_index
        want = [i for i in (t - 2, t - 1, t + 1, t + 2) if 0 <= i < 16]
        assert [c.frame_index for c in f.context] == want
        assert all(c.image == data[f.recording_id][c.frame_index] for c in f.context)


def test_an_idle_call_is_closed_with_its_decisions(batching):
    port, _, scoring = batching
    before = scoring.metrics.value("alscout_streams_freed_total", reason="idle")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        frames = [jpeg_frame(d, i, "idle") for i, d in enumerate(video_frames(5))]
        feeder = Feeder(alscout_pb2_grpc.ScorerStub(channel), frames)
        feeder.send(5)  # then nothing more: the call goes idle
        feeder.thread.join(30)
        assert not feeder.thread.is_alive()
        feeder.finish()
    assert feeder.error is not None
    assert feeder.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no frame for" in feeder.error.details()
    _, closing, finals, _ = split(feeder.results)
    assert len(closing) == 1 and len(finals) == 5 and set(finals.values()) == {1}
    assert scoring.metrics.value("alscout_streams_freed_total", reason="idle") == before + 1
    assert scoring.service.streams.get("idle", "front") is None


def test_reload_under_load_drops_no_frame_and_names_the_model(harness, tiny_model, tmp_path):
    model = tmp_path / "tiny.onnx"
    shutil.copy(tiny_model, model)
    asset = load_asset("tiny_detector")
    asset.write(tmp_path / "tiny2.onnx", asset.INFO.__class__(
        **{**asset.INFO.__dict__, "version": "test-2"}))  # fmt: skip
    scoring, port = harness.start(make_config(model, max_delay_ms=20))
    data = video_frames(60, seed=40)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alscout_pb2_grpc.ScorerStub(channel)
            hashes = {}
            feeder = Feeder(stub, [jpeg_frame(d, i, "reload") for i, d in enumerate(data)])
            for k in range(6):
                feeder.send(10, 10 * k)
                deadline = time.monotonic() + 30
                while len(feeder.results) < 10 * k + 3:  # the rest are in flight
                    assert time.monotonic() < deadline and feeder.error is None
                    time.sleep(0.002)
                reply = stub.ReloadModel(pb.ReloadModelRequest(
                    model_file="tiny2.onnx" if k % 2 == 0 else ""))  # fmt: skip
                hashes[reply.current.version] = reply.current.model_hash
                hashes[reply.previous.version] = reply.previous.model_hash
            feeder.finish()
    finally:
        harness.stop(scoring)
    assert feeder.error is None
    own, closing, finals, _ = split(feeder.results)
    assert [r.frame_index for r in own] == list(range(60))  # no frame dropped
    assert len(closing) == 1 and len(finals) == 60 and set(finals.values()) == {1}
    versions = {r.model_version for r in own}
    assert versions == {"test-1", "test-2"}
    assert all(r.model_hash == hashes[r.model_version] for r in own)
    assert scoring.metrics.value("alscout_model_reloads_total") == 6


class _QuotaOutbox(MemoryOutbox):
    """A memory outbox whose quota refuses every second frame offered."""

    def __init__(self) -> None:
        super().__init__()
        self.offered = 0

    def put(self, frame) -> None:
        self.offered += 1
        if self.offered % 2 == 0:
            raise OutboxFullError("quota held by frames that score higher")
        super().put(frame)


def test_a_full_outbox_answers_that_frame_not_flagged_and_the_stream_carries_on(
    harness, tiny_model
):
    outbox = _QuotaOutbox()
    scoring, port = harness.start(make_config(tiny_model, max_pixels=500_000), outbox)
    try:
        data = video_frames(60, seed=3)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alscout_pb2_grpc.ScorerStub(channel)
            results = list(stub.ScoreStream(iter(jpeg_frame(d, i) for i, d in enumerate(data))))
    finally:
        harness.stop(scoring)
    own, _, finals, by_key = split(results)
    assert len(own) == 60 and set(finals.values()) == {1}
    expected = [e.frame for e in offline([r.z for r in own]) if e.flagged]
    assert len(expected) >= 2, "the test stream should flag at least two frames"
    reported = [f for (_, _, f), d in by_key.items() if d.decision == pb.DECISION_FLAGGED]
    refused = [f for (_, _, f), d in by_key.items() if d.reason == "outbox_full"]
    assert sorted(reported + refused) == expected
    assert refused == expected[1::2]
    assert all(by_key[("rec1", "front", f)].decision == pb.DECISION_NOT_FLAGGED for f in refused)
    # FLAGGED was answered for exactly the frames the outbox kept
    assert sorted(f.frame_index for f in outbox.frames) == sorted(reported)
