"""What the attack benches share: the server process, RSS polling, paced and hostile streams.

Used by bench/attacks.py; nothing here prints.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import grpc
import numpy as np

from alscout.server._proto import alscout_pb2 as pb

__all__ = [
    "BombStream",
    "PacedStream",
    "RssSampler",
    "Server",
    "box_state",
    "idle_rss_mb",
    "percentiles",
    "png_bomb",
    "rss_kb",
    "table",
]


# -- the box and the server ------------------------------------------------------------


def box_state() -> str:
    """Uptime, load averages and cores: printed first, so a busy box shows."""
    up = float(Path("/proc/uptime").read_text().split()[0])
    load1, load5, load15 = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"box: up {up / 3600:.1f} h, load {load1} {load5} {load15}, {os.cpu_count()} cores "
        f"(a load near the core count makes latencies meaningless)"
    )


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB; 0 when it is gone."""
    try:
        found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


class Server:
    """``alscout serve`` in a subprocess, its log in ``folder/server.log``."""

    def __init__(
        self, model: Path, folder: Path, extra: Sequence[str] = (), env: dict | None = None
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.target = f"127.0.0.1:{port}"
        self.log_path = folder / "server.log"
        command = [sys.executable, "-m", "alscout.apps.cli", "-v", "serve", "--model", str(model)]
        command += ["--host", "127.0.0.1", "--port", str(port), "--backend", "onnxruntime-cpu"]
        command += ["--threads", "1", "--grace", "2", "--outbox", str(folder / "outbox")]
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, *extra], env={**os.environ, **(env or {})}, stdout=out, stderr=out
            )
        with grpc.insecure_channel(self.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=120)
            except grpc.FutureTimeoutError:
                self.process.kill()
                raise SystemExit(f"attacks.py: the server did not start:\n{self.tail()}") from None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")

    def errors(self) -> list[str]:
        """Distinct ERROR lines of the log."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return list(
            dict.fromkeys(line.split(" ERROR ", 1)[1][:200] for line in lines if " ERROR " in line)
        )

    def stop(self) -> int | None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


class RssSampler:
    """Polls a process's RSS every ``period`` seconds in a thread: samples and the peak."""

    def __init__(self, pid: int, period: float = 0.1) -> None:
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int]] = []
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            kb = rss_kb(self.pid)
            self.samples.append((time.monotonic(), kb))
            self.peak = max(self.peak, kb)
            self._stop.wait(self.period)

    def reset_peak(self) -> None:
        self.peak = rss_kb(self.pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def idle_rss_mb(pid: int, seconds: float = 1.0) -> float:
    """Median RSS over ``seconds`` (a few samples), in MB."""
    samples = []
    for _ in range(5):
        samples.append(rss_kb(pid))
        time.sleep(seconds / 5)
    return float(np.median(samples)) / 1024


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) of ``ms``; NaN when empty."""
    if not ms:
        return float("nan"), float("nan"), float("nan")
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# -- streams ---------------------------------------------------------------------------


class PacedStream:
    """A well-behaved vehicle: one stream at ``fps``, a new recording every
    ``recording_frames`` frames; latency = frame written -> its result read."""

    def __init__(self, stub, name: str, frames: list[bytes], fps: float, recording_frames: int):
        self.stub, self.name, self.frames = stub, name, frames
        self.fps, self.recording_frames = fps, recording_frames
        self.latencies: list[tuple[float, float]] = []  # (monotonic time, ms)
        self.errors: list[str] = []
        self.sent = 0

    async def run(self, stop_at: float) -> None:
        schedule = time.monotonic()
        recording = 0
        while time.monotonic() < stop_at:
            schedule = await self._recording(f"{self.name}-r{recording}", schedule, stop_at)
            recording += 1

    async def _recording(self, recording_id: str, schedule: float, stop_at: float) -> float:
        call = self.stub.ScoreStream()
        written: dict[int, float] = {}

        async def read() -> None:
            async for result in call:
                if not result.end_of_stream and result.frame_index in written:
                    now = time.monotonic()
                    self.latencies.append((now, 1000 * (now - written.pop(result.frame_index))))

        reader = asyncio.create_task(read())
        try:
            for i in range(self.recording_frames):
                schedule += 1 / self.fps
                delay = schedule - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -1.0:  # a second behind: do not burst to catch up
                    schedule = time.monotonic()
                if time.monotonic() >= stop_at or reader.done():
                    break
                data = self.frames[(self.sent + i) % len(self.frames)]
                frame = pb.Frame(recording_id=recording_id, camera_id="cam0", frame_index=i)
                frame.encoded.data, frame.encoded.encoding = data, pb.ENCODING_JPEG
                written[i] = time.monotonic()
                await call.write(frame)
                self.sent += 1
            await call.done_writing()
            await reader
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            reader.cancel()
            code = await call.code()
            self.errors.append(f"{code.name}: {await call.details()}"[:200])
            await asyncio.sleep(0.5)  # then a new recording, as a vehicle would
        return schedule


class BombStream:
    """A hostile client: PNG bombs on one call after another, ``window`` in flight."""

    def __init__(self, stub, name: str, bomb: bytes, window: int) -> None:
        self.stub, self.name, self.bomb, self.window = stub, name, bomb, window
        self.sent = self.scored = self.calls = 0
        self.codes: Counter = Counter()
        self.messages: dict[str, str] = {}

    async def run(self, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            await self._call(stop_at)
            await asyncio.sleep(0.05)

    async def _call(self, stop_at: float) -> None:
        self.calls += 1
        call = self.stub.ScoreStream()
        room = asyncio.Semaphore(self.window)

        async def read() -> None:
            try:
                async for result in call:
                    if not result.end_of_stream:
                        self.scored += 1
                        room.release()
            finally:
                for _ in range(self.window):  # a writer waiting for room sees the end
                    room.release()

        reader = asyncio.create_task(read())
        try:
            i = 0
            while time.monotonic() < stop_at and not reader.done():
                await room.acquire()
                frame = pb.Frame(recording_id=f"{self.name}-c{self.calls}", camera_id="cam0")
                frame.frame_index = i
                frame.encoded.data, frame.encoded.encoding = self.bomb, pb.ENCODING_PNG
                await call.write(frame)
                self.sent += 1
                i += 1
            await call.done_writing()
            await reader
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            reader.cancel()
        code = await call.code()
        self.codes[code.name] += 1
        self.messages.setdefault(code.name, (await call.details() or "")[:240])


def png_bomb(width: int, height: int) -> bytes:
    """A PNG of ``width`` x ``height`` pixels of one colour, compressed as far as PNG goes."""
    pixels = np.full((height, width, 3), (40, 90, 160), dtype=np.uint8)
    ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("cv2 could not encode the PNG bomb")
    return data.tobytes()
