"""Admission control for decoding: budgets charged from the header, a decode pool apart.

A PNG bomb (a small file declaring 16384 x 2441 pixels, under ``max_pixels``) must be
refused from its header alone when it exceeds a pixel budget, and frames held in
decoding must not keep other streams' frames from being answered. Decoders here are
fakes that count calls or hold chosen frames on an event, so the tests are functional,
not timed.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from server_harness import Feeder, jpeg_frame, make_config, split, video_frames

from alscout.errors import CapacityError, InvalidInputError
from alscout.runtime.pipeline import resize_frame
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.admission import DecodeAdmission
from alscout.server.config import ServerConfig
from alscout.server.metrics import ServerMetrics
from alscout.server.outbox import MemoryOutbox

BOMB = (16384, 2441)  # 40 Mpx, under the default max_pixels


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring ``width x height`` RGB, and no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def png_frame(size: tuple[int, int], index: int = 0, recording: str = "bomb") -> pb.Frame:
    return pb.Frame(
        recording_id=recording,
        camera_id="front",
        frame_index=index,
        encoded=pb.EncodedImage(data=png_header(*size), encoding=pb.ENCODING_PNG),
    )


class FakeDecoder:
    """Decodes to a tiny grey image; holds frames of ``hold`` pixels or more on an event.

    Counts calls and the most frames held at once (a held frame occupies its worker).
    """

    def __init__(self, hold: int | None = None) -> None:
        self.hold = hold
        self.release = threading.Event()
        self.calls = 0
        self.held = 0
        self.most_held = 0
        self.started = threading.Semaphore(0)
        self._lock = threading.Lock()

    def __call__(self, frame: pb.Frame, max_pixels: int, *_: object):
        with self._lock:
            self.calls += 1
        data = frame.encoded.data
        width, height = struct.unpack(">II", data[16:24]) if data[:4] == b"\x89PNG" else (0, 0)
        if self.hold is not None and width * height >= self.hold:
            with self._lock:
                self.held += 1
                self.most_held = max(self.most_held, self.held)
            self.started.release()
            self.release.wait(30)
            with self._lock:
                self.held -= 1
        image = np.full((96, 128, 3), 127, np.uint8)
        return image, "png", pb.RawImage(data=data), 1.0


def config(**kw) -> ServerConfig:
    return ServerConfig(model_path="model.onnx", **kw)


class Scorer:
    """Stands in for the batcher: each enqueued frame gets a future the test completes."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future] = []

    async def enqueue(self, image: np.ndarray) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def score_all(self) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(None)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.mark.parametrize("budget", ["call_pixel_budget", "server_pixel_budget"])
def test_a_png_bomb_over_a_budget_is_refused_from_its_header_without_decoding(budget):
    metrics = ServerMetrics()
    admission = DecodeAdmission(config(**{budget: 10_000_000}), metrics)
    admission.decode = decoder = FakeDecoder()

    async def main():
        with pytest.raises(CapacityError, match=budget) as caught:
            await admission.admit(png_frame(BOMB), admission.call_budget(), Scorer().enqueue)
        return str(caught.value)

    try:
        message = run(main())
    finally:
        admission.close()
    assert decoder.calls == 0
    assert "16384x2441" in message and "10000000" in message
    assert metrics.value("alscout_frames_rejected_total", reason=budget) == 1
    assert admission.server_budget.used == 0


def test_a_frame_over_max_pixels_stays_invalid_input():
    admission = DecodeAdmission(config(max_pixels=1_000_000))
    admission.decode = decoder = FakeDecoder()

    async def main():
        with pytest.raises(InvalidInputError, match="too large"):
            await admission.admit(
                png_frame((2000, 1000)), admission.call_budget(), Scorer().enqueue
            )

    try:
        run(main())
    finally:
        admission.close()
    assert decoder.calls == 0


