"""Scoring throughput and latency per backend and batch size, with double evaluation.

The real detector (default width, random weights unless --checkpoint is given) scores
640x480 frames through the full pipeline (resize, normalise, frame + mirror in one
batch, scoring). PyTorch eager and ONNX Runtime CPU run in the same process at the
same thread count (``--threads``; 0 lets runtime/threads.py size it, and Numba's
follows either way), and the table ends with their throughput ratio at each batch
size. On a machine with an NVIDIA GPU the GPU section adds ONNX Runtime CUDA, the
TensorRT execution provider and a native TensorRT FP16 engine. ``--ort-variants``
also times ONNX Runtime's graph-optimisation levels at the largest batch.

    .venv/bin/python bench/runtime.py [--threads 1] [--batches 1 8] [--repeats 5] \\
        [--frames ../shared/data/pets09_s2l1/vtest.avi] [--json out.json] [--ort-variants]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import BackendUnavailableError
from alscout.runtime.backends import Backend, OrtOptions, open_backend
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline

DEFAULT_VIDEO = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "pets09_s2l1" / "vtest.avi"
)
HEIGHT, WIDTH = 480, 640


def load_frames(source: Path | None, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` RGB frames; real ones from a video or folder when there is one."""
    path = source or DEFAULT_VIDEO
    if path.exists():
        from alscout.export.frames import read_frames

        return read_frames(path, limit=count, stride=7), str(path)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]
    return frames, "random noise (no video found)"


def build_models(args: argparse.Namespace, folder: Path) -> tuple[Any, Any, Path]:
    """(detector, model info, ONNX path) at 640x480."""
    import torch

    from alscout.export.onnx import OnnxFromTorch, SaveOnnx, info_from_detector
    from alscout.trainer.model import Detector, DetectorConfig

    if args.checkpoint:
        from alscout.trainer.checkpoint import load_detector

        detector = load_detector(args.checkpoint)
    else:
        torch.manual_seed(0)
        detector = Detector(DetectorConfig(width=args.width)).eval()
    info = info_from_detector(detector, training_data_digest="bench", input_size=(HEIGHT, WIDTH))
    path = folder / "detector.onnx"
    SaveOnnx(OnnxFromTorch(detector, info), path)()
    return detector, info, path


