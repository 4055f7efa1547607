"""The batcher: batches across callers, bounded waits, a bounded queue, deadlines, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from alscout.errors import ConfigError, DeadlineExceededError, ShuttingDownError
from alscout.runtime.pipeline import FrameScore
from alscout.server.batching import Batcher
from alscout.server.metrics import ServerMetrics


class FakeModel:
    """Scores a frame as its first pixel; records batches; can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, images):
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("inference failed")
        self.batches.append([int(img[0, 0, 0]) for img in images])
        return [FrameScore(float(img[0, 0, 0]), None, "v", "h", 1.0, 1.0) for img in images]


def image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture
def executor():
    with ThreadPoolExecutor(2) as pool:
        yield pool


def test_frames_of_many_callers_share_batches_up_to_max_batch(executor):
    model, metrics = FakeModel(), ServerMetrics()

    async def main():
        batcher = Batcher(
            model, executor, max_batch=4, max_delay_ms=200, max_queue=16, metrics=metrics
        )
        batcher.start()
        futures = [await batcher.enqueue(image(i)) for i in range(10)]
        scores = await asyncio.gather(*futures)
        await batcher.stop()
        return scores

    scores = run(main())
    assert [s.score.z for s in scores] == list(range(10))  # each caller gets its own frame
    assert [len(b) for b in model.batches] == [4, 4, 2]  # full batches go at once
    assert sorted(v for b in model.batches for v in b) == list(range(10))
    assert [s.batch_size for s in scores] == [4] * 8 + [2] * 2
    assert metrics.value("alscout_batch_size_count") == 3
    assert metrics.value("alscout_batch_size_sum") == 10


def test_a_lone_frame_waits_at_most_max_delay(executor):
    model = FakeModel()

    async def main():
        batcher = Batcher(model, executor, max_batch=8, max_delay_ms=30, max_queue=8)
        batcher.start()
        started = time.monotonic()
        result = await (await batcher.enqueue(image(7)))
        waited = time.monotonic() - started
        await batcher.stop()
        return result, waited

    result, waited = run(main())
    assert result.score.z == 7 and result.batch_size == 1
    assert result.queue_ms >= 25  # it waited for company, then went alone
    assert waited < 5


def test_a_full_queue_makes_callers_wait(executor):
    model = FakeModel()
    model.gate.clear()  # inference blocks: the queue fills up

    async def main():
        batcher = Batcher(model, executor, max_batch=1, max_delay_ms=0, max_queue=2)
        batcher.start()
        first = await batcher.enqueue(image(0))
        while model.batches == [] and batcher.depth > 0:  # let the first batch start
            await asyncio.sleep(0.01)
        await batcher.enqueue(image(1))
        await batcher.enqueue(image(2))
        blocked = asyncio.ensure_future(batcher.enqueue(image(3)))
        await asyncio.sleep(0.2)
        assert not blocked.done() and batcher.depth == 2  # backpressure: no room
        model.gate.set()
        fourth = await (await blocked)
        await first
        await batcher.stop()
        return fourth

    assert run(main()).score.z == 3


def test_expired_and_withdrawn_frames_are_not_scored(executor):
    model, metrics = FakeModel(), ServerMetrics()

    async def main():
        batcher = Batcher(
            model, executor, max_batch=4, max_delay_ms=50, max_queue=8, metrics=metrics
        )
        batcher.start()
        late = await batcher.enqueue(image(1), deadline=time.monotonic() + 0.001)
        gone = await batcher.enqueue(image(2))
        kept = await batcher.enqueue(image(3))
        gone.cancel()
        with pytest.raises(DeadlineExceededError, match="deadline passed"):
            await late
        result = await kept
        await batcher.stop()
        return result

    assert run(main()).score.z == 3
    assert model.batches == [[3]]
    assert metrics.value("alscout_frames_rejected_total", reason="deadline") == 1


def test_a_failed_batch_fails_its_frames_and_the_batcher_goes_on(executor):
    model = FakeModel()

    async def main():
        batcher = Batcher(model, executor, max_batch=2, max_delay_ms=0, max_queue=4)
        batcher.start()
        model.fail = True
        with pytest.raises(RuntimeError, match="inference failed"):
            await (await batcher.enqueue(image(1)))
        model.fail = False
        result = await (await batcher.enqueue(image(2)))
        await batcher.stop()
        return result

    assert run(main()).score.z == 2


def test_stop_scores_what_is_queued_then_refuses(executor):
    model = FakeModel()

    async def main():
        batcher = Batcher(model, executor, max_batch=2, max_delay_ms=1000, max_queue=8)
        batcher.start()
        futures = [await batcher.enqueue(image(i)) for i in range(3)]
        await batcher.stop()  # does not wait out max_delay: it drains now
        with pytest.raises(ShuttingDownError):
            await batcher.enqueue(image(9))
        return [f.result().score.z for f in futures]

    assert run(main()) == [0, 1, 2]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        (dict(max_batch=0, max_delay_ms=1, max_queue=4), "max_batch"),
        (dict(max_batch=2, max_delay_ms=-1, max_queue=4), "max_delay_ms"),
        (dict(max_batch=8, max_delay_ms=1, max_queue=4), "max_queue"),
    ],
)
def test_bad_settings_are_config_errors(executor, kw, words):
    with pytest.raises(ConfigError, match=words):
        Batcher(FakeModel(), executor, **kw)
