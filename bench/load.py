"""Load on the scoring service: N concurrent streams at F fps for D seconds over gRPC.

Reports the achieved frames/s, per-frame latency (frame written -> its result read)
p50/p99/p99.9, errors, and, measured in the same run on the same machine with the same
model and pipeline settings, the in-process pipeline's throughput (decode + score in
``--workers`` threads sharing one ``ScoringPipeline``, as the server's scoring threads
do) and the ratio gRPC / in-process.

Without ``--server`` the bench starts ``alscout serve`` in a subprocess on a free
loopback port (the vehicle's layout: server and client in separate processes) and stops
it at the end. ``--fps 0`` sends as fast as the server takes frames (each stream keeps
``--window`` frames in flight): that measures capacity; a rate measures latency at a load.

    .venv/bin/python bench/load.py --model tiny --streams 4 --fps 0 --duration 10
    .venv/bin/python bench/load.py --model detector --streams 2 --fps 5 --duration 20 \\
        [--server 127.0.0.1:50051] [--frame-size 640x480] [--json out.json]

``--model``: an ONNX file, ``tiny`` (the tests' 2 KB model, 128x96 input) or
``detector`` (the paper's architecture at 640x480, random weights; needs torch).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np

from alscout.runtime.backends import open_backend
from alscout.runtime.decode import decode_frame
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def build_model(name: str, folder: Path) -> Path:
    """The ONNX file ``name`` stands for (see the module docstring)."""
    if name == "tiny":
        spec = importlib.util.spec_from_file_location(
            "tiny", ROOT / "tests/assets/tiny_detector.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.write(folder / "tiny.onnx")
    if name == "detector":
        spec = importlib.util.spec_from_file_location("bench_runtime", ROOT / "bench/runtime.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _, _, path = module.build_models(argparse.Namespace(checkpoint=None, width=16), folder)
        return path
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"load.py: {path}: no such model file")
    return path


def make_frames(count: int, width: int, height: int) -> list[bytes]:
    """``count`` JPEG frames of a drifting textured scene (seeded)."""
    rng = np.random.default_rng(0)
    base = cv2.resize(
        rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8), (width, height)
    )
    frames = []
    for i in range(count):
        frame = np.roll(base, 7 * i, axis=1)
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        frames.append(data.tobytes())
    return frames


def in_process(model: Path, args: argparse.Namespace, frames: list[bytes]) -> dict[str, float]:
    """Frames/s of decode + score in this process for ``args.duration`` seconds.

    ``args.workers`` threads share one pipeline, as the server's scoring threads do, so
    both sides get the same parallelism (and the same share of a busy machine).
    """
    from concurrent.futures import ThreadPoolExecutor

    backend = open_backend(model, args.backend, threads=args.threads)
    config = PipelineConfig(batch_size=args.batch_size)
    with ScoringPipeline(backend, config) as pipeline:
        pipeline.score([decode_frame(frames[0], encoding="jpeg")])  # warm-up
        started = time.perf_counter()

        def worker(offset: int) -> int:
            done = 0
            while time.perf_counter() - started < args.duration:
                batch = [
                    decode_frame(frames[(offset + done + k) % len(frames)], encoding="jpeg")
                    for k in range(args.batch_size)
                ]
                pipeline.score(batch)
                done += len(batch)
            return done

        with ThreadPoolExecutor(args.workers) as pool:
            done = sum(pool.map(worker, range(0, 7 * args.workers, 7)))
        elapsed = time.perf_counter() - started
    return {"frames": done, "seconds": elapsed, "fps": done / elapsed}


class StreamLoad:
    """One ScoreStream call: paced (or windowed) writes, reads timed against them."""

    def __init__(self, stub, index: int, frames: list[bytes], args: argparse.Namespace):
        self.stub, self.index, self.frames, self.args = stub, index, frames, args
        self.sent: dict[int, float] = {}
        self.latencies_ms: list[float] = []
        self.results = 0
        self.error: str | None = None
        self.window = asyncio.Semaphore(args.window)

    def _frame(self, i: int) -> pb.Frame:
        return pb.Frame(
            recording_id=f"load-{self.index}",
            camera_id="cam0",
            frame_index=i,
            encoded=pb.EncodedImage(
                data=self.frames[i % len(self.frames)], encoding=pb.ENCODING_JPEG
            ),
        )

    async def run(self, stop_at: float) -> None:
        call = self.stub.ScoreStream(metadata=self.args.metadata)
        reader = asyncio.create_task(self._read(call))
        try:
            started, i = time.perf_counter(), 0
            while time.perf_counter() < stop_at:
                if self.args.fps > 0:
                    delay = started + i / self.args.fps - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    await self.window.acquire()
                self.sent[i] = time.perf_counter()
                await call.write(self._frame(i))
                i += 1
            await call.done_writing()
            await reader
        except grpc.RpcError as error:
            self.error = f"{error.code().name}: {error.details()}"
            reader.cancel()

    async def _read(self, call) -> None:
        try:
            async for result in call:
                if result.end_of_stream:
                    continue
                now = time.perf_counter()
                self.latencies_ms.append(1000.0 * (now - self.sent.pop(result.frame_index)))
                self.results += 1
                if self.args.fps <= 0:
                    self.window.release()
        except grpc.RpcError as error:
            self.error = f"{error.code().name}: {error.details()}"


async def grpc_load(target: str, args: argparse.Namespace, frames: list[bytes]) -> dict[str, Any]:
    """Run ``args.streams`` calls for ``args.duration`` seconds; throughput and latency."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=args.metadata, timeout=30)
        warm = StreamLoad(stub, 999, frames, args)  # warm-up: first inferences, connections
        await warm.run(time.perf_counter() + min(2.0, args.duration))
        loads = [StreamLoad(stub, s, frames, args) for s in range(args.streams)]
        started = time.perf_counter()
        await asyncio.gather(*(load.run(started + args.duration) for load in loads))
        elapsed = time.perf_counter() - started
    latencies = np.array([ms for load in loads for ms in load.latencies_ms])
    results = sum(load.results for load in loads)
    errors = [load.error for load in loads if load.error]
    p50, p99, p999 = (
        np.percentile(latencies, q) if latencies.size else float("nan") for q in (50, 99, 99.9)
    )
    return {
        "frames": results,
        "seconds": elapsed,
        "fps": results / elapsed,
        "offered_fps": args.streams * args.fps if args.fps > 0 else None,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "errors": len(errors),
        "error_messages": errors[:3],
    }


