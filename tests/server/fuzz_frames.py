"""Fuzz the real scoring server with malformed frames beside a clean stream (issue #13).

A run starts ``alscout serve`` (the tests' tiny ONNX model on ONNX Runtime, a
DurableOutbox, the crash harness's settings, a ``torch`` first on its path that refuses
to be imported) and:

1. streams a clean recording alone: the reference (its decisions must also equal
   ``flag_recording`` over the z it got);
2. runs ``--streams`` fuzz streams concurrently, each on its own channel, sending the
   seeded messages of :class:`fuzz_mutator.Mutator` as raw bytes (no serializer on the
   client, so malformed protobuf reaches the server) in lockstep: one message, then its
   answer, so the status that ends a call is the server's (a write racing the end of a
   call makes grpc's asyncio client report INTERNAL itself). A call that ends with a
   status is counted and the stream opens a new one; some messages go to unary Score;
3. meanwhile streams the clean recording again and again under new recording ids; every
   pass must get the reference's decisions and z.

It reports frames sent, calls, the status-code histogram (and which mutations ended
calls with each code), INTERNAL/UNKNOWN answers, the server's own error counters and
ERROR log lines, whether the server is alive at the end, its RSS (``/proc/<pid>/status``
VmRSS) at start, end and peak, and the clean stream's verdict. Exit status 0 when the
server is alive, no answer was INTERNAL or UNKNOWN and the clean decisions are identical.

    .venv/bin/python tests/server/fuzz_frames.py --frames 100000 --streams 4 --seed 1 \\
        [--json OUT] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
for _folder in (HERE.parent, HERE):  # tests/ for shared_inputs, this folder for crash_procs
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from crash_procs import NO_TORCH, SERVE_TOML, Child, free_port, recording  # noqa: E402
from fuzz_mutator import Mutator  # noqa: E402
from fuzz_report import FuzzConfig, FuzzReport, Tally  # noqa: E402

from alscout.runtime.temporal import SelectorConfig, flag_recording  # noqa: E402
from alscout.server._proto import alscout_pb2 as pb  # noqa: E402
from alscout.server._proto import alscout_pb2_grpc  # noqa: E402

__all__ = ["FuzzRun", "main", "rss_kb"]

log = logging.getLogger(__name__)

STREAM_METHOD = "/alscout.v1.Scorer/ScoreStream"
SCORE_METHOD = "/alscout.v1.Scorer/Score"
SELECTOR = SelectorConfig(**tomllib.loads(SERVE_TOML)["selector"])
#: frames the clean stream keeps in flight
CLEAN_WINDOW = 4
#: tries of a fresh call refused ALREADY_EXISTS at its first message
BUSY_RETRIES = 5


def rss_kb(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (VmRSS), 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


class FuzzStream:
    """One fuzz stream: the mutator's events, one call after another, in lockstep.

    A fresh call refused ALREADY_EXISTS at its first message (the stream's previous
    call, ended an instant ago, still holds the recording on the server) is tried again
    with the same message after a backoff, as ``ScorerClient`` does; the refusal is
    counted all the same.
    """

    def __init__(self, target: str, mutator: Mutator, budget: int, tally: Tally, timeout_s: float):
        self.target, self.mutator, self.budget = target, mutator, budget
        self.tally, self.timeout_s = tally, timeout_s

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stream = channel.stream_stream(
                STREAM_METHOD,
                request_serializer=None,
                response_deserializer=pb.FrameResult.FromString,
            )
            score = channel.unary_unary(
                SCORE_METHOD,
                request_serializer=None,
                response_deserializer=pb.FrameResult.FromString,
            )
            call = None
            for _ in range(self.budget):
                event = self.mutator.next()
                while event.action in ("half_close", "cancel"):  # not messages: no budget
                    self.tally.mutations["call"] += 1
                    if call is not None and event.action == "half_close":
                        await self._finish(call, event.kind)
                    elif call is not None:
                        call.cancel()
                        self.tally.ended("ScoreStream", "CANCELLED", event.kind, "by the client")
                    call = None
                    event = self.mutator.next()
                self.tally.mutations[event.kind.split(".")[0]] += 1
                began = time.perf_counter()
                if event.action == "unary":
                    self.tally.frames_sent += 1
                    await self._unary(score, event.payload, event.kind)
                    self.tally.seconds[event.kind] += time.perf_counter() - began
                    continue
                for attempt in range(BUSY_RETRIES + 1):
                    fresh = call is None
                    if fresh:
                        call = stream()
                        self.tally.calls["ScoreStream"] += 1
                    self.tally.frames_sent += 1
                    code = await self._send(call, event.payload, event.kind)
                    if code is not None:
                        call = None
                    if code != "ALREADY_EXISTS" or not fresh or attempt == BUSY_RETRIES:
                        break
                    self.tally.busy_retries += 1
                    await asyncio.sleep(0.01 * 2**attempt)
                self.tally.seconds[event.kind] += time.perf_counter() - began
            if call is not None:
                await self._finish(call, "end")

    async def _send(self, call, payload: bytes, kind: str) -> str | None:
        """Write one message and read its answer; the status code when the call ended."""
        try:
            await call.write(payload)
            answer = await asyncio.wait_for(call.read(), self.timeout_s)
        except TimeoutError:
            return self._hang(call, kind)
        except grpc.aio.AioRpcError as error:
            return self._ended(error.code(), kind, error.details())
        except asyncio.InvalidStateError:  # the call had ended before the write
            pass
        else:
            if answer is not grpc.aio.EOF:
                self._learn(answer)
                return None
        return self._ended(await call.code(), kind, await call.details())

    async def _finish(self, call, kind: str) -> None:
        """Half-close and read the closing results until the status."""
        try:
            await call.done_writing()
            while (
                answer := await asyncio.wait_for(call.read(), self.timeout_s)
            ) is not grpc.aio.EOF:
                self._learn(answer)
        except TimeoutError:
            self._hang(call, kind)
            return
        except grpc.aio.AioRpcError as error:
            self._ended(error.code(), kind, error.details())
            return
        self._ended(await call.code(), kind, await call.details())

    async def _unary(self, score, payload: bytes, kind: str) -> None:
        self.tally.calls["Score"] += 1
        try:
            await score(payload, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                self.tally.hangs += 1
                self.tally.ended("Score", "HANG", kind, f"no answer in {self.timeout_s} s")
            else:
                self.tally.ended("Score", error.code().name, kind, error.details() or "")
            return
        self.tally.ended("Score", "OK", kind, "")

    def _ended(self, code: grpc.StatusCode, kind: str, details: str | None) -> str:
        self.tally.ended("ScoreStream", code.name, kind, details or "")
        return code.name

    def _hang(self, call, kind: str) -> str:
        self.tally.hangs += 1
        call.cancel()
        self.tally.ended("ScoreStream", "HANG", kind, f"no answer in {self.timeout_s} s")
        return "HANG"

    def _learn(self, answer: pb.FrameResult) -> None:
        """Keep the stream's resume token, so a later resume can carry the right one."""
        token = getattr(answer, "resume_token", "")
        if token:
            self.mutator.tokens[(answer.recording_id, answer.camera_id)] = token


