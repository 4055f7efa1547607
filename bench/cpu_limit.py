"""How far CPU scoring is from the hardware: PyTorch eager, ONNX Runtime FP32 and INT8.

The detector (``--checkpoint`` for trained weights, else random ones at ``--width``)
is built, exported to ONNX and quantised to INT8 as ``alscout export onnx --int8``
does (calibrated on ``--calib-limit`` frames of the video), all at 640x480, through
bench/runtime.py's helpers. Each backend scores the same frames through the full
pipeline (resize, normalise, frame + mirror in one batch, Numba scoring) at each
``--batches`` size, in one run, rows interleaved by backend; threads come from the
thread plan (runtime/threads.py; ``--threads 1``, SPEC §7's default, or 0 for every
core the plan gives). Reported per row: frames/s, p50/p99 of one ``score`` call, and
the fraction of the CPU's peak that the detector's multiply-adds reach, end to end and
in inference alone. Multiply-adds are counted exactly from the ONNX graph at
2 x 3 x 480 x 640 (a frame and its mirror; export/flops.py). Then the batch the
server's rule would choose per backend (server/batch_policy.best_batch) and the
INT8 / PyTorch and INT8 / FP32 ratios at batch 1 and at that batch.

Peak = threads x clock x operations per cycle per core, with the clock the mean
"cpu MHz" of /proc/cpuinfo (what the kernel last saw; turbo may run faster) and the
operations from the vector ISA in its flags and ``--fma-units`` (2 on current x86):
FP32 FMA: units x lanes (8 AVX2, 16 AVX-512) x 2; INT8 without VNNI: AVX2
``vpmaddubsw`` multiplies 32 u8 x s8 pairs but needs ``vpmaddwd`` on the same units to
widen, so units x 16 multiply-adds x 2 (twice FP32); with VNNI (``vpdpbusd``, one
instruction per 4 multiply-adds per 32-bit lane): units x lanes x 4 x 2.

    .venv/bin/python bench/cpu_limit.py [--checkpoint runs/pets/last.pt] [--batches 1 8] \\
        [--repeats 5] [--threads 1] [--calib-limit 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from alscout.export.calibration import CalibrationBatches
from alscout.export.flops import count_macs
from alscout.export.quantize import quantize_onnx
from alscout.runtime.backends import OrtOptions, open_backend
from alscout.runtime.threads import apply_numba_threads, plan_threads
from alscout.server.batch_policy import best_batch


def bench_runtime() -> ModuleType:
    """bench/runtime.py, loaded by path (bench/ is a folder of scripts, not a package)."""
    path = Path(__file__).resolve().with_name("runtime.py")
    spec = importlib.util.spec_from_file_location("bench_runtime", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_peak(threads: int, fma_units: int) -> dict[str, Any]:
    """Peak FP32 and INT8 operations/s of ``threads`` cores, and how they were derived."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags: set[str] = set()
    mhz: list[float] = []
    model = platform.processor() or platform.machine()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags":
            flags |= set(value.split())
        elif key == "cpu MHz":
            mhz.append(float(value))
        elif key == "model name":
            model = value.strip()
    clock_hz = 1e6 * (sum(mhz) / len(mhz)) if mhz else float("nan")
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    isa = "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "SSE"
    fp32_per_cycle = fma_units * lanes * 2
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        vnni_lanes = lanes if "avx512_vnni" in flags else 8
        int8_per_cycle = fma_units * vnni_lanes * 4 * 2
        int8_how = f"VNNI vpdpbusd: {fma_units} units x {vnni_lanes} lanes x 4 MAC x 2"
    else:
        int8_per_cycle = fma_units * 16 * 2
        int8_how = f"vpmaddubsw + vpmaddwd (no VNNI): {fma_units} units x 16 MAC x 2"
    return {
        "model": model,
        "isa": isa,
        "vector_flags": sorted(f for f in flags if f.startswith(("avx", "fma", "amx"))),
        "clock_ghz": clock_hz / 1e9,
        "threads": threads,
        "fp32_ops_per_cycle_core": fp32_per_cycle,
        "int8_ops_per_cycle_core": int8_per_cycle,
        "fp32_how": f"FMA: {fma_units} units x {lanes} lanes x 2",
        "int8_how": int8_how,
        "fp32_peak_gops": threads * clock_hz * fp32_per_cycle / 1e9,
        "int8_peak_gops": threads * clock_hz * int8_per_cycle / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (0: plan)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="frames per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row")
    parser.add_argument("--width", type=int, default=16, help="detector width (random weights)")
    parser.add_argument("--checkpoint", type=Path, help="trained weights instead of random ones")
    parser.add_argument("--frames", type=Path, help="video or folder (default: PETS09)")
    parser.add_argument("--calib-limit", type=int, default=64, help="INT8 calibration frames")
    parser.add_argument("--fma-units", type=int, default=2, help="vector FMA units per core")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    import torch

    from alscout.runtime.backends.torch_reference import TorchBackend

    helpers = bench_runtime()
    plan = plan_threads(inference=args.threads)
    apply_numba_threads(plan)
    threads = plan.intra_op
    peak = cpu_peak(threads, args.fma_units)
    frames, source = helpers.load_frames(args.frames, max(args.batches) * (args.repeats + 1))
    load_before = os.getloadavg()
    print(
        f"machine: {peak['model']}, {os.cpu_count()} CPUs ({plan.cores} usable), "
        f"{peak['isa']} {' '.join(peak['vector_flags'])}, {peak['clock_ghz']:.3f} GHz "
        f"(/proc/cpuinfo); threads: {plan.describe()}; torch {torch.__version__}; "
        f"frames: {source}; {helpers.WIDTH}x{helpers.HEIGHT}, double evaluation on; "
        f"load average before: {' '.join(f'{v:.2f}' for v in load_before)}"
    )
    print(
        f"peak on {threads} thread(s): FP32 {peak['fp32_peak_gops']:.1f} GFLOP/s "
        f"({peak['fp32_how']} per cycle), INT8 {peak['int8_peak_gops']:.1f} GOP/s "
        f"({peak['int8_how']} per cycle)"
    )
    report: dict[str, Any] = {"peak": peak, "threads": plan.describe(), "frames": source}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        detector, info, fp32_path = helpers.build_models(args, folder)
        macs = count_macs(fp32_path, (2, 3, helpers.HEIGHT, helpers.WIDTH))
        ops_per_frame = macs.flops
        print(f"detector per frame (frame + mirror): {macs.describe()}")
        print(f"= {ops_per_frame / 1e9:.3f} G operations per frame")
        calibration_source = args.frames or helpers.DEFAULT_VIDEO
        calibration = CalibrationBatches(calibration_source, info, limit=args.calib_limit, stride=4)
        int8_path = quantize_onnx(fp32_path, folder / "detector-int8.onnx", calibration)
        options = OrtOptions(intra_op_threads=threads)
        factories = {
            "torch-eager": (lambda: TorchBackend(detector, info, threads=threads), "fp32"),
            "onnxruntime-fp32": (
                lambda: open_backend(fp32_path, "onnxruntime-cpu", ort_options=options),
                "fp32",
            ),
            "onnxruntime-int8": (
                lambda: open_backend(int8_path, "onnxruntime-cpu", ort_options=options),
                "int8",
            ),
        }
        rows: dict[str, dict[int, dict[str, float]]] = {}
        for name, (factory, precision) in factories.items():
            rows[name] = {}
            peak_ops = 1e9 * peak[f"{precision}_peak_gops"]
            with factory() as backend:
                for batch in args.batches:
                    row = helpers.time_pipeline(backend, frames, batch, args.repeats)
                    row["peak_fraction"] = row["fps"] * ops_per_frame / peak_ops
                    row["peak_fraction_infer"] = (
                        1000.0 / row["infer_ms_per_frame"] * ops_per_frame / peak_ops
                    )
                    rows[name][batch] = row
                    unit = "GFLOP/s" if precision == "fp32" else "GOP/s"
                    print(
                        f"{name:17s} batch {batch:2d}: {row['fps']:6.2f} frames/s  "
                        f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                        f"{row['fps'] * ops_per_frame / 1e9:6.1f} {unit} = "
                        f"{100 * row['peak_fraction']:4.1f}% of {precision.upper()} peak "
                        f"(inference alone {100 * row['peak_fraction_infer']:4.1f}%; infer "
                        f"{row['infer_ms_per_frame']:.1f} + score "
                        f"{row['score_ms_per_frame']:.1f} ms/frame)",
                        flush=True,
                    )
        report["rows"] = rows
        chosen = {
            name: best_batch({b: r["fps"] for b, r in by.items()}) for name, by in rows.items()
        }
        report["chosen_batch"] = chosen
        for name, batch in chosen.items():
            print(f"chosen batch for {name}: {batch} (server/batch_policy.best_batch)")
        ratios: dict[str, float] = {}
        for batch in sorted({args.batches[0], *chosen.values()}):
            int8 = rows["onnxruntime-int8"][batch]["fps"]
            for other in ("torch-eager", "onnxruntime-fp32"):
                ratio = int8 / rows[other][batch]["fps"]
                ratios[f"int8/{other}@{batch}"] = ratio
                print(f"ONNX Runtime INT8 / {other} at batch {batch}: {ratio:.2f}x")
            fp32 = rows["onnxruntime-fp32"][batch]["fps"] / rows["torch-eager"][batch]["fps"]
            ratios[f"onnxruntime-fp32/torch-eager@{batch}"] = fp32
            print(f"ONNX Runtime FP32 / torch-eager at batch {batch}: {fp32:.2f}x")
        report["ratios"] = ratios
    load_after = os.getloadavg()
    report["load_average"] = {"before": load_before, "after": load_after}
    print(f"load average after: {' '.join(f'{v:.2f}' for v in load_after)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
