"""Where the server listens: the gRPC port (printed by ``alscout serve``) and the metrics
endpoint, which has an address of its own (issue #13: D11d, N2)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import make_config

from alscout.errors import ConfigError
from alscout.server.config import load_config


def test_metrics_listen_on_loopback_even_when_grpc_listens_everywhere(harness, tiny_model):
    scoring, _ = harness.start(make_config(tiny_model, host="0.0.0.0", metrics_port=0))
    try:
        host, port = scoring.metrics._http.server_address[:2]  # the socket itself
        assert (host, port) == ("127.0.0.1", scoring.metrics_port)
        url = f"http://127.0.0.1:{scoring.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert "alscout_active_streams" in reply.read().decode()
    finally:
        harness.stop(scoring)


def test_metrics_host_is_a_setting_of_its_own(tiny_model):
    config = load_config(
        env={"ALSCOUT_SERVER_METRICS_HOST": "0.0.0.0"},
        overrides={"model_path": tiny_model, "host": "127.0.0.1"},
    )
    assert (config.host, config.metrics_host) == ("127.0.0.1", "0.0.0.0")
    assert load_config(overrides={"model_path": tiny_model, "host": "::"}).metrics_host == (
        "127.0.0.1"
    )
    with pytest.raises(ConfigError, match="metrics_host"):
        load_config(overrides={"model_path": tiny_model, "metrics_host": ""})


@pytest.mark.slow
def test_serve_prints_the_address_it_listens_on(tiny_model):
    cmd = [sys.executable, "-m", "alscout.apps.cli", "serve", "--model", str(tiny_model),
           "--port", "0", "--backend", "onnxruntime-cpu", "--metrics-port", "0"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ)
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        try:
            line = lines.get(timeout=60)  # printed without -v: not a log line
        except queue.Empty:
            pytest.fail("alscout serve printed nothing on stdout")
        match = re.fullmatch(r"alscout serve: listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        port = int(match.group(1))
        assert port > 0
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=30
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        metrics = lines.get(timeout=10)
        assert re.fullmatch(r"alscout serve: metrics on http://127\.0\.0\.1:\d+/metrics\n", metrics)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