def test_pixels_stay_charged_until_scored_and_a_frame_finding_no_room_is_refused():
    metrics = ServerMetrics()
    admission = DecodeAdmission(config(server_pixel_budget=3_000_000, queue_wait_ms=50.0), metrics)
    admission.decode = FakeDecoder()
    scorer = Scorer()

    async def main():
        first, _ = await admission.admit(
            png_frame((2000, 1000)), admission.call_budget(), scorer.enqueue
        )
        assert admission.server_budget.used == 2_000_000
        assert metrics.value("alscout_decode_pixels") == 2_000_000
        with pytest.raises(CapacityError, match="of server_pixel_budget=3000000 pixels"):
            await admission.admit(
                png_frame((2000, 1000), 1), admission.call_budget(), scorer.enqueue
            )
        # a waiting frame goes as soon as the first is scored
        waiting = asyncio.ensure_future(
            admission.admit(png_frame((2000, 1000), 2), admission.call_budget(), scorer.enqueue)
        )
        await asyncio.sleep(0.01)
        assert not waiting.done()
        scorer.score_all()
        await asyncio.wait_for(waiting, 5)
        assert admission.server_budget.used == 2_000_000
        scorer.score_all()
        await asyncio.sleep(0)
        assert admission.server_budget.used == 0
        assert first.done()

    try:
        run(main())
    finally:
        admission.close()
    assert metrics.value("alscout_frames_rejected_total", reason="server_pixel_budget") == 1


def test_a_call_budget_holds_only_its_own_call():
    admission = DecodeAdmission(config(call_pixel_budget=2_500_000, queue_wait_ms=50.0))
    admission.decode = FakeDecoder()
    scorer = Scorer()

    async def main():
        greedy = admission.call_budget()
        await admission.admit(png_frame((2000, 1000)), greedy, scorer.enqueue)
        with pytest.raises(CapacityError, match="of call_pixel_budget=2500000 pixels"):
            await admission.admit(png_frame((2000, 1000), 1), greedy, scorer.enqueue)
        other = admission.call_budget()  # another call has its own budget
        await admission.admit(png_frame((2000, 1000)), other, scorer.enqueue)
        assert (greedy.used, other.used) == (2_000_000, 2_000_000)

    try:
        run(main())
    finally:
        admission.close()


def test_large_frames_decode_in_their_slots_while_small_frames_go_through():
    # 2 decode workers, 1 slot for frames over 1 Mpx: three bombs are admitted, one
    # decodes (held), two wait for the slot; small frames still decode and are answered
    admission = DecodeAdmission(config(large_frame_pixels=1_000_000, queue_wait_ms=30_000.0))
    admission.decode = decoder = FakeDecoder(hold=1_000_001)
    scorer = Scorer()

    async def main():
        bombs = [
            asyncio.ensure_future(
                admission.admit(png_frame(BOMB, i), admission.call_budget(), scorer.enqueue)
            )
            for i in range(3)
        ]
        await asyncio.to_thread(decoder.started.acquire, timeout=10)
        for i in range(10):  # one small frame after another, as a clean stream sends them
            _, decoded = await asyncio.wait_for(
                admission.admit(png_frame((640, 480), i, "clean"), admission.call_budget(),
                                scorer.enqueue),
                5,
            )  # fmt: skip
            assert decoded.fmt == "png"
            scorer.score_all()
        assert decoder.held == 1 and not any(b.done() for b in bombs)
        decoder.release.set()
        await asyncio.wait_for(asyncio.gather(*bombs), 10)
        scorer.score_all()
        await asyncio.sleep(0)

    try:
        run(main())
    finally:
        decoder.release.set()
        admission.close()
    assert decoder.most_held == 1
    assert admission.server_budget.used == 0 and admission.large_slots.used == 0


