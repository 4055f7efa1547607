"""Scores inside the graph vs the plain model + Numba scoring, ONNX Runtime CPU, one run.

The real detector (default width, random weights unless --checkpoint) is exported
twice from the same weights: the plain model (``probs`` out, scored by the pipeline's
Numba kernels) and the model with the scores inside its graph (``alscout export onnx
--scores-in-graph``: z and the heat map out). Both score the same 640x480 frames
through the full pipeline (resize, normalise, frame + mirror, scoring, heat maps, as the
server asks for them), at one ONNX Runtime intra-op thread and one Numba thread, in the
same process, rows interleaved. Reported per batch size: frames/s, p50/p99 of one
``score`` call, the bytes leaving the model per frame, and the in-graph / plain ratios.

    .venv/bin/python bench/in_graph.py [--batches 1 8] [--repeats 5] [--threads 1] \\
        [--frames ../shared/data/pets09_s2l1/vtest.avi] [--json out.json]
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

from alscout.runtime.backends import Backend, OrtOptions, open_backend
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline

# bench/ is a folder of scripts: run as one, this file's folder is first on sys.path, so
# `runtime` here is bench/runtime.py, whose frames and sizes this bench shares.
from runtime import HEIGHT, WIDTH, load_frames


def build_models(args: argparse.Namespace, folder: Path) -> tuple[Path, Path]:
    """(plain ONNX, in-graph ONNX) of one detector at 640x480."""
    import torch

    from alscout.export.onnx import OnnxFromPath, OnnxFromTorch, SaveOnnx, info_from_detector
    from alscout.export.onnx_scores import ScoredOnnxFromOnnx
    from alscout.runtime.model_info import GraphScoring
    from alscout.trainer.model import Detector, DetectorConfig

    if args.checkpoint:
        from alscout.trainer.checkpoint import load_detector

        detector = load_detector(args.checkpoint)
    else:
        torch.manual_seed(0)
        detector = Detector(DetectorConfig(width=args.width)).eval()
    info = info_from_detector(detector, training_data_digest="bench", input_size=(HEIGHT, WIDTH))
    plain = folder / "plain.onnx"
    scored = folder / "scored.onnx"
    SaveOnnx(OnnxFromTorch(detector, info), plain)()
    SaveOnnx(ScoredOnnxFromOnnx(OnnxFromPath(plain), GraphScoring()), scored)()
    return plain, scored


class ByteCounter:
    """Counts the bytes of every array a backend hands back (what leaves the model)."""

    def __init__(self, backend: Backend) -> None:
        self.bytes = 0
        self.images = 0
        plain, outputs = backend.infer_impl, backend.infer_outputs_impl

        def infer_impl(images: np.ndarray) -> np.ndarray:
            probs = plain(images)
            self.bytes += probs.nbytes
            return probs

        def infer_outputs_impl(images: np.ndarray) -> dict[str, np.ndarray]:
            values = outputs(images)
            self.bytes += sum(v.nbytes for v in values.values())
            return values

        backend.infer_impl = infer_impl  # type: ignore[method-assign]
        backend.infer_outputs_impl = infer_outputs_impl  # type: ignore[method-assign]


def time_pipeline(
    pipeline: ScoringPipeline, frames: list[np.ndarray], batch: int, repeats: int
) -> dict[str, float]:
    """Latency of one ``score`` call of ``batch`` frames (ms) and frames per second."""
    latencies = []
    for i in range(repeats):
        start = (i * batch) % max(1, len(frames) - batch)
        chunk = frames[start : start + batch]
        began = time.perf_counter()
        pipeline.score(chunk, heatmaps=True)
        latencies.append(1000 * (time.perf_counter() - began))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(np.ceil(0.99 * len(latencies))) - 1)]
    return {
        "fps": 1000 * batch / statistics.mean(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": p99,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="ORT and Numba threads (1)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="frames per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row")
    parser.add_argument("--width", type=int, default=16, help="detector width (16 = default)")
    parser.add_argument("--checkpoint", type=Path, help="trained weights instead of random ones")
    parser.add_argument("--frames", type=Path, help="video or folder (default: PETS09)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    import numba

    numba.set_num_threads(args.threads)
    frames, source = load_frames(args.frames, max(args.batches) * (args.repeats + 1))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"ONNX Runtime CPU, {args.threads} intra-op thread(s), Numba {args.threads} "
        f"thread(s); frames: {source}; {WIDTH}x{HEIGHT}, double evaluation on, heat maps "
        f"on; detector width {args.width}"
    )
    options = OrtOptions(intra_op_threads=args.threads)
    report: dict[str, Any] = {"threads": args.threads, "width": args.width, "frames": source}
    with tempfile.TemporaryDirectory() as scratch:
        plain_path, scored_path = build_models(args, Path(scratch))
        pipelines = {}
        counters = {}
        for name, path in (("plain+numba", plain_path), ("in-graph", scored_path)):
            backend = open_backend(path, "onnxruntime-cpu", ort_options=options)
            counters[name] = ByteCounter(backend)
            pipelines[name] = ScoringPipeline(backend, PipelineConfig(batch_size=max(args.batches)))
        try:
            for batch in args.batches:
                rows = {}
                for pipeline in pipelines.values():  # warm-up: allocations, compilation
                    pipeline.score(frames[:batch], heatmaps=True)
                for name, pipeline in pipelines.items():
                    counter = counters[name]
                    counter.bytes = 0
                    row = time_pipeline(pipeline, frames, batch, args.repeats)
                    row["bytes_per_frame"] = counter.bytes / (batch * args.repeats)
                    rows[name] = row
                    print(
                        f"{name:12s} batch {batch:2d}: {row['fps']:7.2f} frames/s  "
                        f"p50 {row['p50_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms  "
                        f"{row['bytes_per_frame']:>12,.0f} bytes/frame out of the model",
                        flush=True,
                    )
                plain, graph = rows["plain+numba"], rows["in-graph"]
                ratios = {
                    "fps": graph["fps"] / plain["fps"],
                    "p50": graph["p50_ms"] / plain["p50_ms"],
                    "bytes": plain["bytes_per_frame"] / graph["bytes_per_frame"],
                }
                print(
                    f"in-graph / plain+numba at batch {batch}: {ratios['fps']:.2f}x frames/s, "
                    f"{ratios['p50']:.2f}x p50 latency, {ratios['bytes']:,.0f}x fewer bytes "
                    "out of the model",
                    flush=True,
                )
                report[str(batch)] = {"rows": rows, "ratios": ratios}
        finally:
            for pipeline in pipelines.values():
                pipeline.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