async def clean_pass(
    target: str, name: str, frames: list[bytes], fps: float = 0.0
) -> tuple[dict[int, float], dict[int, tuple[bool, str, float]]]:
    """Stream ``frames`` as recording ``name`` (at ``fps``, 0: as fast as answered, at
    most :data:`CLEAN_WINDOW` in flight): (z by frame, final decision by frame).

    A decision is ``(FLAGGED?, reason, smoothed)``. Raises ``grpc.aio.AioRpcError``.
    """
    z: dict[int, float] = {}
    decisions: dict[int, tuple[bool, str, float]] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        call = alscout_pb2_grpc.ScorerStub(channel).ScoreStream()
        window = asyncio.Semaphore(CLEAN_WINDOW)

        async def read() -> None:
            try:
                async for result in call:
                    if not result.end_of_stream:
                        z[result.frame_index] = result.z
                        window.release()
                    for d in result.final_decisions:
                        decided = (d.decision == pb.DECISION_FLAGGED, d.reason, d.smoothed)
                        decisions[d.frame_index] = decided
            finally:
                for _ in range(CLEAN_WINDOW):  # a writer waiting for room sees the end
                    window.release()

        reader = asyncio.create_task(read())
        started = time.perf_counter()
        try:
            for i, data in enumerate(frames):
                if fps > 0:
                    await asyncio.sleep(max(0.0, started + i / fps - time.perf_counter()))
                await window.acquire()
                if reader.done():
                    break
                image = pb.EncodedImage(data=data, encoding=pb.ENCODING_JPEG)
                frame = pb.Frame(recording_id=name, camera_id="front", frame_index=i, encoded=image)
                await call.write(frame)
            else:
                await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the call ended: the reader raises its status
        await reader
    return z, decisions


