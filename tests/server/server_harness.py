"""Test helpers: a real in-process server on port 0 in a background event loop, and frames."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from alscout.runtime.pipeline import PipelineConfig
from alscout.runtime.temporal import SelectorConfig
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.app import ScoringServer, create_server
from alscout.server.config import ServerConfig
from alscout.server.outbox import MemoryOutbox

#: small windows so a 40-frame stream has several flags and a short latency
SELECTOR = SelectorConfig(dt=2, sigma=1.0, dt1=3, dt2=1, threshold=0.0)
PIPELINE = PipelineConfig(batch_size=4, radius=3, region=16, heatmap_stride=16)


class Harness:
    """Runs ScoringServers in one background event loop; sync helpers for tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, config: ServerConfig, outbox=None) -> tuple[ScoringServer, int]:
        async def make():
            scoring, port = create_server(config, outbox)
            await scoring.start()
            return scoring, port

        return self.call(make())

    def stop(self, scoring: ScoringServer, grace_s: float = 0.0) -> None:
        self.call(scoring.stop(grace_s))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def make_config(model: Path, **kw) -> ServerConfig:
    base = dict(
        model_path=model,
        port=0,
        backend="onnxruntime-cpu",
        threads=1,
        grace_s=0.0,
        pipeline=PIPELINE,
        selector=SELECTOR,
    )
    base.update(kw)
    return ServerConfig(**base)


@pytest.fixture(scope="module")
def served(harness, tiny_model):
    """(port, outbox, scoring) of a server shared by a test module."""
    outbox = MemoryOutbox()
    config = make_config(tiny_model, max_pixels=500_000, resume_window_s=0.3)
    scoring, port = harness.start(config, outbox)
    yield port, outbox, scoring
    harness.stop(scoring)


@pytest.fixture
def stub(served) -> Iterator[alscout_pb2_grpc.ScorerStub]:
    with grpc.insecure_channel(f"127.0.0.1:{served[0]}") as channel:
        yield alscout_pb2_grpc.ScorerStub(channel)


def video_frames(n: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEG frames 128x96 of a scene that drifts, with bursts of noise."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (128, 96))
    out = []
    for i in range(n):
        frame = np.roll(base, 5 * i, axis=1)
        if rng.random() < 0.3:
            frame = np.clip(frame + rng.normal(0, 40, frame.shape), 0, 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", frame[:, :, ::-1])
        assert ok
        out.append(data.tobytes())
    return out


def jpeg_frame(data: bytes, index: int, recording: str = "rec1", camera: str = "front", **kw):
    return pb.Frame(
        recording_id=recording,
        camera_id=camera,
        frame_index=index,
        encoded=pb.EncodedImage(data=data, encoding=pb.ENCODING_JPEG),
        **kw,
    )


def split(results):
    """(per-frame results, closing results, final decisions by (rec, cam, frame))."""
    own = [r for r in results if not r.end_of_stream]
    closing = [r for r in results if r.end_of_stream]
    finals = Counter()
    by_key = {}
    for r in results:
        for d in r.final_decisions:
            key = (r.recording_id, r.camera_id, d.frame_index)
            finals[key] += 1
            by_key[key] = d
    return own, closing, finals, by_key


class Feeder:
    """A ScoreStream call in a thread whose frames the test hands over one by one."""

    def __init__(self, stub, frames):
        self.frames = frames
        self.queue: queue.Queue = queue.Queue()
        self.results: list = []
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(stub,), daemon=True)
        self.thread.start()

    def _requests(self):
        while (item := self.queue.get()) is not None:
            yield item

    def _run(self, stub):
        try:
            self.results.extend(stub.ScoreStream(self._requests()))
        except grpc.RpcError as error:
            self.error = error

    def send(self, n: int, start: int = 0):
        for frame in self.frames[start : start + n]:
            self.queue.put(frame)

    def finish(self):
        self.queue.put(None)
        self.thread.join(60)
        assert not self.thread.is_alive()


class Proxy:
    """A TCP forwarder to ``127.0.0.1:target``; :meth:`cut` drops every live connection."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.cuts = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            live, self.sockets = self.sockets, []
            self.cuts += 1
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()
