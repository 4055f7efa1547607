"""The GPU lane: detector + in-graph scorer as torch modules, throughput and z parity.

``bench/gpu_check.sh`` runs this. On an NVIDIA GPU it times the detector with the
scores inside (``alscout.export.scores_graph.ScoredDetector``: frame + mirror in one
batch, SPEC §1 divergence, region max-pool, heat map) at 640x480 for batches 1-64,
in float32 and under bf16/fp16 autocast (the scorer itself stays float32), eager and
replayed from a CUDA graph, optionally ``torch.compile``d; then it checks z against
the CPU path (the detector in float32 on the CPU, frames and mirrors merged, the
float64 Numba scoring of ``alscout.runtime.scoring``). Every figure goes into one
Markdown file (``--out``). ``--device cpu`` runs the same code on the CPU, small, so
that CI keeps the script working.

Needs PyTorch and NumPy only (Numba for the reference scoring when present, else a
float64 PyTorch reference); alscout is imported from this checkout when it is not
installed. Stops starting new rows once ``--budget-s`` has passed, so the whole run
stays under 8 minutes; skipped rows are listed in the file.

    bash bench/gpu_check.sh [--device cuda] [--out gpu_check.md] [--compile]
    bash bench/gpu_check.sh --device cpu --batches 1 2 --size 128x96 --detector-width 4
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PETS_VIDEO = ROOT.parent / "shared" / "data" / "pets09_s2l1" / "vtest.avi"
#: SPEC §4: z of the in-graph scorer in float32 against the float64 CPU path
Z_RTOL = 1e-4


def bootstrap_alscout() -> None:
    """Make ``alscout`` importable from this checkout when it is not installed.

    pyproject.toml maps the top folders to one namespace (``runtime/`` is
    ``alscout.runtime``); each mapped package is loaded from its folder by path.
    """
    try:
        installed = importlib.util.find_spec("alscout.trainer") is not None
    except ModuleNotFoundError:  # no alscout at all
        installed = False
    if installed:
        return
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"package-dir\s*=\s*\{([^}]*)\}", text)
    if block is None:
        raise SystemExit("pyproject.toml has no package-dir mapping")
    mapping = dict(re.findall(r'"([\w.]+)"\s*=\s*"([\w./-]+)"', block.group(1)))
    for name in sorted(mapping, key=lambda n: n.count(".")):
        folder = ROOT / mapping[name]
        if not (folder / "__init__.py").is_file():
            continue
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, module)


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (height, width)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def load_frames(count: int, height: int, width: int, source: str) -> tuple[np.ndarray, str]:
    """``[count, height, width, 3]`` uint8 RGB: PETS09 frames when OpenCV and the video
    are there (``source`` "auto" or "pets"), else synthetic ones (seeded)."""
    if source in ("auto", "pets") and PETS_VIDEO.is_file():
        try:
            import cv2
        except ImportError:
            cv2 = None
        if cv2 is not None:
            capture = cv2.VideoCapture(str(PETS_VIDEO))
            frames = []
            index = 0
            while len(frames) < count:
                ok, bgr = capture.read()
                if not ok:
                    break
                if index % 37 == 0:
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    shrink = height * width < rgb.shape[0] * rgb.shape[1]
                    mode = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                    frames.append(cv2.resize(rgb, (width, height), interpolation=mode))
                index += 1
            capture.release()
            if len(frames) == count:
                return np.stack(frames), f"PETS09 {PETS_VIDEO.name}, every 37th frame"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for i in range(count):
        base = rng.integers(40, 200, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
        image = np.kron(base, np.ones((8, 8, 1), np.float32))[:height, :width]
        for _ in range(4):  # a few bright upright "people"
            cy, cx = rng.integers(0, height), rng.integers(0, width)
            person = (np.abs(yy - cy) < height // 10) & (np.abs(xx - cx) < width // 40 + 1)
            image[person] = 230.0 - 10.0 * i % 50
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(frames), "synthetic (seeded blocks and bright bars)"


def build(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(detector, scored detector, model info) on the CPU, eval mode, float32."""
    import torch

    from alscout.export.onnx import info_from_detector
    from alscout.export.scores_graph import ScoredDetector
    from alscout.runtime.model_info import GraphScoring
    from alscout.trainer.model import Detector, DetectorConfig

    if args.checkpoint:
        from alscout.trainer.checkpoint import load_detector

        detector = load_detector(args.checkpoint)
    else:
        torch.manual_seed(0)
        detector = Detector(DetectorConfig(width=args.detector_width))
    detector.eval()
    height, width = args.size
    info = info_from_detector(
        detector, training_data_digest="gpu-check", input_size=(height, width)
    )
    scoring = GraphScoring(radius=args.radius, region=args.region)
    return detector, ScoredDetector(detector, scoring).eval(), info


