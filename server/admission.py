"""Admission control for decoding: a frame's pixels are budgeted before any is decoded.

A small file can declare a large image (a 117 KB PNG of 16384 x 2441 pixels takes
seconds and 120 MB to decode), so the size a frame will decode to is read from its
header (PNG IHDR, JPEG SOF, a raw frame's width and height) and charged, before
decoding, against

- the call's budget, ``call_pixel_budget`` pixels of its frames in flight, and
- the server's budget, ``server_pixel_budget`` pixels of every call's frames in flight.

A frame stays charged from its admission until its batch has scored it (or it was
withdrawn): that is when its decoded pixels are freed. A frame larger than a budget on
its own is refused at once; one that would fit waits for room up to ``queue_wait_ms``,
then is refused. Either way the call ends RESOURCE_EXHAUSTED with a message naming the
budget (``alscout_frames_rejected_total{reason=<budget>}``); a frame over ``max_pixels``
stays INVALID_ARGUMENT.

Decoding runs in a pool of its own (``decode_workers`` threads), apart from the scoring
threads, so no decode can hold a batch up. A frame larger than the model's input is
shrunk to it there, right after decoding, exactly as the pipeline would shrink it (the
pipeline's resize is then a no-op): a bomb's 120 MB are freed at once instead of
waiting in the batch queue, and the scoring threads never pay for its resize. Frames
over ``large_frame_pixels`` also need one of ``large_decode_slots`` (fewer than the
workers) while they decode, so small frames always find a free decode worker, however
many large ones wait. (A hot reload to a model of another input size between decode and
scoring resizes such a frame once more: only the frames in flight then.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from alscout.errors import CapacityError
from alscout.runtime.pipeline import resize_frame
from alscout.server._proto import alscout_pb2 as pb
from alscout.server.batching import BatchedScore
from alscout.server.config import MetadataLimits, ServerConfig
from alscout.server.messages import declared_size, decode
from alscout.server.metrics import ServerMetrics

__all__ = ["DecodeAdmission", "PixelBudget", "Decoded"]

log = logging.getLogger(__name__)

#: ``decode(frame, max_pixels, metadata_limits) -> (RGB [H, W, 3] uint8, format, image
#: message, ms)``
DecodeFn = Callable[[pb.Frame, int, MetadataLimits], tuple[np.ndarray, str, pb.RawImage, float]]
Enqueue = Callable[[np.ndarray], Awaitable["asyncio.Future[BatchedScore]"]]


class Decoded(NamedTuple):
    """What the answer and the outbox need of a decoded frame (the pixels went to the batch)."""

    fmt: str  # "jpeg" | "png" | "raw"
    raw: pb.RawImage  # the image message (encoded bytes for jpeg and png)
    width: int
    height: int
    decode_ms: float


class PixelBudget:
    """At most ``limit`` units (pixels, or slots) taken at once; takers wait for room.

    Lives in one event loop: :meth:`take` and :meth:`give` are called from it. A waiter
    goes as soon as its own amount fits, so small amounts pass large ones that wait.
    ``name`` is the config key, named in refusals; ``hint`` says what to do about one.
    """

    def __init__(
        self,
        limit: int,
        name: str,
        hint: str,
        *,
        unit: str = "pixels",
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.limit = limit
        self.name = name
        self.hint = hint
        self.unit = unit
        self.used = 0
        self._on_change = on_change
        self._waiters: set[asyncio.Future[None]] = set()

    async def take(self, amount: int, until: float, what: str) -> None:
        """Take ``amount``, waiting until ``time.monotonic()`` reaches ``until`` for room.

        Raises :class:`CapacityError` naming the budget when ``amount`` alone exceeds
        it, or when no room came in time.
        """
        if amount > self.limit:
            raise CapacityError(
                f"{what} needs {amount} {self.unit}, more than {self.name}={self.limit} "
                f"allows at once; send smaller frames (or raise {self.name})"
            )
        loop = asyncio.get_running_loop()
        waited = time.monotonic()
        while self.used + amount > self.limit:
            remaining = until - time.monotonic()
            if remaining <= 0:
                raise CapacityError(
                    f"{what} waited {1000 * (time.monotonic() - waited):.0f} ms for {amount} "
                    f"of {self.name}={self.limit} {self.unit} ({self.used} in use); {self.hint}"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass  # the loop condition decides
            finally:
                self._waiters.discard(waiter)
        self.used += amount
        self._changed()

    def give(self, amount: int) -> None:
        """Give back ``amount`` taken before; wakes the waiters to look for room."""
        self.used -= amount
        self._changed()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.used)


class _Charge:
    """The budget amounts one frame holds; :meth:`release` gives them all back, once."""

    def __init__(self) -> None:
        self._held: list[tuple[PixelBudget, int]] = []

    def add(self, budget: PixelBudget, amount: int) -> None:
        self._held.append((budget, amount))

    def release(self) -> None:
        held, self._held = self._held, []
        for budget, amount in held:
            budget.give(amount)

    def hand_over(self) -> _Charge:
        """A charge that holds what this one held; this one is left empty."""
        other = _Charge()
        other._held, self._held = self._held, []
        return other


class DecodeAdmission:
    """Admits frames to decoding against the budgets, decodes them in its own pool.

    One per server; :meth:`call_budget` makes the budget of each call (a unary call is
    a call of one frame). ``decode`` is the decoding function (a test may replace it).
    """

    def __init__(
        self,
        config: ServerConfig,
        metrics: ServerMetrics | None = None,
        target_size: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.metrics = metrics or ServerMetrics()
        #: (height, width) frames are scored at (the current model's input); None: no shrink
        self.target_size = target_size
        self.max_pixels = config.max_pixels
        self.metadata_limits = config.metadata_limits
        self.call_pixel_budget = config.call_pixel_budget
        self.large_frame_pixels = config.large_frame_pixels
        self.wait_s = config.queue_wait_ms / 1000.0
        self.decode: DecodeFn = decode
        self.server_budget = PixelBudget(
            config.server_pixel_budget,
            "server_pixel_budget",
            "frames of all calls hold the server's decode budget; retry later",
            on_change=self.metrics.decode_pixels.set,
        )
        self.large_slots = PixelBudget(
            config.large_decode_slots,
            "large_decode_slots",
            f"frames over large_frame_pixels={config.large_frame_pixels} are decoded "
            f"{config.large_decode_slots} at a time; retry later or send smaller frames",
            unit="slots",
        )
        self._pool = ThreadPoolExecutor(
            max_workers=config.decode_workers, thread_name_prefix="alscout-decode"
        )

    def call_budget(self) -> PixelBudget:
        """A new call's budget of pixels in flight."""
        return PixelBudget(
            self.call_pixel_budget,
            "call_pixel_budget",
            "this call's frames in flight hold its budget: wait for their results before "
            "sending more",
        )

    async def admit(
        self, frame: pb.Frame, budget: PixelBudget, enqueue: Enqueue
    ) -> tuple[asyncio.Future[BatchedScore], Decoded]:
        """Charge, decode and enqueue ``frame``: its score's future and what was decoded.

        ``budget``: the call's (:meth:`call_budget`). ``enqueue``: hands the RGB pixels
        to the batcher and returns the future of their score; the charge is released
        when that future is done. Raises :class:`InvalidInputError` for a bad frame
        (over ``max_pixels`` included) and :class:`CapacityError` naming the budget
        that had no room.
        """
        width, height = declared_size(frame, self.max_pixels)
        pixels = width * height
        what = f"frame {frame.frame_index} ({width}x{height})"
        until = time.monotonic() + self.wait_s
        charge = _Charge()
        try:
            await self._take(budget, pixels, until, what, charge)
            image, fmt, raw, decode_ms, w, h = await self._decode(
                frame, pixels, until, what, charge
            )
            future = await enqueue(image)
        except BaseException:
            charge.release()
            raise
        future.add_done_callback(lambda _: charge.release())
        self.metrics.latency.labels(stage="decode").observe(decode_ms / 1000.0)
        return future, Decoded(fmt, raw, w, h, decode_ms)

    def close(self) -> None:
        """Stop the decode threads (after the calls have drained)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _decode(
        self, frame: pb.Frame, pixels: int, until: float, what: str, charge: _Charge
    ) -> tuple[np.ndarray, str, pb.RawImage, float, int, int]:
        """Take a large-frame slot if needed, then the server's budget, then decode."""
        loop = asyncio.get_running_loop()
        large = pixels > self.large_frame_pixels
        if large:  # before the server's budget, so a large frame waiting holds none of it
            await self._take(self.large_slots, 1, until, what, None)
        try:
            await self._take(self.server_budget, pixels, until, what, charge)
            job = self._pool.submit(self._decode_and_shrink, frame)
        except BaseException:
            if large:
                self.large_slots.give(1)
            raise
        if large:  # held until the decode ends, even if its call is gone
            job.add_done_callback(_on_loop(loop, lambda: self.large_slots.give(1)))
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            if not job.done():  # the pixels are being decoded: charged until that ends
                job.add_done_callback(_on_loop(loop, charge.hand_over().release))
            raise

    def _decode_and_shrink(
        self, frame: pb.Frame
    ) -> tuple[np.ndarray, str, pb.RawImage, float, int, int]:
        """Decode (in a decode thread), then shrink to :attr:`target_size` if larger.

        Returns the image, format, image message, decode ms and the decoded width and
        height (the frame's own size, which results report).
        """
        image, fmt, raw, decode_ms = self.decode(frame, self.max_pixels, self.metadata_limits)
        w, h = (raw.width, raw.height) if fmt == "raw" else (image.shape[1], image.shape[0])
        if self.target_size is not None:
            height, width = self.target_size()
            if height * width < image.shape[0] * image.shape[1]:
                image = resize_frame(image, height, width)
        return image, fmt, raw, decode_ms, w, h

    async def _take(
        self, budget: PixelBudget, amount: int, until: float, what: str, charge: _Charge | None
    ) -> None:
        try:
            await budget.take(amount, until, what)
        except CapacityError:
            self.metrics.rejected.labels(reason=budget.name).inc()
            raise
        if charge is not None:
            charge.add(budget, amount)


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> Callable[[Future], None]:
    """A done callback of a thread's future that runs ``fn`` in ``loop``."""

    def callback(_: Future) -> None:
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed: nothing waits for the budget any more
            log.debug("decode finished after its event loop closed")

    return callback