def offline(z: list[float]) -> dict[int, tuple[bool, str, float]]:
    """The offline rule's decisions over ``z``, in :func:`clean_pass`'s form."""
    return {d.frame: (d.flagged, str(d.reason), d.smoothed) for d in flag_recording(z, SELECTOR)}


def same(a: tuple[bool, str, float], b: tuple[bool, str, float]) -> bool:
    return a[:2] == b[:2] and bool(np.isclose(a[2], b[2], rtol=1e-6, atol=1e-9))


class FuzzRun:
    """One fuzzing run against a fresh server in ``folder`` with the model at ``model``."""

    def __init__(
        self, config: FuzzConfig, folder: Path, model: Path, progress: bool = False
    ) -> None:
        self.config = config
        self.progress = progress  # a bar of frames sent on stderr
        self.folder = folder
        self.report = FuzzReport(config)
        self.metrics_port = free_port()
        self.server, self.target = fuzz_server(folder, model, self.metrics_port)
        self.frames = recording(7, config.clean_frames)

    def run(self) -> FuzzReport:
        """Start the server, fuzz, stop it (SIGTERM; SIGKILL if it will not stop)."""
        started = time.monotonic()
        self.server.start()
        try:
            self.server.wait_for(b"server started")
            pid = self.server.process.pid
            self.report.rss_kb["start"] = rss_kb(pid)
            asyncio.run(self._run(pid))
            self.report.server_alive = self.server.alive
            self.report.rss_kb["end"] = rss_kb(pid)
            self.report.server_errors = self._server_errors()
            self.server.signal(signal.SIGTERM)
            self.report.server_exit = self.server.wait(60)
        finally:
            if self.server.alive:
                self.server.signal(signal.SIGKILL)
                self.server.wait()
            self.report.server_log_errors = self._log_errors()
        self.report.wall_s = time.monotonic() - started
        return self.report

    async def _run(self, pid: int) -> None:
        peak = asyncio.create_task(self._sample(pid))
        try:
            reference_z, reference = await clean_pass(self.target, "clean-ref", self.frames)
            z = [reference_z[i] for i in range(len(self.frames))]
            clean = self.report.clean
            expected = offline(z)
            clean.reference_offline_mismatch = sum(
                not same(reference[i], want) for i, want in expected.items()
            )
            c = self.config
            budgets = [c.frames // c.streams + (s < c.frames % c.streams) for s in range(c.streams)]
            tally = self.report.tally
            fuzzers = [
                FuzzStream(self.target, Mutator(c.seed, s), budget, tally, c.answer_timeout_s)
                for s, budget in enumerate(budgets)
            ]
            done = asyncio.Event()
            cleaner = asyncio.create_task(self._clean_passes(reference_z, reference, done))
            try:
                await asyncio.gather(*(fuzzer.run() for fuzzer in fuzzers))
            finally:
                done.set()
                await cleaner
        finally:
            peak.cancel()

    async def _clean_passes(
        self, reference_z: dict[int, float], reference: dict, done: asyncio.Event
    ) -> None:
        """Stream the clean recording until the fuzzers are done (at least once)."""
        clean = self.report.clean
        while clean.passes == 0 or not done.is_set():
            name = f"clean-{clean.passes:03d}"
            clean.passes += 1
            try:
                z, decisions = await clean_pass(
                    self.target, name, self.frames, self.config.clean_fps
                )
            except grpc.aio.AioRpcError as error:
                clean.errors.append(f"{name}: {error.code().name}: {error.details()}")
                continue
            clean.frames += len(z)
            for i, want in reference_z.items():
                if i not in z:
                    clean.mismatches.append(f"{name} frame {i}: no result")
                else:
                    clean.max_z_diff = max(clean.max_z_diff, abs(z[i] - want))
            for i, want in reference.items():
                got = decisions.get(i)
                if got is None or not same(got, want):
                    clean.mismatches.append(f"{name} frame {i}: got {got}, reference {want}")

    async def _sample(self, pid: int) -> None:
        """Track the server's peak RSS (and move the progress bar) until cancelled."""
        tally, rss = self.report.tally, self.report.rss_kb
        with tqdm(
            total=self.config.frames, unit="frame", disable=not self.progress, file=sys.stderr
        ) as bar:
            while True:
                rss["peak"] = max(rss.get("peak", 0), rss_kb(pid))
                bar.update(tally.frames_sent - bar.n)
                bar.set_postfix(calls=sum(tally.calls.values()), bad=tally.bad, refresh=False)
                await asyncio.sleep(0.25)

    def _server_errors(self) -> dict[str, float]:
        """``alscout_errors_total`` by code, scraped from the server's /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                text = answer.read().decode()
        except OSError as error:  # a dead server: the report says so elsewhere
            log.warning("no metrics from the server: %s", error)
            return {}
        found = re.findall(r'^alscout_errors_total\{code="(\w+)"\} (\S+)$', text, re.MULTILINE)
        return {code: float(value) for code, value in sorted(found)}

    def _log_errors(self) -> list[str]:
        """Distinct ERROR lines of the server's log (timestamps cut off)."""
        seen: dict[str, None] = {}
        for line in self.server.log_path.read_text(errors="replace").splitlines():
            if " ERROR " in line or line.startswith("Traceback"):
                seen.setdefault(line.split(" ERROR ", 1)[-1][:300], None)
        return list(seen)


def fuzz_server(folder: Path, model: Path, metrics_port: int) -> tuple[Child, str]:
    """(server, ``host:port``): ``alscout serve`` not started, a DurableOutbox and a
    no-torch path under ``folder``, metrics on ``metrics_port``."""
    no_torch = folder / "no-torch" / "torch"
    no_torch.mkdir(parents=True, exist_ok=True)
    (no_torch / "__init__.py").write_text(NO_TORCH)
    path = os.pathsep.join(filter(None, [str(no_torch.parent), os.environ.get("PYTHONPATH")]))
    (folder / "serve.toml").write_text(SERVE_TOML)
    port = free_port()
    command = [sys.executable, "-m", "alscout.apps.cli", "-v", "serve"]
    command += ["--config", str(folder / "serve.toml"), "--model", str(model)]
    outbox = tempfile.mkdtemp(prefix="outbox-", dir=folder)  # new: no earlier frames
    command += ["--port", str(port), "--outbox", outbox]
    command += ["--metrics-port", str(metrics_port)]
    command += ["--workers", "2"]  # the server's default (the crash harness's TOML has 1)
    server = Child("server", command, folder, dict(os.environ, PYTHONPATH=path))
    return server, f"127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    """Run, print the table (and the JSON summary with --json); exit 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="messages of all fuzz streams")
    parser.add_argument("--streams", type=int, default=4, help="fuzz streams (plus one clean)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clean-frames", type=int, default=120, help="frames per clean pass")
    parser.add_argument(
        "--clean-fps", type=float, default=30.0, help="clean stream's rate (0: max)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the outbox and server log here")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    from shared_inputs import write_tiny_detector

    config = FuzzConfig(
        frames=args.frames,
        streams=args.streams,
        seed=args.seed,
        clean_frames=args.clean_frames,
        clean_fps=args.clean_fps,
    )
    with tempfile.TemporaryDirectory(prefix="alscout-fuzz-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = write_tiny_detector(folder / "tiny.onnx")
        report = FuzzRun(config, folder, model, progress=True).run()
    sys.stdout.write(report.table() + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report.summary(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