def cpu_reference(detector: Any, images: np.ndarray, args: argparse.Namespace) -> tuple[Any, str]:
    """z of the CPU path: the detector in float32 on the CPU, frames and mirrors in one
    batch, merged, then the float64 Numba scoring (or float64 PyTorch without Numba)."""
    import torch

    n = images.shape[0]
    with torch.inference_mode():
        batch = torch.from_numpy(np.concatenate([images, images[..., ::-1]]))
        probs = detector.cpu().float()(batch).numpy()
    try:
        from alscout.runtime.scoring import aggregate, merge_mirrored, pixel_scores
    except ImportError:
        from alscout.export.scores_graph import ScoreHead
        from alscout.runtime.model_info import GraphScoring

        head = ScoreHead(GraphScoring(radius=args.radius, region=args.region)).double()
        with torch.inference_mode():
            z = head(torch.from_numpy(probs).double())[0].numpy()
        return z, "float64 PyTorch (Numba not installed)"
    merged = merge_mirrored(probs[:n], probs[n:])
    maps = pixel_scores(merged, radius=args.radius)
    return np.asarray(aggregate(maps, region=args.region)), "float64 Numba (alscout.runtime)"


class Runner:
    """One configuration: the scored detector on a device, at a precision, in a mode."""

    def __init__(self, scored: Any, device: str, precision: str, mode: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.module = scored.to(self.device)
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.mode = mode
        self.fn = self._eager
        if mode == "compile":
            self.fn = torch.compile(self._eager, dynamic=False)
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}

    def _eager(self, images: Any) -> Any:
        torch = self.torch
        if self.dtype is None:
            return self.module(images)
        # no cast cache: a CUDA graph must not capture casts cached outside it
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, cache_enabled=False):
            return self.module(images)

    def __call__(self, images: Any) -> Any:
        torch = self.torch
        with torch.inference_mode():
            if self.mode != "cudagraph":
                return self.fn(images)
            batch = images.shape[0]
            if batch not in self._graphs:
                static_in = images.clone()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):  # warm up outside the graph, as PyTorch advises
                        self._eager(static_in)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = self._eager(static_in)
                self._graphs[batch] = (graph, static_in, static_out)
            graph, static_in, static_out = self._graphs[batch]
            static_in.copy_(images)
            graph.replay()
            return static_out

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def time_row(runner: Runner, images: Any, warmup: int, repeats: int) -> dict[str, float]:
    """Latency of one call (ms, host clock around a synchronised call) and frames/s."""
    for _ in range(warmup):
        runner(images)
    runner.sync()
    latencies = []
    for _ in range(repeats):
        began = time.perf_counter()
        z, heatmap = runner(images)
        z.cpu(), heatmap.cpu()  # what leaves the device: z and the heat map, ~1.2 KB a frame
        runner.sync()
        latencies.append(1000.0 * (time.perf_counter() - began))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
    return {
        "fps": 1000.0 * images.shape[0] / statistics.mean(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": p99,
    }


def parity(runner: Runner, images: np.ndarray, z_ref: np.ndarray) -> dict[str, float]:
    """z of ``runner`` on ``images`` against the CPU path's: max relative error and the
    share of the reference's top half the runner also ranks in its top half."""
    torch = runner.torch
    z, _ = runner(torch.from_numpy(images).to(runner.device))
    z = z.float().cpu().numpy().astype(np.float64)
    rel = float(np.max(np.abs(z - z_ref) / np.maximum(np.abs(z_ref), 1e-300)))
    top = max(1, len(z_ref) // 2)
    ref_top = set(np.argsort(-z_ref, kind="stable")[:top].tolist())
    got_top = set(np.argsort(-z, kind="stable")[:top].tolist())
    return {"z_max_rel": rel, "top_half_overlap": len(ref_top & got_top) / top}


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
            f"torch {torch.__version__}"
        )
    return f"{platform.processor() or platform.machine()} CPU, torch {torch.__version__}"


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Every figure in one Markdown file: tables, then the raw numbers as JSON."""
    lines = [
        f"# GPU check, {report['date']}",
        "",
        f"- machine: {report['machine']}",
        f"- input: {report['size']}, double evaluation on (each call runs 2 x batch "
        f"images), detector width {report['detector_width']}, radius {report['radius']}, "
        f"region {report['region']}; frames: {report['frames']}",
        f"- z reference: {report['reference']}; tolerance fp32 {Z_RTOL:g} relative",
        f"- leaving the device per frame: {report['bytes_out_per_frame']} bytes (z + heat "
        f"map) instead of {report['bytes_probs_per_frame']} bytes of merged probabilities",
        f"- wall time {report['wall_s']:.0f} s",
        "",
        "| mode | precision | batch | frames/s | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['mode']} | {row['precision']} | {row['batch']} | {row['fps']:.1f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} |"
        )
    lines += [
        "",
        "| mode | precision | z max rel vs CPU path | top-half overlap | verdict |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for row in report["parity"]:
        lines.append(
            f"| {row['mode']} | {row['precision']} | {row['z_max_rel']:.2e} | "
            f"{row['top_half_overlap']:.0%} | {row['verdict']} |"
        )
    if report["skipped"]:
        lines += ["", f"Skipped (time budget): {', '.join(report['skipped'])}"]
    lines += ["", "```json", json.dumps(report, indent=1), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--size", type=parse_size, default=(480, 640), help="WIDTHxHEIGHT")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16", "fp16"))
    parser.add_argument(
        "--modes", nargs="+", choices=("eager", "cudagraph", "compile"), help="default: "
        "eager and cudagraph on CUDA (compile too with --compile), eager on the CPU",
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument("--detector-width", type=int, default=16, help="16 = the default")
    parser.add_argument("--checkpoint", type=Path, help="trained weights instead of random")
    parser.add_argument("--radius", type=int, default=9)
    parser.add_argument("--region", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per row")
    parser.add_argument("--parity-frames", type=int, default=16)
    parser.add_argument("--frames", choices=("auto", "pets", "synthetic"), default="auto")
    parser.add_argument("--budget-s", type=float, default=250.0, help="no new row after this")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"), help="the figures")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch (1)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    bootstrap_alscout()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    # fp32 means fp32: TF32 convolutions would cost z its 1e-4
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    precisions = args.precisions or (
        ["fp32", "bf16", "fp16"] if args.device == "cuda" else ["fp32"]
    )
    modes = args.modes or (["eager", "cudagraph"] if args.device == "cuda" else ["eager"])
    if args.compile and "compile" not in modes:
        modes = [*modes, "compile"]
    if args.device == "cpu" and "cudagraph" in modes:
        print("cudagraph needs CUDA; dropped", file=sys.stderr)
        modes = [m for m in modes if m != "cudagraph"]

    height, width = args.size
    detector, scored, info = build(args)
    frames, source = load_frames(args.parity_frames, height, width, args.frames)
    images = info.normalisation.apply(frames)  # [F, 3, H, W] float32
    z_ref, reference = cpu_reference(detector, images, args)
    cells = math.ceil(height / 16) * math.ceil(width / 16)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(args.device),
        "device": args.device,
        "size": f"{width}x{height}",
        "detector_width": detector.config.width,
        "radius": args.radius,
        "region": args.region,
        "frames": source,
        "reference": reference,
        "bytes_out_per_frame": 4 + 4 * cells,
        "bytes_probs_per_frame": 4 * info.num_heads * height * width,
        "rows": [],
        "parity": [],
        "skipped": [],
    }
    print(f"{report['machine']}; {report['size']}; frames: {source}; reference: {reference}")
    failed = False
    rng = np.random.default_rng(1)
    for mode in modes:
        for precision in precisions:
            label = f"{mode}/{precision}"
            if time.perf_counter() - started > args.budget_s:
                report["skipped"].append(label)
                continue
            runner = Runner(scored, args.device, precision, mode)
            check = parity(runner, images, z_ref)
            # reduced precisions are reported, not judged: their z moves with the logits
            verdict = "n/a"
            if precision == "fp32":
                verdict = "ok" if check["z_max_rel"] <= Z_RTOL else "FAILED"
                failed |= verdict == "FAILED"
            report["parity"].append(
                {"mode": mode, "precision": precision, **check, "verdict": verdict}
            )
            print(f"[parity] {label}: z max rel {check['z_max_rel']:.2e} {verdict}", flush=True)
            for batch in args.batches:
                if time.perf_counter() - started > args.budget_s:
                    report["skipped"].append(f"{label} batch {batch}")
                    continue
                pick = rng.integers(0, len(images), batch)
                batch_images = torch.from_numpy(images[pick]).to(runner.device)
                row = time_row(runner, batch_images, args.warmup, args.repeats)
                report["rows"].append({"mode": mode, "precision": precision, "batch": batch, **row})
                print(
                    f"[speed] {label:18s} batch {batch:2d}: {row['fps']:9.1f} frames/s  "
                    f"p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms",
                    flush=True,
                )
            del runner
    report["wall_s"] = time.perf_counter() - started
    write_report(args.out, report)
    print(f"wrote {args.out} ({report['wall_s']:.0f} s)")
    if failed:
        print(f"PARITY FAILED: fp32 z differs from the CPU path by more than {Z_RTOL:g}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
