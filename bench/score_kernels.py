"""Per-frame scoring time: alscout's Numba kernels against scipy.ndimage and torch.

One 640x480 frame, K = 5 heads, r = 9, 30x30 regions (SPEC.md §7), float32 maps as
the network emits them. Every implementation is timed in the same run on the same
input, first on one thread and then on all threads; the table gives each one's
median time and its ratio to alscout. The implementations are also checked to agree.

    .venv/bin/python bench/score_kernels.py [--repeats 20] [--height 480 --width 640]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np
from scipy.ndimage import uniform_filter

from alscout.runtime.scoring import aggregate, pixel_scores

RADIUS = 9
REGION = 30


def sigmoid_maps(rng: np.random.Generator, heads: int, height: int, width: int) -> np.ndarray:
    """Smooth maps with confident and unsure areas, like a detector's outputs.

    C-contiguous [K, H, W] float32, the layout ONNX Runtime and TensorRT hand back.
    (Until 2026-11-21 the fancy indexing below left the maps Fortran-ordered, and
    alscout's time included the copy to C order that ``pixel_scores`` makes.)
    """
    coarse = rng.normal(0, 3, size=(heads, height // 16 + 2, width // 16 + 2))
    rows = np.linspace(0, coarse.shape[1] - 1.001, height)
    cols = np.linspace(0, coarse.shape[2] - 1.001, width)
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    logits = (
        coarse[:, r0][:, :, c0] * (1 - fr) * (1 - fc)
        + coarse[:, r0 + 1][:, :, c0] * fr * (1 - fc)
        + coarse[:, r0][:, :, c0 + 1] * (1 - fr) * fc
        + coarse[:, r0 + 1][:, :, c0 + 1] * fr * fc
    ) + rng.normal(0, 0.5, size=(heads, height, width))
    return np.ascontiguousarray(1 / (1 + np.exp(-logits)), dtype=np.float32)


def alscout_score(probs: np.ndarray) -> float:
    return float(aggregate(pixel_scores(probs, radius=RADIUS), region=REGION))


def _entropy_f32(p: np.ndarray) -> np.ndarray:
    q = 1 - p
    return -(p * np.log(np.maximum(p, 1e-30)) + q * np.log(np.maximum(q, 1e-30)))


def scipy_score(probs: np.ndarray) -> float:
    """The scipy.ndimage form: uniform_filter on float32 maps, NumPy entropies."""
    size = 2 * RADIUS + 1
    scores = np.zeros(probs.shape[1:], np.float32)
    for head in probs:
        mean_p = uniform_filter(head, size, mode="nearest")
        mean_h = uniform_filter(_entropy_f32(head), size, mode="nearest")
        scores += _entropy_f32(mean_p) - mean_h
    height, width = scores.shape
    maxima = [
        scores[i : i + REGION, j : j + REGION].max()
        for i in range(0, height, REGION)
        for j in range(0, width, REGION)
    ]
    return float(np.mean(maxima))


def make_torch_score() -> Callable[[np.ndarray], float]:
    """The form public ports use: avg_pool2d without padded counts, ceil-mode max-pool."""
    import torch
    import torch.nn.functional as F

    def entropy(p: torch.Tensor) -> torch.Tensor:
        return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))

    @torch.inference_mode()
    def torch_score(probs: np.ndarray) -> float:
        p = torch.from_numpy(probs)[None]
        size = 2 * RADIUS + 1
        mean_p = F.avg_pool2d(p, size, stride=1, padding=RADIUS, count_include_pad=False)
        mean_h = F.avg_pool2d(entropy(p), size, stride=1, padding=RADIUS, count_include_pad=False)
        scores = (entropy(mean_p) - mean_h).sum(1, keepdim=True)
        return float(F.max_pool2d(scores, REGION, stride=REGION, ceil_mode=True).mean())

    return torch_score


def interleaved_ms(
    implementations: dict[str, Callable[[np.ndarray], float]], probs: np.ndarray, repeats: int
) -> dict[str, tuple[float, float]]:
    """(median, min) ms per implementation, timed round-robin.

    Round-robin rather than one implementation after another, so that a change in the
    machine's load during the run falls on every implementation alike.
    """
    times: dict[str, list[float]] = {name: [] for name in implementations}
    for fn in implementations.values():
        fn(probs)  # warm-up: compilation, allocator
    for _ in range(repeats):
        for name, fn in implementations.items():
            start = time.perf_counter()
            fn(probs)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t) * 1e3, min(t) * 1e3) for name, t in times.items()}


def set_threads(count: int) -> None:
    numba.set_num_threads(count)
    try:
        import torch

        torch.set_num_threads(count)
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--heads", type=int, default=5)
    args = parser.parse_args()

    probs = sigmoid_maps(np.random.default_rng(0), args.heads, args.height, args.width)
    implementations: dict[str, Callable[[np.ndarray], float]] = {
        "alscout (numba)": alscout_score,
        "scipy.ndimage": scipy_score,
    }
    try:
        implementations["torch avg_pool2d"] = make_torch_score()
    except ImportError:
        print("torch not installed: its row is skipped")

    reference = alscout_score(probs)
    for name, fn in implementations.items():
        value = fn(probs)
        agreement = abs(value - reference) / abs(reference)
        print(f"{name:18s} z = {value:.6f} (relative difference to alscout {agreement:.1e})")

    print(
        f"\n{args.width}x{args.height}, K={args.heads}, r={RADIUS}, R={REGION}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.repeats} rounds, implementations interleaved"
    )
    print(
        f"{'threads':>7} {'implementation':18s} {'median ms':>9} {'min ms':>7} "
        f"{'x slower than alscout (median, min)':>36}"
    )
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        set_threads(threads)
        times = interleaved_ms(implementations, probs, args.repeats)
        ours_median, ours_min = times["alscout (numba)"]
        for name, (median, fastest) in times.items():
            print(
                f"{threads:>7} {name:18s} {median:9.2f} {fastest:7.2f} "
                f"{median / ours_median:27.2f} {fastest / ours_min:8.2f}"
            )


if __name__ == "__main__":
    main()
