"""The uploader: drains a :class:`DurableOutbox` to a :class:`~alscout.storage.sinks.Sink`.

A background thread (:meth:`Uploader.start`) or its own process::

    python -m alscout.server.uploader --outbox DIR --sink URL [--once] [--bandwidth BYTES_PER_S]

Frames go highest score first. Each frame's files go to ``blobs/<sha256><suffix>``
(content-addressed: the same bytes always land on the same key, so a repeat is harmless
and shared bytes travel once), then its JSON record to
``frames/<recording>/<camera>/<frame:012d>.json``; only when the sink has confirmed all
of them is the frame marked uploaded. A crash at any point therefore repeats at most
the uploads of one frame, onto the same keys. Failures back off exponentially with full
jitter; a token bucket caps the average bandwidth. A frame the sink refuses for good
(:class:`~alscout.storage.sinks.SinkRefusedError`, e.g. a key it does not allow) is
parked in the outbox with the reason, counted, and the frames behind it go on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from alscout.errors import AlscoutError, ConfigError, DataError, SinkError
from alscout.server.durable_outbox import DurableOutbox, StoredFrame
from alscout.storage.backoff import Backoff
from alscout.storage.layout import blob_key, record_key
from alscout.storage.sinks import Sink, SinkRefusedError, check_key

__all__ = [
    "UploaderConfig",
    "TokenBucket",
    "Uploader",
    "configure",
    "run",
    "summary",
    "main",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploaderConfig:
    """Settings of the uploader; validated on construction.

    ``poll_s``: seconds between looks at an empty outbox. ``bandwidth_bytes_per_s``:
    average upload rate cap (None: uncapped); ``burst_bytes``: how far above the rate a
    burst may go. ``backoff_base_s``/``backoff_cap_s``: the retry delay after the n-th
    consecutive failure is uniform in [0, min(cap, base * 2**n)] seconds.
    ``batch``: frames read from the index at a time.
    """

    poll_s: float = 2.0
    bandwidth_bytes_per_s: float | None = None
    burst_bytes: int = 1024 * 1024
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    batch: int = 32

    def __post_init__(self) -> None:
        for name in ("poll_s", "backoff_base_s", "backoff_cap_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        rate = self.bandwidth_bytes_per_s
        if rate is not None and (isinstance(rate, bool) or not rate > 0):
            raise ConfigError(f"bandwidth_bytes_per_s must be > 0 or None, got {rate!r}")
        for name in ("burst_bytes", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class TokenBucket:
    """Caps a byte rate: ``rate`` bytes/s on average, bursts of up to ``burst`` bytes."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()

    def acquire(self, nbytes: int) -> float:
        """Wait until ``nbytes`` may be sent; returns the seconds waited."""
        waited = 0.0
        while nbytes > 0:
            take = min(nbytes, self.burst)
            self._refill()
            if self._tokens < take:
                pause = (take - self._tokens) / self.rate
                self._sleep(pause)
                waited += pause
                self._refill()
            self._tokens -= take
            nbytes -= take
        return waited

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now


