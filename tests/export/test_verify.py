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
from alscout.runtime.pipeline import ScoringPipeline


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


def test_a_failure_names_the_values_over_tolerance(tiny_model):
    """The message says how many values are over, where the worst one is ``[n, k, y, x]``
    (n counts frames across batches) and both backends' values there."""
    batch = frames(10)
    batch[9][...] = 128  # a uniform frame: its normalised input has no spread

    def nudge_uniform_frame(probs, images):
        out = probs.copy()
        for n in np.flatnonzero(images.std(axis=(2, 3)).max(axis=1) < 1e-3):
            out[n, 0, 5, 7] -= 2.76e-4
        return out

    with (
        open_backend(tiny_model) as a,
        Perturbed(open_backend(tiny_model), nudge_uniform_frame) as b,
    ):
        report = verify_export(a, b, ONNX_TOLERANCE, frames=batch, top=4)
        reference = a.infer(ScoringPipeline(a).preprocess(batch[8:]))[1, 0, 5, 7]
    random_part, real = report.comparisons
    assert random_part.passed and random_part.over == 0
    assert not real.passed and real.over == 1 and real.mean_abs < 1e-5
    assert real.worst is not None and real.worst.index == (9, 0, 5, 7)
    assert real.worst.reference == pytest.approx(float(reference), abs=1e-7)
    assert real.worst.candidate == pytest.approx(float(reference) - 2.76e-4, abs=1e-6)
    text = real.describe()
    assert "1 of " in text and "values over the tolerance" in text
    assert "worst at [n, k, y, x] = [9, 0, 5, 7]" in text
    assert f"reference {real.worst.reference:.6g}, candidate {real.worst.candidate:.6g}" in text
    with pytest.raises(ModelError, match=r"worst at \[n, k, y, x\] = \[9, 0, 5, 7\]"):
        report.raise_for_failure()


def test_relative_tolerance_scales_with_the_reference(tiny_model):
    def scale(factor):
        return lambda probs, images: probs * np.float32(factor)

    tol = Tolerance(max_abs=0.0, mean_abs=1.0, rtol=0.01)
    with open_backend(tiny_model) as a, Perturbed(open_backend(tiny_model), scale(1.005)) as b:
        assert verify_export(a, b, tol).passed
    with open_backend(tiny_model) as a, Perturbed(open_backend(tiny_model), scale(1.02)) as b:
        failed = verify_export(a, b, tol).comparisons[0]
    assert not failed.passed and failed.over > 0
    assert "(<= 0 + 0.01 * |reference|)" in failed.describe()


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
    assert not Comparison("x", 0.1001, 0.0, 1, tol, over=1).passed
    assert not Comparison("x", 0.0, 0.0101, 1, tol).passed
    assert not Comparison("nothing compared", 0.0, 0.0, 0, tol).passed


def test_elements_at_the_tolerance_pass(tiny_model):
    inputs = [np.zeros((1, 3, 32, 32), np.float32)]
    with (
        Perturbed(open_backend(tiny_model), lambda p, i: p * 0) as zero,
        Perturbed(open_backend(tiny_model), lambda p, i: p * 0 + 0.25) as quarter,
    ):
        assert compare_backends("at", zero, quarter, inputs, Tolerance(0.25, 1.0)).passed
        assert not compare_backends("over", zero, quarter, inputs, Tolerance(0.2499, 1.0)).passed


def test_compare_backends_counts_frames(tiny_model):
    with open_backend(tiny_model) as a:
        inputs = [np.zeros((2, 3, 32, 32), np.float32), np.ones((3, 3, 40, 24), np.float32)]
        result = compare_backends("same", a, a, inputs, ONNX_TOLERANCE)
    assert result.inputs == 5 and result.passed and result.max_abs == 0.0


def test_engine_tolerances_are_ordered_by_precision():
    fp32, fp16, int8 = (ENGINE_TOLERANCES[p] for p in ("fp32", "fp16", "int8"))
    assert ONNX_TOLERANCE.max_abs <= fp32.max_abs < fp16.max_abs < int8.max_abs
    assert fp16.top_overlap == 1.0  # SPEC §4: the ranking must agree
