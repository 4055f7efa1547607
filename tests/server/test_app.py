"""The assembled server: health, reflection, graceful shutdown, and a vehicle without torch."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from server_harness import (
    SELECTOR,
    Feeder,
    jpeg_frame,
    make_config,
    split,
    video_frames,
)
from shared_inputs import load_asset

from alscout.runtime.temporal import flag_recording
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.app import SERVICE_NAME
from alscout.server.config import MESSAGE_HEADROOM_BYTES, ServerConfig
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.metrics import FREE_REASONS

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_reports_serving_and_reflection_lists_the_services(served):
    with grpc.insecure_channel(f"127.0.0.1:{served[0]}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert SERVICE_NAME == "alscout.v1.Scorer"
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= set(services)


def test_graceful_shutdown_drains_calls_then_refuses_new_ones(harness, tiny_model):
    scoring, port = harness.start(make_config(tiny_model))
    data = video_frames(10, seed=3)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        feeder = Feeder(stub, [jpeg_frame(d, i) for i, d in enumerate(data)])
        feeder.send(5)
        while len(feeder.results) < 5:  # the call is under way
            time.sleep(0.01)
        stopping = asyncio.run_coroutine_threadsafe(scoring.stop(grace_s=20.0), harness.loop)
        request = health_pb2.HealthCheckRequest(service="")
        deadline = time.monotonic() + 10
        while harness.call(scoring.health.Check(request, None)).status != NOT_SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        feeder.send(5, 5)  # the call in flight still gets its frames scored
        feeder.finish()
        stopping.result(30)
        assert feeder.error is None
        _, closing, finals, _ = split(feeder.results)
        assert len(closing) == 1 and len(finals) == 10
        with pytest.raises(grpc.RpcError) as caught:
            stub.Score(jpeg_frame(data[0], 0), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed on the vehicle")
sys.meta_path.insert(0, NoTorch())
from alscout.apps.cli import main
code = main(sys.argv[1:])
assert not any(m == "torch" or m.startswith(("torch.", "alscout.trainer.model"))
               for m in sys.modules), "torch was imported"
raise SystemExit(code)
"""


