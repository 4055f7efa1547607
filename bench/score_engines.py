"""``alscout score`` throughput per engine, and what Ray costs per recording.

One run, same recordings, same model, each configuration scoring into a fresh output
folder: 1 and 2 local worker processes, then 2 Ray actors on a local Ray instance
(num_cpus = 2 unless ``--num-cpus``). Frames/s is frames over the run's wall time,
start-up included (worker processes or actors loading the model). Ray's cost per
recording comes from a second pass over ``--tiny`` one-frame recordings per engine:
``(wall(N) - wall(1)) / (N - 1) * workers`` is the wall time each recording holds a
worker, and that minus the worker's own time on it (opening, scoring, uploading) is
the overhead of handing it over and committing it.

    .venv/bin/python bench/score_engines.py [--model detector|tiny|PATH] \\
        [--recordings 4] [--frames 40] [--size 640x480] [--tiny 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from alscout.offline.local_engine import LocalEngine
from alscout.offline.plan import plan_units
from alscout.offline.ray_engine import RayEngine
from alscout.offline.run import ScoreReport, score_recordings
from alscout.offline.settings import ScoreSettings

ROOT = Path(__file__).resolve().parents[1]


def build_model(name: str, folder: Path) -> Path:
    """The ONNX file: bench/load.py's ``tiny`` / ``detector``, or a path."""
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench/load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.build_model(name, folder))


def write_video(path: Path, frames: int, width: int, height: int, seed: int) -> Path:
    """A drifting textured scene, MJPG."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(
        rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8), (width, height)
    )
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    for i in range(frames):
        writer.write(np.roll(base, 5 * i, axis=1))
    writer.release()
    return path


def one_run(sources: list[Path], settings: ScoreSettings, out: Path, engine: Any) -> dict:
    units = plan_units([str(s) for s in sources])
    started = time.perf_counter()
    report: ScoreReport = score_recordings(units, settings, out, engine)
    wall = time.perf_counter() - started
    if report.failed:
        raise SystemExit(f"score_engines.py: {report.failed}")
    return {
        "engine": f"{engine.name} x{engine.workers}",
        "recordings": len(report.scored),
        "frames": report.frames,
        "wall_s": wall,
        "frames_per_s": report.frames / wall,
        "worker_s": sum(r.elapsed_s for r in report.scored),
        "worker_mean_s": statistics.fmean(r.elapsed_s for r in report.scored),
    }


def overhead(tiny: list[Path], settings: ScoreSettings, folder: Path, make_engine) -> dict:
    """Per-recording wall time held on a worker, and its part outside the worker."""
    single = one_run(tiny[:1], settings, folder / "t1", make_engine())
    many = one_run(tiny, settings, folder / "tn", make_engine())
    workers = int(many["engine"].split("x")[-1])
    held = (many["wall_s"] - single["wall_s"]) / (len(tiny) - 1) * workers
    return {
        "engine": many["engine"],
        "held_per_recording_ms": 1000 * held,
        "worker_per_recording_ms": 1000 * many["worker_mean_s"],
        "overhead_per_recording_ms": 1000 * (held - many["worker_mean_s"]),
        "startup_s": single["wall_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="detector", help="'detector', 'tiny' or an ONNX file")
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--frames", type=int, default=40, help="frames per recording")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the videos")
    parser.add_argument("--tiny", type=int, default=12, help="one-frame recordings (overhead)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    logging.basicConfig(level=logging.WARNING)
    import ray

    with tempfile.TemporaryDirectory(prefix="alscout-bench-score-") as tmp:
        folder = Path(tmp)
        model = build_model(args.model, folder)
        sources = [
            write_video(folder / f"drive-{i}.avi", args.frames, width, height, i)
            for i in range(args.recordings)
        ]
        tiny = [
            write_video(folder / f"t-{i}.avi", 1, width, height, 100 + i) for i in range(args.tiny)
        ]

        def settings(out: str) -> ScoreSettings:
            return ScoreSettings(model, str(folder / out / "sink"), backend="onnxruntime-cpu",
                                 threads=1)  # fmt: skip

        rows = [
            one_run(sources, settings("l1"), folder / "l1", LocalEngine(1)),
            one_run(sources, settings("l2"), folder / "l2", LocalEngine(2)),
        ]
        started = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
        ray_init_s = time.perf_counter() - started
        try:
            rows.append(one_run(sources, settings("r2"), folder / "r2", RayEngine(2)))
            costs = [
                overhead(tiny, settings("ol"), folder / "ol", lambda: LocalEngine(2)),
                overhead(tiny, settings("or"), folder / "or", lambda: RayEngine(2)),
            ]
        finally:
            ray.shutdown()
    print(f"alscout score engines: {args.recordings} recordings x {args.frames} frames of "
          f"{width}x{height}, model {args.model}, 1 inference thread per worker; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")  # fmt: skip
    print(f"{'engine':<10} {'frames':>6} {'wall s':>7} {'frames/s':>9} {'worker s':>9}")
    for r in rows:
        print(f"{r['engine']:<10} {r['frames']:>6} {r['wall_s']:>7.2f} {r['frames_per_s']:>9.2f} "
              f"{r['worker_s']:>9.2f}")  # fmt: skip
    print(f"ray.init (local, num_cpus={args.num_cpus}): {ray_init_s:.2f} s, outside the rows")
    print(f"per recording ({args.tiny} one-frame recordings, 2 workers):")
    print(f"{'engine':<10} {'held ms':>8} {'in worker ms':>13} {'overhead ms':>12} {'start s':>8}")
    for c in costs:
        print(f"{c['engine']:<10} {c['held_per_recording_ms']:>8.1f} "
              f"{c['worker_per_recording_ms']:>13.1f} {c['overhead_per_recording_ms']:>12.1f} "
              f"{c['startup_s']:>8.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "per_recording": costs,
                                         "ray_init_s": ray_init_s}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
