"""Dynamic batching across streams: one task forms inference batches from every call's frames.

Calls :meth:`Batcher.enqueue` decoded frames and get a future back. One batcher task
takes up to ``max_batch`` frames, waiting at most ``max_delay_ms`` after the oldest
frame arrived for more to come, and runs the scoring function on them in the thread
pool; the next batch forms while one runs. The queue is bounded (``max_queue`` frames):
``enqueue`` waits for room, which is the backpressure every call feels. Frames whose
caller has gone (future cancelled) or whose deadline has passed are dropped before
inference. ``max_batch`` and ``max_delay_ms`` come from the batch policy of the
model's backend, unless the server's settings give them (server/batch_policy.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from alscout.errors import ConfigError, DeadlineExceededError, ShuttingDownError
from alscout.runtime.pipeline import FrameScore
from alscout.server.metrics import ServerMetrics

__all__ = ["Batcher", "BatchedScore", "DeadlineExceededError", "ShuttingDownError"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchedScore:
    """A frame's score and how it was batched.

    ``queue_ms``: time from enqueue to the start of its batch, milliseconds.
    ``batch_size``: frames in that batch.
    """

    score: FrameScore
    queue_ms: float
    batch_size: int


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future[BatchedScore]
    deadline: float | None  # time.monotonic() seconds
    enqueued: float  # time.monotonic() seconds


class Batcher:
    """Forms batches of frames from all calls and scores them with ``score_fn``.

    Args:
        score_fn: RGB uint8 frames ``[H_i, W_i, 3]`` -> one :class:`FrameScore` each;
            runs in ``executor``.
        executor: the thread pool that runs ``score_fn``.
        max_batch: most frames per batch, >= 1.
        max_delay_ms: longest wait after a batch's first frame for more frames, >= 0.
        max_queue: most frames waiting for a batch, >= max_batch.
        metrics: queue depth, batch sizes, queue and inference latency, deadline drops.
    """

    def __init__(
        self,
        score_fn: Callable[[Sequence[np.ndarray]], list[FrameScore]],
        executor: Executor,
        *,
        max_batch: int,
        max_delay_ms: float,
        max_queue: int,
        metrics: ServerMetrics | None = None,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if max_delay_ms < 0:
            raise ConfigError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
        if max_queue < max_batch:
            raise ConfigError(f"max_queue ({max_queue}) must be >= max_batch ({max_batch})")
        self._score_fn = score_fn
        self._executor = executor
        self.max_batch = max_batch
        self.max_delay_s = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self._metrics = metrics or ServerMetrics()
        self._items: deque[_Item] = deque()
        self._cond = asyncio.Condition()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        #: sizes of the batches run so far (for tests and logs), most recent last
        self.batch_sizes: deque[int] = deque(maxlen=1000)

    @property
    def depth(self) -> int:
        """Frames waiting for a batch."""
        return len(self._items)

    def start(self) -> None:
        """Start the batcher task (call inside the running event loop)."""
        if self._task is None:
            log.debug(
                "batcher started max_batch=%d max_delay_ms=%g max_queue=%d",
                self.max_batch,
                1000 * self.max_delay_s,
                self.max_queue,
            )
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Refuse new frames, score the ones queued, and end the task."""
        async with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._task is not None:
            await self._task
            self._task = None

    async def enqueue(
        self, image: np.ndarray, deadline: float | None = None
    ) -> asyncio.Future[BatchedScore]:
        """Queue one RGB frame ``[H, W, 3]`` uint8; waits while the queue is full.

        ``deadline``: ``time.monotonic()`` seconds after which the frame is not worth
        scoring. Returns a future of its :class:`BatchedScore`; cancel it to withdraw
        the frame. Raises :class:`ShuttingDownError` once :meth:`stop` was called.
        """
        loop = asyncio.get_running_loop()
        async with self._cond:
            await self._cond.wait_for(lambda: self._closed or len(self._items) < self.max_queue)
            if self._closed:
                raise ShuttingDownError("the server is shutting down; retry on another server")
            item = _Item(image, loop.create_future(), deadline, time.monotonic())
            self._items.append(item)
            self._metrics.queue_depth.set(len(self._items))
            self._cond.notify_all()
        return item.future

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            try:
                await self._score(batch)
            except Exception:  # the batcher must outlive any batch
                log.exception("batch failed size=%d", len(batch))

    async def _next_batch(self) -> list[_Item] | None:
        """Wait for a first frame, then up to max_delay for the batch to fill."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._closed or bool(self._items))
            if not self._items:
                return None  # closed and drained
            close_at = self._items[0].enqueued + self.max_delay_s
            while len(self._items) < self.max_batch and not self._closed:
                remaining = close_at - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._cond.wait(), remaining)
                except TimeoutError:
                    break
            n = min(self.max_batch, len(self._items))
            batch = [self._items.popleft() for _ in range(n)]
            self._metrics.queue_depth.set(len(self._items))
            self._cond.notify_all()  # room for waiting callers
        return batch

    async def _score(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        live = []
        for item in batch:
            if item.future.done():  # the caller withdrew it (cancelled, or its deadline)
                self._metrics.rejected.labels(reason="withdrawn").inc()
                continue
            if item.deadline is not None and item.deadline <= started:
                self._metrics.rejected.labels(reason="deadline").inc()
                item.future.set_exception(
                    DeadlineExceededError(
                        f"the frame's deadline passed after {1000 * (started - item.enqueued):.0f}"
                        " ms in the queue, before it was scored"
                    )
                )
                continue
            live.append(item)
        if not live:
            return
        n = len(live)
        self.batch_sizes.append(n)
        self._metrics.batch_size.observe(n)
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(
                self._executor, self._score_fn, [item.image for item in live]
            )
        except Exception as error:  # noqa: BLE001  # handed to every caller of the batch
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        inferred = time.monotonic()
        self._metrics.latency.labels(stage="inference").observe(inferred - started)
        for item, score in zip(live, scores, strict=True):
            queue_s = started - item.enqueued
            self._metrics.latency.labels(stage="queue").observe(queue_s)
            if not item.future.done():
                item.future.set_result(BatchedScore(score, 1000.0 * queue_s, n))
        log.debug("batch scored size=%d ms=%.1f", n, 1000 * (inferred - started))
