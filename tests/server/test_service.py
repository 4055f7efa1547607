"""The Scorer service over a real channel: decisions, concurrency, bad input, model calls."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest
from server_harness import (
    SELECTOR,
    Feeder,
    jpeg_frame,
    load_asset,
    make_config,
    split,
    video_frames,
)

from alscout.runtime.temporal import flag_recording
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc


def offline(z: list[float], frames: list[int] | None = None):
    c = SELECTOR
    return flag_recording(z, c.dt, c.sigma, c.dt1, c.dt2, c.threshold, frames=frames)


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