def start_server(model: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """``alscout serve`` in a subprocess on a free port; returns once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, ALSCOUT_PIPELINE_BATCH_SIZE=str(args.batch_size))
    command = [sys.executable, "-m", "alscout.apps.cli", "serve", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--backend", args.backend]
    command += ["--threads", str(args.threads), "--workers", str(args.workers), "--grace", "1"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=120)
        except grpc.FutureTimeoutError:
            server.kill()
            raise SystemExit(
                f"load.py: the server did not start: {server.stderr.read().decode()}"
            ) from None
    return server, target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="ONNX file, 'tiny' or 'detector'")
    parser.add_argument("--server", help="HOST:PORT of a running server (default: start one)")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--fps", type=float, default=0.0, help="per stream; 0 = as fast as taken")
    parser.add_argument("--window", type=int, default=4, help="frames in flight per stream (fps 0)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--frame-size", default="640x480", help="WIDTHxHEIGHT of the JPEG frames")
    parser.add_argument("--backend", default="onnxruntime-cpu")
    parser.add_argument("--threads", type=int, default=1, help="inference threads, both sides")
    parser.add_argument("--workers", type=int, default=2, help="server scoring threads")
    parser.add_argument("--batch-size", type=int, default=1, help="pipeline batch, both sides")
    parser.add_argument("--token-file", help="bearer token for a server that wants one")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    args.metadata = ()
    if args.token_file:
        from alscout.server.security import load_token, token_metadata

        args.metadata = token_metadata(load_token(args.token_file))
    frames = make_frames(32, width, height)
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(args.model, Path(folder))
        baseline = in_process(model, args, frames)
        server = None
        target = args.server
        if target is None:
            server, target = start_server(model, args)
        try:
            loaded = asyncio.run(grpc_load(target, args, frames))
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
    ratio = loaded["fps"] / baseline["fps"]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "model": args.model,
        "frame_size": args.frame_size,
        "streams": args.streams,
        "fps_per_stream": args.fps,
        "threads": args.threads,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "in_process": baseline,
        "grpc": loaded,
        "ratio": ratio if args.fps <= 0 else None,
    }
    print(
        f"model {args.model}, {args.frame_size} JPEG, threads {args.threads}, "
        f"workers {args.workers}, batch {args.batch_size}"
    )
    print(f"in-process pipeline : {baseline['fps']:8.1f} frames/s ({baseline['frames']} frames)")
    offered = f"{loaded['offered_fps']:.1f}" if loaded["offered_fps"] else "max"
    print(
        f"gRPC, {args.streams} streams  : {loaded['fps']:8.1f} frames/s (offered {offered}), "
        f"latency p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms, "
        f"p99.9 {loaded['p999_ms']:.1f} ms, errors {loaded['errors']}"
    )
    if args.fps > 0:  # paced: throughput is capped by the offered rate, not the server
        print(
            f"achieved / offered: {loaded['fps'] / loaded['offered_fps']:.3f} (ratio needs --fps 0)"
        )
    else:
        print(f"ratio gRPC / in-process: {ratio:.3f}")
    for message in loaded["error_messages"]:
        print(f"  error: {message}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if loaded["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
