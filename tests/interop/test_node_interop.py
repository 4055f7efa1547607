"""A client on another gRPC implementation (Node's @grpc/grpc-js with @grpc/proto-loader)
streams a recording and gets the decisions the Python side gets.

``stream_folder.js`` streams a folder of JPEG frames to a real in-process server; its
final decisions must equal those of a Python gRPC client over the same frames and of
the offline driver (``flag_recording`` over the scores of the in-process pipeline).
Skips when ``node`` or ``tests/interop/node_modules`` is missing (``npm ci`` in this
folder installs the pinned packages).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import threading
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from alscout.runtime.backends.registry import open_backend
from alscout.runtime.decode import decode_frame
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline
from alscout.runtime.temporal import SelectorConfig, flag_recording
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.app import create_server
from alscout.server.config import ServerConfig
from alscout.server.outbox import MemoryOutbox

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "stream_folder.js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (HERE / "node_modules" / "@grpc" / "grpc-js").is_dir(),
        reason="tests/interop/node_modules is missing: run `npm ci` in tests/interop",
    ),
]

SELECTOR = SelectorConfig(dt=2, sigma=1.0, dt1=3, dt2=1, threshold=0.0)
PIPELINE = PipelineConfig(batch_size=4, radius=3, region=16, heatmap_stride=16)
N_FRAMES = 40


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """40 JPEG frames 128x96 of a drifting scene with bursts of noise; names sort naturally."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(7)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (128, 96))
    for i in range(N_FRAMES):
        frame = np.roll(base, 5 * i, axis=1)
        if rng.random() < 0.3:
            frame = np.clip(frame + rng.normal(0, 40, frame.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"frame{i}.jpg"), frame)
    return folder


@pytest.fixture(scope="module")
def server(tiny_model):
    """(target, model path) of a real server in a background event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    config = ServerConfig(
        model_path=tiny_model,
        port=0,
        backend="onnxruntime-cpu",
        threads=1,
        grace_s=0.0,
        pipeline=PIPELINE,
        selector=SELECTOR,
    )

    async def start():
        scoring, port = create_server(config, MemoryOutbox())
        await scoring.start()
        return scoring, port

    scoring, port = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    yield f"127.0.0.1:{port}", tiny_model
    asyncio.run_coroutine_threadsafe(scoring.stop(0.0), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def node_run(target: str, folder: Path, *extra: str, recording: str = "rec-node"):
    args = [NODE, str(SCRIPT), "--target", target, "--folder", str(folder)]
    args += ["--recording-id", recording, "--camera-id", "front", *extra]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def node_decisions(target: str, folder: Path, *extra: str) -> list[dict]:
    return node_run(target, folder, *extra)[0]


def python_decisions(target: str, folder: Path) -> list[pb.FinalDecision]:
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem.removeprefix("frame")))
    requests = (
        pb.Frame(
            recording_id="rec-py",
            camera_id="front",
            frame_index=i,
            encoded=pb.EncodedImage(data=p.read_bytes(), encoding=pb.ENCODING_JPEG),
        )
        for i, p in enumerate(files)
    )
    with grpc.insecure_channel(target) as channel:
        results = list(alscout_pb2_grpc.ScorerStub(channel).ScoreStream(requests, timeout=120))
    return [d for r in results for d in r.final_decisions]


def offline_decisions(model: Path, folder: Path):
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem.removeprefix("frame")))
    backend = open_backend(model, "onnxruntime-cpu", threads=1)
    with ScoringPipeline(backend, PIPELINE) as pipeline:
        z = [pipeline.score([decode_frame(p.read_bytes(), encoding="jpeg")])[0].z for p in files]
    return flag_recording(z, SELECTOR)


def test_node_client_gets_the_decisions_of_the_python_client_and_the_offline_driver(
    server, frames_dir
):
    target, model = server
    from_node = node_decisions(target, frames_dir)
    from_python = python_decisions(target, frames_dir)
    offline = offline_decisions(model, frames_dir)

    assert [d["frame_index"] for d in from_node] == list(range(N_FRAMES))  # each frame once
    assert {(d["recording_id"], d["camera_id"]) for d in from_node} == {("rec-node", "front")}
    flagged = [d["frame_index"] for d in from_node if d["decision"] == "flagged"]
    assert len(flagged) >= 2  # the comparison is not trivially all "not flagged"
    assert flagged == [d.frame_index for d in from_python if d.decision == pb.DECISION_FLAGGED]
    assert flagged == [d.frame for d in offline if d.flagged]
    for node, py, off in zip(from_node, from_python, offline, strict=True):
        assert node["frame_index"] == py.frame_index == off.frame
        assert node["reason"] == py.reason == str(off.reason)
        assert node["z"] == py.z  # the same bytes through the same model: bit-identical
        assert math.isclose(node["z"], off.z, rel_tol=1e-9)
        assert math.isclose(node["smoothed"], off.smoothed, rel_tol=1e-9)


def test_node_client_reports_a_refused_call(server, tmp_path):
    target, _ = server
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "frame0.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    args = [NODE, str(SCRIPT), "--target", target, "--folder", str(bad)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr


def test_node_client_resumes_a_cut_call_with_the_streams_token(server, frames_dir):
    target, _ = server
    uncut, _ = node_run(target, frames_dir, recording="rec-node-ref")  # a fresh recording
    cut, log = node_run(target, frames_dir, "--cut-after", "15", recording="rec-node-cut")
    assert "stream_folder: resumed found=true" in log  # the token was accepted
    assert [d["frame_index"] for d in cut] == list(range(N_FRAMES))  # each frame once
    strip = [({k: v for k, v in d.items() if k != "recording_id"}) for d in cut]
    assert strip == [({k: v for k, v in d.items() if k != "recording_id"}) for d in uncut]