def test_a_cancelled_frame_stays_charged_while_its_decode_runs():
    admission = DecodeAdmission(config(large_frame_pixels=1_000_000))
    admission.decode = decoder = FakeDecoder(hold=1_000_001)

    async def main():
        task = asyncio.ensure_future(
            admission.admit(png_frame(BOMB), admission.call_budget(), Scorer().enqueue)
        )
        await asyncio.to_thread(decoder.started.acquire, timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the worker still decodes the bomb: its pixels and its slot are still taken
        assert admission.server_budget.used == BOMB[0] * BOMB[1]
        assert admission.large_slots.used == 1
        decoder.release.set()
        deadline = time.monotonic() + 10
        while admission.server_budget.used or admission.large_slots.used:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    try:
        run(main())
    finally:
        decoder.release.set()
        admission.close()


# -- over the wire ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bombed(harness, tiny_model) -> Iterator[tuple[int, object]]:
    """A server with the default max_pixels, a 10 Mpx call budget and a long wait."""
    config = make_config(
        tiny_model, call_pixel_budget=10_000_000, large_frame_pixels=1_000_000,
        queue_wait_ms=30_000.0, resume_window_s=0.0,
    )  # fmt: skip
    scoring, port = harness.start(config, MemoryOutbox())
    yield port, scoring
    harness.stop(scoring)


def install(scoring, decoder: FakeDecoder) -> None:
    scoring.service.admission.decode = decoder


def test_a_png_bomb_header_is_refused_resource_exhausted_over_the_wire(bombed):
    port, scoring = bombed
    install(scoring, decoder := FakeDecoder())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        for call in (stub.Score, lambda f, **kw: list(stub.ScoreStream(iter([f]), **kw))):
            with pytest.raises(grpc.RpcError) as caught:
                call(png_frame(BOMB), timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "call_pixel_budget=10000000" in caught.value.details()
        assert decoder.calls == 0
        # a frame over max_pixels is still the client's mistake
        with pytest.raises(grpc.RpcError) as caught:
            stub.Score(png_frame((16384, 16384)), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert scoring.metrics.value("alscout_frames_rejected_total", reason="call_pixel_budget") == 2


def test_a_clean_stream_is_answered_while_bomb_streams_are_held_in_decoding(bombed):
    port, scoring = bombed
    bomb = (3000, 3000)  # 9 Mpx: within this server's call budget, over large_frame_pixels
    install(scoring, decoder := FakeDecoder(hold=bomb[0] * bomb[1]))
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as c1, grpc.insecure_channel(target) as c2:
        bombers = [
            Feeder(alscout_pb2_grpc.ScorerStub(c), [png_frame(bomb, 0, f"bomb{i}")])
            for i, c in enumerate((c1, c2))
        ]
        for bomber in bombers:
            bomber.send(1)
        assert decoder.started.acquire(timeout=10)
        clean = Feeder(
            alscout_pb2_grpc.ScorerStub(c1),
            [jpeg_frame(d, i, "clean") for i, d in enumerate(video_frames(15, seed=5))],
        )
        try:
            for i in range(15):  # lockstep: each frame is answered before the next is sent
                clean.send(1, i)
                deadline = time.monotonic() + 20
                while len([r for r in clean.results if not r.end_of_stream]) <= i:
                    assert clean.error is None, clean.error
                    assert time.monotonic() < deadline, f"clean frame {i} was not answered"
                    time.sleep(0.005)
            assert decoder.held == 1 and not decoder.release.is_set()
        finally:
            decoder.release.set()
        clean.finish()
        for bomber in bombers:
            bomber.finish()
    assert clean.error is None
    _, closing, finals, _ = split(clean.results)
    assert len(closing) == 1 and len(finals) == 15
    for bomber in bombers:  # held, not refused: scored once released
        assert bomber.error is None, bomber.error
    assert decoder.most_held == 1


@pytest.mark.parametrize(("size", "shrunk"), [((640, 480), True), ((100, 80), False)])
def test_a_frame_larger_than_the_model_input_is_shrunk_in_the_decode_pool(size, shrunk):
    """The pipeline's own resize, done in the decode thread: a bomb's pixels are freed at
    once and the scoring threads get frames at the model's input size (or smaller)."""
    width, height = size
    original = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)

    def decoder(frame, max_pixels, *_):
        return original.copy(), "png", pb.RawImage(), 1.0

    admission = DecodeAdmission(config(), target_size=lambda: (96, 128))
    admission.decode = decoder
    seen: list[np.ndarray] = []

    async def enqueue(image):
        seen.append(image)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def main():
        return await admission.admit(png_frame(size), admission.call_budget(), enqueue)

    try:
        _, decoded = run(main())
    finally:
        admission.close()
    assert (decoded.width, decoded.height) == size  # results report the frame's own size
    expected = resize_frame(original, 96, 128) if shrunk else original
    np.testing.assert_array_equal(seen[0], expected)
    # what the scoring thread then does to it is nothing: same input as before
    np.testing.assert_array_equal(resize_frame(seen[0], 96, 128), resize_frame(original, 96, 128))