class Uploader:
    """Moves frames from ``outbox`` to ``sink``; metrics on ``registry`` when given."""

    def __init__(
        self,
        outbox: DurableOutbox,
        sink: Sink,
        config: UploaderConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.config = config or UploaderConfig()
        self.backoff = Backoff(
            self.config.backoff_base_s,
            self.config.backoff_cap_s,
            rng if rng is not None else np.random.default_rng(),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bucket = None
        if self.config.bandwidth_bytes_per_s is not None:
            self.bucket = TokenBucket(
                self.config.bandwidth_bytes_per_s, self.config.burst_bytes, sleep=self._stop.wait
            )
        registry = registry if registry is not None else CollectorRegistry()
        self.uploaded = Counter(
            "alscout_upload_frames", "Frames the sink confirmed", registry=registry
        )
        self.bytes = Counter(
            "alscout_upload_bytes", "Bytes sent to the sink (files and records)", registry=registry
        )
        self.failures = Counter(
            "alscout_upload_failures", "Failed upload attempts", registry=registry
        )
        self.retries = Counter(
            "alscout_upload_retries", "Upload attempts repeated after a failure", registry=registry
        )
        self.backlog_frames = Gauge(
            "alscout_upload_backlog_frames", "Frames waiting for upload", registry=registry
        )
        self.backlog_bytes = Gauge(
            "alscout_upload_backlog_bytes", "Bytes waiting for upload", registry=registry
        )
        self.evicted = Gauge(
            "alscout_outbox_evicted_frames",
            "Frames the outbox evicted under its quota (all time, from the index)",
            registry=registry,
        )
        self.parked = Counter(
            "alscout_upload_parked_frames",
            "Frames the sink refused for good, parked in the outbox",
            registry=registry,
        )
        self.parked_now = Gauge(
            "alscout_outbox_parked_frames",
            "Frames parked in the outbox (from the index)",
            registry=registry,
        )

    # ----------------------------------------------------------------- one pass

    def upload_frame(self, frame: StoredFrame) -> bool:
        """Send one frame's files and record, then mark it uploaded.

        Returns False when the frame left the queue meanwhile (evicted), its files are
        corrupt (it is marked so) or the sink refused it for good (it is parked); raises
        the sink's error when an upload failed and may succeed later.
        """
        try:
            self._send_frame(frame)
        except SinkRefusedError as error:
            self._park(frame, error)
            return False
        except DataError as error:
            if self.outbox.state_of(frame.id) == "pending":
                self.outbox.mark_corrupt(frame.id, str(error))
            else:
                log.info("frame left the outbox before upload id=%d", frame.id)
            return False
        self.outbox.mark_uploaded(frame.id)
        self.uploaded.inc()
        log.info(
            "frame uploaded recording=%s camera=%s frame=%d bytes=%d",
            frame.recording_id,
            frame.camera_id,
            frame.frame_index,
            frame.nbytes,
        )
        return True

    def drain(self, stop: threading.Event | None = None) -> int:
        """Upload until the outbox is empty (or ``stop`` is set); returns frames uploaded.

        A failed upload is retried after a backoff delay, as long as it takes: a car
        out of coverage waits, it does not drop frames.
        """
        stop = stop or self._stop
        done = 0
        while not stop.is_set():
            batch = self.outbox.pending(self.config.batch)
            self._update_backlog()
            if not batch:
                break
            for frame in batch:
                attempt = 0
                while not stop.is_set():
                    try:
                        done += self.upload_frame(frame)
                        break
                    except (SinkError, OSError) as error:
                        self.failures.inc()
                        delay = self.backoff.delay(attempt)
                        log.warning(
                            "upload failed frame_id=%d attempt=%d retry_in_s=%.2f error=%s",
                            frame.id,
                            attempt + 1,
                            delay,
                            error,
                        )
                        attempt += 1
                        if stop.wait(delay):
                            break
                        self.retries.inc()
                if stop.is_set():
                    break
        self._update_backlog()
        return done

    def _send_frame(self, frame: StoredFrame) -> None:
        """Files first, then the record; raises DataError for a file that fails its hash."""
        record_name = check_key(record_key(frame.recording_id, frame.camera_id, frame.frame_index))
        keys = {}
        for ref in frame.blobs:
            data = self.outbox.read_blob(ref)
            key = blob_key(ref.name)
            if not self.sink.has(key, ref.sha256):
                self._send(key, data, ref.sha256)
            keys[ref.role] = key
        record = json.dumps(frame.record | {"keys": keys}, sort_keys=True).encode("utf-8")
        self._send(record_name, record, hashlib.sha256(record).hexdigest())

    def _park(self, frame: StoredFrame, error: SinkRefusedError) -> None:
        """Take a frame no retry can send out of the queue; the ones behind it go on."""
        if self.outbox.state_of(frame.id) != "pending":
            log.info("frame left the outbox before upload id=%d", frame.id)
            return
        self.outbox.mark_parked(frame.id, str(error))
        self.parked.inc()
        log.error(
            "frame parked: the sink refuses it for good recording=%s camera=%s frame=%d error=%s",
            frame.recording_id,
            frame.camera_id,
            frame.frame_index,
            error,
        )

    # ----------------------------------------------------------------- background

    def run(self, stop: threading.Event | None = None) -> None:
        """Drain, wait ``poll_s``, repeat until ``stop`` is set."""
        stop = stop or self._stop
        while not stop.is_set():
            try:
                self.drain(stop)
            except Exception:  # keep the worker alive; the next pass retries
                log.exception("uploader pass failed")
                self.failures.inc()
            stop.wait(self.config.poll_s)

    def start(self) -> None:
        """Run :meth:`run` in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="alscout-uploader", daemon=True)
        self._thread.start()

    @property
    def stop_event(self) -> threading.Event:
        """The event :meth:`run` and :meth:`drain` stop on by default, and the one the
        bandwidth cap's waits end on: a caller that stops the uploader from outside
        (a signal handler) sets this one, so a long rate-limit pause ends at once."""
        return self._stop

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread after the object being sent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _send(self, key: str, data: bytes, sha256: str) -> None:
        if self.bucket is not None:
            self.bucket.acquire(len(data))
        self.sink.put(key, data, sha256)
        self.bytes.inc(len(data))

    def _update_backlog(self) -> None:
        status = self.outbox.status()
        self.backlog_frames.set(status.counts["pending"])
        self.backlog_bytes.set(status.pending_bytes)
        self.evicted.set(status.counts["evicted"])
        self.parked_now.set(status.counts["parked"])


# --------------------------------------------------------------------------- process


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of the uploader process (also ``alscout outbox upload``)."""
    parser.add_argument("--outbox", required=True, metavar="DIR", help="the outbox folder")
    parser.add_argument(
        "--sink", required=True, metavar="URL", help="a folder, file:///path or s3://bucket/prefix"
    )
    parser.add_argument("--once", action="store_true", help="drain the outbox, then exit")
    parser.add_argument("--bandwidth", type=float, metavar="BYTES_PER_S", help="rate cap")
    parser.add_argument("--poll", type=float, default=2.0, metavar="S", help="idle poll period")
    parser.add_argument("--metrics-port", type=int, metavar="PORT", help="serve /metrics here")


def run(args: argparse.Namespace) -> int:
    """Run the uploader until SIGTERM/SIGINT (or, with ``--once``, until drained)."""
    import signal

    from prometheus_client import start_http_server

    from alscout.storage.sinks import open_sink

    config = UploaderConfig(poll_s=args.poll, bandwidth_bytes_per_s=args.bandwidth)
    registry = CollectorRegistry()
    sink = open_sink(args.sink)
    with DurableOutbox(args.outbox, registry=registry) as outbox:
        uploader = Uploader(outbox, sink, config, registry=registry)
        if args.metrics_port is not None:
            start_http_server(args.metrics_port, registry=registry)
        stop = uploader.stop_event  # also ends a bandwidth-cap pause at once

        def work() -> None:
            if args.once:
                started = time.monotonic()
                uploaded = uploader.drain(stop)
                log.info("outbox drained uploaded=%d sink=%r", uploaded, sink)
                sys.stdout.write(summary(uploader, uploaded, time.monotonic() - started) + "\n")
            else:
                uploader.run(stop)

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            _run_beside_signals(work)
        else:
            work()
    return 0


def _run_beside_signals(work: Callable[[], None]) -> None:
    """Run ``work`` in a thread while the main thread only waits for it.

    A signal handler runs in the main thread between bytecodes. Had the main thread
    been inside ``stop.wait()`` holding the event's (non-reentrant) lock when SIGTERM
    came, the handler's ``stop.set()`` would wait for that lock forever: the uploader
    hung on SIGTERM about once in a few hundred stops with ``--poll 0.01`` (the crash
    harness saw it). Here the main thread holds no lock of ``stop``'s while it waits.
    Exceptions of ``work`` are raised here.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 (handed to the main thread, raised there)
            errors.append(error)

    worker = threading.Thread(target=target, name="alscout-uploader-main")
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if errors:
        raise errors[0]


def summary(uploader: Uploader, uploaded: int, seconds: float) -> str:
    """One line on a drain: frames and bytes sent, what is left, failed attempts."""
    status = uploader.outbox.status()
    counts = status.counts
    return (
        f"uploaded {uploaded} frames ({_total(uploader.bytes)} bytes) to "
        f"{uploader.sink!r} in {seconds:.1f} s; left: {counts['pending']} pending "
        f"({status.pending_bytes} bytes), {counts['parked']} parked, {counts['corrupt']} "
        f"corrupt; {_total(uploader.failures)} failed attempts"
    )


def _total(counter: Counter) -> int:
    """A counter's value (its ``_total`` sample)."""
    samples = [s for m in counter.collect() for s in m.samples if s.name.endswith("_total")]
    return int(sum(s.value for s in samples))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m alscout.server.uploader``."""
    parser = argparse.ArgumentParser(
        prog="python -m alscout.server.uploader", description=__doc__.splitlines()[0]
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    configure(parser)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except AlscoutError as error:
        sys.stderr.write(f"uploader: {error}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