@pytest.mark.slow
def test_serve_runs_without_torch_and_drains_in_flight_frames_on_sigterm(tiny_model, tmp_path):
    outbox = tmp_path / "outbox"
    cmd = [sys.executable, "-c", NO_TORCH, "-vv", "serve", "--model", str(tiny_model),
           "--port", "0", "--backend", "onnxruntime-cpu", "--outbox", str(outbox),
           "--grace", "20", "--metrics-port", "0"]  # fmt: skip
    env = {**os.environ, "ALSCOUT_SELECTOR_DT": "1", "ALSCOUT_SELECTOR_DT1": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    log_lines: list[str] = []

    def drain():  # keep the pipe empty so the server never blocks on its log
        for line in proc.stderr:
            log_lines.append(line)
            lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
    try:
        ports = {}
        while "grpc" not in ports:
            line = lines.get(timeout=60)
            if match := re.search(r"metrics listening host=\S+ port=(\d+)", line):
                ports["metrics"] = int(match.group(1))
            elif match := re.search(r"listening host=\S+ port=(\d+)", line):
                ports["grpc"] = int(match.group(1))
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING
            stub = alscout_pb2_grpc.ScorerStub(channel)
            feeder = Feeder(stub, [jpeg_frame(d, i) for i, d in enumerate(video_frames(12))])
            feeder.send(6)
            deadline = time.monotonic() + 30
            while len(feeder.results) < 6:
                assert time.monotonic() < deadline and feeder.error is None
                time.sleep(0.01)
            url = f"http://127.0.0.1:{ports['metrics']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                assert "alscout_active_streams 1.0" in reply.read().decode()
            proc.send_signal(signal.SIGTERM)
            while not any("server draining" in line for line in log_lines):
                assert time.monotonic() < deadline, "".join(log_lines)
                time.sleep(0.01)
            feeder.send(6, 6)  # the call in flight still has its frames scored
            feeder.finish()
        assert feeder.error is None
        _, closing, finals, by_key = split(feeder.results)
        assert len(finals) == 12 and len(closing) == 1 and set(finals.values()) == {1}
        flagged = sorted(f for (_, _, f), d in by_key.items() if d.decision == pb.DECISION_FLAGGED)
        assert flagged
        assert proc.wait(30) == 0
        assert any("server stopped" in line for line in log_lines)
        durable = DurableOutbox(outbox)
        try:
            stored = sorted(f.frame_index for f in durable.frames() if f.recording_id == "rec1")
        finally:
            durable.close()
        assert stored == flagged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_published_model_is_hot_reloaded_from_the_registry(harness, tiny_model, tmp_path):
    from alscout.runtime.model_registry import ModelRegistry

    asset = load_asset("tiny_detector")
    second = asset.write(tmp_path / "tiny2.onnx", asset.INFO.__class__(
        **{**asset.INFO.__dict__, "version": "test-2"}))  # fmt: skip
    registry = ModelRegistry(tmp_path / "registry")
    first = registry.publish(tiny_model, metrics={"mr": 0.5})
    config = make_config(first.path, model_registry=registry.root, registry_poll_s=0.05)
    scoring, port = harness.start(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alscout_pb2_grpc.ScorerStub(channel)
            assert stub.GetModelInfo(pb.GetModelInfoRequest()).version == "test-1"
            feeder = Feeder(stub, [jpeg_frame(d, i, "hot") for i, d in enumerate(video_frames(30))])
            feeder.send(15)
            registry.publish(second, metrics={"mr": 0.4})
            deadline = time.monotonic() + 30
            while stub.GetModelInfo(pb.GetModelInfoRequest()).version != "test-2":
                assert time.monotonic() < deadline, "the new model was not loaded"
                time.sleep(0.02)
            feeder.send(15, 15)
            feeder.finish()
    finally:
        harness.stop(scoring)
    assert feeder.error is None
    own, _, finals, _ = split(feeder.results)
    assert len(finals) == 30 and set(finals.values()) == {1}
    assert own[-1].model_version == "test-2"  # frames after the reload name the new model
    assert scoring.metrics.value("alscout_model_reloads_total") == 1
    # a server started from an older file switches to the registry's newest at once
    scoring, port = harness.start(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alscout_pb2_grpc.ScorerStub(channel)
            deadline = time.monotonic() + 30
            while stub.GetModelInfo(pb.GetModelInfoRequest()).version != "test-2":
                assert time.monotonic() < deadline, "the registry's newest model was not loaded"
                time.sleep(0.02)
    finally:
        harness.stop(scoring)


def test_a_cancelled_call_is_cleaned_up_and_the_server_carries_on(served, stub):
    _, outbox, scoring = served
    metrics = scoring.metrics
    freed_before = sum(metrics.value("alscout_streams_freed_total", reason=r) for r in FREE_REASONS)
    data = video_frames(8, seed=12)
    gate = queue.Queue()

    def requests():
        for i, d in enumerate(data):
            if i == 4:
                gate.get()  # hold the call open until the test cancels it
            yield jpeg_frame(d, i, "cancelled")

    call = stub.ScoreStream(requests())
    first = [next(call) for _ in range(4)]
    assert [r.frame_index for r in first] == [0, 1, 2, 3]
    assert scoring.service.streams.get("cancelled", "front") is not None
    call.cancel()
    gate.put(None)
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    # the state is freed (at once, or after the short resume window of this server)
    deadline = time.monotonic() + 10
    while scoring.service.streams.get("cancelled", "front") is not None:
        assert time.monotonic() < deadline, "the server kept the cancelled stream"
        time.sleep(0.01)
    freed = sum(metrics.value("alscout_streams_freed_total", reason=r) for r in FREE_REASONS)
    assert freed == freed_before + 1
    assert metrics.value("alscout_active_streams") == 0
    # the frames it scored are decided as at the end of a stream; flagged ones are kept
    z = [r.z for r in first]
    expected = flag_recording(z, SELECTOR)
    want = [e.frame for e in expected if e.flagged]
    assert want, "the first frames of the stream should flag one"
    assert [f.frame_index for f in outbox.frames if f.recording_id == "cancelled"] == want
    assert stub.Score(jpeg_frame(data[0], 0)).z > 0


def test_the_default_message_limit_fits_the_largest_raw_frame_max_pixels_allows(served, stub):
    _, _, scoring = served
    max_pixels = scoring.config.max_pixels  # 500_000 on this server
    assert scoring.config.max_message_bytes == max_pixels * 3 + MESSAGE_HEADROOM_BYTES
    assert ServerConfig(model_path="m.onnx").max_message_bytes == (
        40_000_000 * 3 + MESSAGE_HEADROOM_BYTES
    )
    assert ServerConfig(model_path="m.onnx", max_message_bytes=4096).max_message_bytes == 4096

    def raw(width: int, height: int) -> pb.Frame:
        image = pb.RawImage(data=bytes(width * height * 3), width=width, height=height,
                            pixel_format=pb.PIXEL_FORMAT_RGB8)  # fmt: skip
        return pb.Frame(recording_id="big", camera_id="raw", raw=image)

    assert stub.Score(raw(1000, 500), timeout=30).z >= 0  # max_pixels exactly: 1.5 MB
    with pytest.raises(grpc.RpcError) as caught:  # 3 MB: refused by grpc, never parsed
        stub.Score(raw(1000, 1000), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