def time_pipeline(
    backend: Backend, frames: list[np.ndarray], batch: int, repeats: int
) -> dict[str, float]:
    """Latency of one ``score`` call of ``batch`` frames (ms) and frames per second."""
    pipeline = ScoringPipeline(backend, PipelineConfig(batch_size=batch))
    try:
        pipeline.score(frames[:batch])  # warm-up: allocations, kernel compilation
        latencies, infer, score = [], [], []
        for i in range(repeats):
            start = (i * batch) % max(1, len(frames) - batch)
            chunk = frames[start : start + batch]
            began = time.perf_counter()
            results = pipeline.score(chunk)
            latencies.append(1000 * (time.perf_counter() - began))
            infer.append(results[0].infer_ms)
            score.append(results[0].score_ms)
    finally:
        pipeline.close()
    latencies.sort()
    p99_index = min(len(latencies) - 1, int(np.ceil(0.99 * len(latencies))) - 1)
    return {
        "fps": 1000 * batch / statistics.mean(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[p99_index],
        "infer_ms_per_frame": statistics.mean(infer),
        "score_ms_per_frame": statistics.mean(score),
    }


def cpu_backends(args: argparse.Namespace, detector: Any, info: Any, onnx_path: Path) -> dict:
    from alscout.runtime.backends.torch_reference import TorchBackend

    return {
        "torch-eager": lambda: TorchBackend(detector, info, threads=args.threads),
        "onnxruntime-cpu": lambda: open_backend(
            onnx_path, "onnxruntime-cpu", ort_options=OrtOptions(intra_op_threads=args.threads)
        ),
    }


def gpu_backends(onnx_path: Path, folder: Path) -> dict:
    def native() -> Backend:
        from alscout.export.tensorrt import build_engine
        from alscout.runtime.backends.profiles import default_profiles

        engine = folder / "detector.engine"
        profiles = default_profiles((HEIGHT, WIDTH), 16, batch_sizes=(2, 16))
        build_engine(onnx_path, engine, precision="fp16", profiles=profiles)
        return open_backend(engine, "tensorrt")

    return {
        "onnxruntime-cuda": lambda: open_backend(onnx_path, "onnxruntime-cuda"),
        "onnxruntime-tensorrt": lambda: open_backend(onnx_path, "onnxruntime-tensorrt"),
        "tensorrt-fp16": native,
    }


def run_section(
    name: str, factories: dict, frames: list[np.ndarray], args: argparse.Namespace
) -> dict:
    results: dict[str, dict[int, dict[str, float]]] = {}
    for backend_name, factory in factories.items():
        try:
            backend = factory()
        except BackendUnavailableError as error:
            print(f"[{name}] {backend_name}: skipped ({error})")
            continue
        results[backend_name] = {}
        with backend:
            for batch in args.batches:
                row = time_pipeline(backend, frames, batch, args.repeats)
                results[backend_name][batch] = row
                print(
                    f"[{name}] {backend_name:22s} batch {batch:2d}: {row['fps']:7.2f} frames/s  "
                    f"p50 {row['p50_ms']:9.1f} ms  p99 {row['p99_ms']:9.1f} ms  "
                    f"(infer {row['infer_ms_per_frame']:.1f} + score "
                    f"{row['score_ms_per_frame']:.1f} ms/frame)",
                    flush=True,
                )
    return results


def ort_variants(
    onnx_path: Path, frames: list[np.ndarray], args: argparse.Namespace
) -> dict[str, float]:
    batch = max(args.batches)
    out = {}
    for level in ("disable", "basic", "extended", "all"):
        options = OrtOptions(intra_op_threads=args.threads, graph_optimization=level)
        with open_backend(onnx_path, "onnxruntime-cpu", ort_options=options) as backend:
            out[level] = time_pipeline(backend, frames, batch, args.repeats)["fps"]
        print(
            f"[ort-options] graph_optimization={level:8s} batch {batch}: {out[level]:.2f} frames/s"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (1; 0: the thread plan)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="frames per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row")
    parser.add_argument("--width", type=int, default=16, help="detector width (16 = default)")
    parser.add_argument("--checkpoint", type=Path, help="trained weights instead of random ones")
    parser.add_argument("--frames", type=Path, help="video or folder (default: PETS09)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--ort-variants", action="store_true", help="time ORT optimisation levels")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU section")
    args = parser.parse_args(argv)

    import torch

    from alscout.runtime.threads import apply_numba_threads, plan_threads

    # inference and Numba scoring threads sized together (runtime/threads.py)
    plan = plan_threads(inference=args.threads)
    apply_numba_threads(plan)
    args.threads = plan.intra_op
    frames, source = load_frames(args.frames, max(args.batches) * (args.repeats + 1))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"threads {plan.describe()}; torch {torch.__version__}; frames: {source}; "
        f"{WIDTH}x{HEIGHT}, double evaluation on; detector width {args.width}"
    )
    report: dict[str, Any] = {"threads": args.threads, "width": args.width, "frames": source}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        detector, info, onnx_path = build_models(args, folder)
        cpu = run_section("cpu", cpu_backends(args, detector, info, onnx_path), frames, args)
        report["cpu"] = cpu
        if "torch-eager" in cpu and "onnxruntime-cpu" in cpu:
            report["ratio_ort_over_torch"] = {}
            for batch in args.batches:
                ratio = cpu["onnxruntime-cpu"][batch]["fps"] / cpu["torch-eager"][batch]["fps"]
                report["ratio_ort_over_torch"][batch] = ratio
                print(f"ONNX Runtime CPU / PyTorch eager at batch {batch}: {ratio:.2f}x")
        if args.ort_variants:
            report["ort_variants_fps"] = ort_variants(onnx_path, frames, args)
        if not args.cpu_only:
            report["gpu"] = run_section("gpu", gpu_backends(onnx_path, folder), frames, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
