"""Prometheus metrics: counted as frames flow, served over HTTP, one registry per server."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_harness import jpeg_frame, make_config, split, video_frames

from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.metrics import FREE_REASONS, ServerMetrics


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_stream_is_counted_and_served_over_http(harness, tiny_model):
    scoring, port = harness.start(make_config(tiny_model, metrics_port=0))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alscout_pb2_grpc.ScorerStub(channel)
            frames = [jpeg_frame(d, i, "m1") for i, d in enumerate(video_frames(20, seed=60))]
            results = list(stub.ScoreStream(iter(frames)))
            with pytest.raises(grpc.RpcError):
                list(stub.ScoreStream(iter([jpeg_frame(b"junk", 0, "m2")])))
        deadline = time.monotonic() + 10  # the failed call's stream is closed in the background
        while scoring.metrics.value("alscout_streams_freed_total", reason="error") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        samples = scrape(scoring.metrics_port)
    finally:
        harness.stop(scoring)
    by_key = split(results)[3]
    n_flagged = sum(d.decision == pb.DECISION_FLAGGED for d in by_key.values())
    assert n_flagged > 0

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("alscout_frames_total", rpc="ScoreStream") == 20
    assert value("alscout_flags_total") == n_flagged
    assert value("alscout_decisions_total", decision="flagged") == n_flagged
    assert value("alscout_decisions_total", decision="not_flagged") == 20 - n_flagged
    assert value("alscout_frame_latency_seconds_count", stage="total") == 20
    assert value("alscout_frame_latency_seconds_count", stage="queue") == 20
    assert value("alscout_batch_size_sum") == 20
    assert value("alscout_errors_total", code="INVALID_ARGUMENT") == 1
    assert value("alscout_active_streams") == 0 and value("alscout_queue_depth") == 0
    # the good stream finished; the bad call's stream was closed as an error
    assert value("alscout_streams_freed_total", reason="finished") == 1
    assert value("alscout_streams_freed_total", reason="error") == 1


def test_each_server_counts_on_its_own():
    a, b = ServerMetrics(), ServerMetrics()
    a.flags.inc(3)
    assert a.value("alscout_flags_total") == 3 and b.value("alscout_flags_total") == 0
    assert {r: b.value("alscout_streams_freed_total", reason=r) for r in FREE_REASONS} == {
        r: 0.0 for r in FREE_REASONS
    }
    port = a.serve_http(0)
    try:
        assert scrape(port)[("alscout_flags_total", ())] == 3
    finally:
        a.close()
