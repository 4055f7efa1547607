"""Prometheus metrics of one scoring server, in a registry of its own.

Each :class:`ServerMetrics` owns a :class:`prometheus_client.CollectorRegistry`, so
several servers in one process (tests) keep separate counts. :meth:`serve_http` exposes
it on an HTTP port (``/metrics``, text format). Names and labels: docs/api.md.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from alscout.runtime.pipeline import SCORING_PATHS

__all__ = ["ServerMetrics", "FREE_REASONS", "LATENCY_BUCKETS"]

log = logging.getLogger(__name__)

#: why a stream's state was freed (label ``reason`` of ``alscout_streams_freed_total``)
FREE_REASONS = ("finished", "cancelled", "idle", "resume_expired", "error", "shutdown")
#: seconds; frame latencies on a vehicle range from ~1 ms to seconds under load
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class ServerMetrics:
    """The counters, gauges and histograms the server updates (thread-safe)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter(
            "alscout_frames", "Frames scored and answered, by RPC", ["rpc"], registry=r
        )
        self.latency = Histogram(
            "alscout_frame_latency_seconds",
            "Per-frame time by stage: decode, queue (waiting for a batch), inference (the "
            "batch's pipeline call), total (received to answered)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "alscout_queue_depth", "Frames waiting for an inference batch", registry=r
        )
        self.batch_size = Histogram(
            "alscout_batch_size", "Frames per inference batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.decisions = Counter(
            "alscout_decisions", "Final decisions, by outcome", ["decision"], registry=r
        )
        self.flags = Counter("alscout_flags", "Frames flagged and stored in the outbox", registry=r)
        self.errors = Counter(
            "alscout_errors", "Calls ended with an error, by gRPC status code", ["code"], registry=r
        )
        self.rejected = Counter(
            "alscout_frames_rejected",
            "Frames refused without scoring, by reason (backpressure, deadline, withdrawn, "
            "or the decode budget that had no room: call_pixel_budget, server_pixel_budget, "
            "large_decode_slots)",
            ["reason"],
            registry=r,
        )
        self.active_streams = Gauge(
            "alscout_active_streams", "Streams attached to a call", registry=r
        )
        self.detached_streams = Gauge(
            "alscout_detached_streams", "Streams whose call was cut, kept for resuming", registry=r
        )
        self.freed_streams = Counter(
            "alscout_streams_freed", "Stream states freed, by reason", ["reason"], registry=r
        )
        self.resumes = Counter(
            "alscout_resumes", "Resume requests, by whether the state was found", ["found"],
            registry=r,
        )  # fmt: skip
        self.reloads = Counter("alscout_model_reloads", "Models swapped in", registry=r)
        self.scoring_path = Gauge(
            "alscout_scoring_path",
            "1 for where the current model's z is computed: in_graph (the model's graph "
            "outputs z and the heat map) or numba (the server scores its probabilities)",
            ["path"],
            registry=r,
        )
        self.decode_pixels = Gauge(
            "alscout_decode_pixels",
            "Pixels of frames admitted to decoding and not yet scored (server_pixel_budget)",
            registry=r,
        )
        for reason in FREE_REASONS:
            self.freed_streams.labels(reason=reason)
        for stage in ("decode", "queue", "inference", "total"):
            self.latency.labels(stage=stage)
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None

    def set_scoring_path(self, path: str) -> None:
        """Mark ``path`` ("in_graph" | "numba") as the one the current model uses."""
        for name in SCORING_PATHS:
            self.scoring_path.labels(path=name).set(1.0 if name == path else 0.0)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (``name`` as exposed, e.g. ``alscout_flags_total``)."""
        found = self.registry.get_sample_value(name, labels or None)
        return 0.0 if found is None else found

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose ``/metrics`` on ``host:port`` (0 picks a free port); returns the port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http, self._http_thread = server, thread
        bound = int(server.server_port)
        log.info("metrics listening host=%s port=%d", host, bound)
        return bound

    def close(self) -> None:
        """Stop the HTTP endpoint if one runs."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join(5)
            self._http = None
