"""The service with a model that computes its scores in the graph.

The same detector served both ways (plain + Numba scoring, and scores in the graph)
must give a PETS09 stream the same final decisions; GetModelInfo, ReloadModel and the
metrics say which path is in use; a model exported with other settings than the
server's is refused at start-up and on reload.
"""

from __future__ import annotations

import shutil

import cv2
import grpc
import numpy as np
import pytest
from server_harness import PIPELINE, jpeg_frame, make_config, split

from alscout.errors import ModelError
from alscout.export.onnx import OnnxFromPath, SaveOnnx
from alscout.export.onnx_scores import ScoredOnnxFromOnnx
from alscout.runtime.model_info import GraphScoring
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.app import create_server

pytest.importorskip("torch", reason="building an in-graph model traces torch modules")


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory):
    """A folder holding the tiny model plain and with the scores of PIPELINE inside."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copy(tiny_model, folder / "plain.onnx")
    plain = OnnxFromPath(tiny_model)
    SaveOnnx(ScoredOnnxFromOnnx(plain, PIPELINE.scoring), folder / "in_graph.onnx")()
    other = GraphScoring(radius=PIPELINE.radius + 2, region=PIPELINE.region)
    SaveOnnx(ScoredOnnxFromOnnx(plain, other), folder / "other_radius.onnx")()
    return folder


def stream(port: int, frames: list[bytes], recording: str) -> list:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        requests = (jpeg_frame(d, i, recording) for i, d in enumerate(frames))
        return list(stub.ScoreStream(requests))


def heatmaps(port: int, frames: list[bytes]) -> list[np.ndarray]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        out = []
        for i, data in enumerate(frames):
            heat = stub.Score(jpeg_frame(data, i, "unary", want_heatmap=True)).heatmap
            out.append(np.asarray(heat.data, np.float32).reshape(heat.height, heat.width))
        return out


def test_a_pets_stream_gets_the_same_flags_both_ways(harness, models, pets_video):
    from alscout.export.frames import read_frames

    frames = []
    for rgb in read_frames(pets_video, limit=120, stride=5):
        ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1])
        assert ok
        frames.append(data.tobytes())
    results = {}
    maps = {}
    for name in ("plain", "in_graph"):
        scoring, port = harness.start(make_config(models / f"{name}.onnx"))
        try:
            results[name] = split(stream(port, frames, "pets"))
            maps[name] = heatmaps(port, frames[::20])
        finally:
            harness.stop(scoring)
    (own_p, _, finals_p, by_p), (own_g, _, finals_g, by_g) = results["plain"], results["in_graph"]
    assert set(finals_p) == set(finals_g) and set(finals_g.values()) == {1}
    z_plain = np.array([r.z for r in own_p])
    z_graph = np.array([r.z for r in own_g])
    assert len(z_plain) == len(frames) and len(np.unique(np.round(z_plain, 7))) > 100
    np.testing.assert_allclose(z_graph, z_plain, rtol=1e-4)
    flags_p = sorted(k[2] for k, d in by_p.items() if d.decision == pb.DECISION_FLAGGED)
    flags_g = sorted(k[2] for k, d in by_g.items() if d.decision == pb.DECISION_FLAGGED)
    assert len(flags_p) >= 5, "the PETS stream should flag frames"
    assert flags_g == flags_p
    assert [by_g[k].reason for k in sorted(by_g)] == [by_p[k].reason for k in sorted(by_p)]
    for plain, graph in zip(maps["plain"], maps["in_graph"], strict=True):
        assert plain.shape == graph.shape == (6, 8)
        np.testing.assert_allclose(graph, plain, atol=1e-3)


def test_model_info_reload_and_metrics_say_which_path_is_in_use(harness, models, tmp_path):
    for name in ("plain.onnx", "in_graph.onnx", "other_radius.onnx"):
        shutil.copy(models / name, tmp_path / name)
    scoring, port = harness.start(make_config(tmp_path / "plain.onnx"))
    metrics = scoring.metrics
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alscout_pb2_grpc.ScorerStub(channel)
            assert stub.GetModelInfo(pb.GetModelInfoRequest()).scoring_path == "numba"
            assert metrics.value("alscout_scoring_path", path="numba") == 1.0
            assert metrics.value("alscout_scoring_path", path="in_graph") == 0.0
            reply = stub.ReloadModel(pb.ReloadModelRequest(model_file="in_graph.onnx"))
            assert (reply.previous.scoring_path, reply.current.scoring_path) == (
                "numba",
                "in_graph",
            )
            assert stub.GetModelInfo(pb.GetModelInfoRequest()).scoring_path == "in_graph"
            assert metrics.value("alscout_scoring_path", path="in_graph") == 1.0
            assert metrics.value("alscout_scoring_path", path="numba") == 0.0
            ok, data = cv2.imencode(".jpg", np.full((96, 128, 3), 90, np.uint8))
            assert ok and np.isfinite(stub.Score(jpeg_frame(data.tobytes(), 0)).z)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ReloadModel(pb.ReloadModelRequest(model_file="other_radius.onnx"))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "radius: 5 vs 3" in caught.value.details()
            assert stub.GetModelInfo(pb.GetModelInfoRequest()).scoring_path == "in_graph"
    finally:
        harness.stop(scoring)


def test_a_server_refuses_to_start_with_a_model_of_other_settings(harness, models):
    async def start():
        return create_server(make_config(models / "other_radius.onnx"))

    with pytest.raises(ModelError, match=r"radius: 5 vs 3.*--scores-in-graph"):
        harness.call(start())
