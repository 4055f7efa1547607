from __future__ import annotations

import numpy as np
import pytest

from alscout.errors import ModelError
from alscout.export.verify import (
    ENGINE_TOLERANCES,
    ONNX_TOLERANCE,
    Comparison,
    Tolerance,
    compare_backends,
    compare_rankings,
    verify_export,
)
from alscout.runtime.backends import open_backend
from alscout.runtime.backends.base import Backend


class Perturbed(Backend):
    """Another backend's output, changed by ``change(probs, images)``."""

    def __init__(self, inner: Backend, change) -> None:
        super().__init__()
        self.inner, self.change = inner, change
        self.name = f"perturbed-{inner.name}"
        self.source = inner.source
        self.model_info = inner.model_info
        self.input_meta, self.output_meta = inner.input_meta, inner.output_meta

    def activate_impl(self) -> None:
        self.inner.activate()

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        return np.clip(self.change(self.inner.infer(images), images), 0, 1).astype(np.float32)

    def deactivate_impl(self) -> None:
        self.inner.deactivate()


def frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(n)]


def test_identical_backends_pass_every_check(tiny_model):
    with open_backend(tiny_model) as a, open_backend(tiny_model) as b:
        report = verify_export(a, b, ONNX_TOLERANCE, frames=frames(6), top=3)
    assert report.passed
    assert all(c.max_abs == 0 for c in report.comparisons)
    assert report.rankings[0].overlap == 1.0
    report.raise_for_failure()
    assert "ok" in report.describe()


def test_small_noise_passes_fp16_tolerance_but_not_onnx_tolerance(tiny_model):
    def noise(probs, images):
        return probs + np.float32(1.5e-3) * np.sign(np.sin(np.arange(probs.size))).reshape(
            probs.shape
        )

    with open_backend(tiny_model) as a, Perturbed(open_backend(tiny_model), noise) as b:
        strict = verify_export(a, b, ONNX_TOLERANCE)
        loose = verify_export(a, b, ENGINE_TOLERANCES["fp16"])
    assert not strict.passed and loose.passed
    assert strict.comparisons[0].max_abs == pytest.approx(1.5e-3, rel=1e-3)
    with pytest.raises(ModelError, match=r"(?s)verification failed.*FAILED max"):
        strict.raise_for_failure()


def test_a_candidate_that_reorders_frames_fails_the_ranking(tiny_model):
    # Frames the reference finds informative become uniform maps, which score 0.
    def flatten_busy_frames(probs, images):
        busy = images.std(axis=(1, 2, 3)) > 0.5
        out = probs.copy()
        out[busy] = 0.5
        return out

    batch = frames(8)
    for f in batch[::2]:
        f[...] = 128 + (f // 8)  # low-contrast frames
    with (
        open_backend(tiny_model) as a,
        Perturbed(open_backend(tiny_model), flatten_busy_frames) as b,
    ):
        report = verify_export(a, b, Tolerance(max_abs=1.0, mean_abs=1.0), frames=batch, top=4)
    ranking = report.rankings[0]
    assert not ranking.passed and ranking.overlap < 1.0
    assert "missing from the candidate" in ranking.describe()


def test_compare_rankings_by_construction():
    z = [0.1, 0.9, 0.5, 0.9, 0.3]
    same = compare_rankings(z, z, top=2, required=1.0)
    assert same.reference_top == (1, 3) and same.passed  # ties: lower index first
    swapped = compare_rankings(z, [0.1, 0.9, 0.95, 0.2, 0.3], top=2, required=1.0)
    assert swapped.candidate_top == (2, 1) and swapped.overlap == 0.5 and not swapped.passed
    assert compare_rankings(z, [0.1, 0.9, 0.95, 0.2, 0.3], top=2, required=0.5).passed
    assert compare_rankings(z, z, top=50, required=1.0).top == 5
    with pytest.raises(ModelError):
        compare_rankings(z, z[:3], top=2, required=1.0)


def test_comparison_thresholds_are_inclusive():
    tol = Tolerance(max_abs=0.1, mean_abs=0.01)
    assert Comparison("x", 0.1, 0.01, 1, tol).passed
    assert not Comparison("x", 0.1001, 0.0, 1, tol).passed
    assert not Comparison("x", 0.0, 0.0101, 1, tol).passed
    assert not Comparison("nothing compared", 0.0, 0.0, 0, tol).passed


def test_compare_backends_counts_frames(tiny_model):
    with open_backend(tiny_model) as a:
        inputs = [np.zeros((2, 3, 32, 32), np.float32), np.ones((3, 3, 40, 24), np.float32)]
        result = compare_backends("same", a, a, inputs, ONNX_TOLERANCE)
    assert result.inputs == 5 and result.passed and result.max_abs == 0.0


def test_engine_tolerances_are_ordered_by_precision():
    fp32, fp16, int8 = (ENGINE_TOLERANCES[p] for p in ("fp32", "fp16", "int8"))
    assert ONNX_TOLERANCE.max_abs <= fp32.max_abs < fp16.max_abs < int8.max_abs
    assert fp16.top_overlap == 1.0  # SPEC §4: the ranking must agree
