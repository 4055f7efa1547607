"""Check a model with the scores inside its graph against the float64 Numba path.

The reference is the plain model's probabilities (frames and mirrors in one batch when
the graph double-evaluates, merged by :func:`~alscout.runtime.scoring.merge_mirrored`)
scored by :mod:`alscout.runtime.scoring`; the candidate is the in-graph model's own
``z``, ``heatmap`` and (if kept) ``probs``. SPEC §4: z to 1e-4 relative; the heat map
to 1e-3 absolute (:data:`SCORES_TOLERANCE`; docs/scoring.md says why z holds tighter
than the pixels).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from alscout.errors import ConfigError, ModelError
from alscout.export.verify import VerifyReport, random_inputs
from alscout.runtime.backends.base import Backend
from alscout.runtime.model_info import GraphScoring
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline, block_max
from alscout.runtime.scoring import aggregate, merge_mirrored, pixel_scores

__all__ = [
    "ScoreTolerance",
    "SCORES_TOLERANCE",
    "ReferenceScores",
    "ScoreComparison",
    "ScoresReport",
    "reference_scores",
    "compare_scores",
    "verify_scores_export",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreTolerance:
    """What an in-graph model may differ from the reference by.

    ``z_rtol``: ``|dz| <= z_rtol * |z_ref| + z_atol`` per frame (``z_atol`` only keeps a
    score of exactly 0 from needing an exact 0); ``heatmap_atol``: per cell;
    ``probs_atol``: per kept probability.
    """

    z_rtol: float = 1e-4
    z_atol: float = 1e-9
    heatmap_atol: float = 1e-3
    probs_atol: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("z_rtol", "z_atol", "heatmap_atol", "probs_atol"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise ConfigError(f"tolerance {name} must be >= 0, got {value}")


#: SPEC §4: z to 1e-4 relative; heat map to 1e-3 absolute.
SCORES_TOLERANCE = ScoreTolerance()


@dataclass(frozen=True)
class ReferenceScores:
    """The float64 Numba path's results for N frames: ``z [N]`` float64,
    ``heatmap [N, h, w]`` and merged ``probs [N, K, H, W]`` float32."""

    z: np.ndarray
    heatmap: np.ndarray
    probs: np.ndarray


@dataclass(frozen=True)
class ScoreComparison:
    """Differences between an in-graph model and the reference over a set of inputs.

    ``z_rel``: the largest ``|dz| / |z_ref|``; ``worst_frame``: where (counting frames
    across the compared batches) with both values; ``probs_max_abs``: None when the
    model keeps no probabilities.
    """

    name: str
    inputs: int
    tolerance: ScoreTolerance
    z_rel: float = 0.0
    z_over: int = 0
    worst_frame: tuple[int, float, float] | None = None
    heatmap_max_abs: float = 0.0
    probs_max_abs: float | None = None

    @property
    def passed(self) -> bool:
        """Within tolerance on at least one input (nothing compared is not a pass)."""
        tol = self.tolerance
        probs_ok = self.probs_max_abs is None or self.probs_max_abs <= tol.probs_atol
        return (
            self.inputs > 0
            and self.z_over == 0
            and self.heatmap_max_abs <= tol.heatmap_atol
            and probs_ok
        )

    def describe(self) -> str:
        tol = self.tolerance
        text = (
            f"{self.name}: {'ok' if self.passed else 'FAILED'} z max rel {self.z_rel:.3g} "
            f"(<= {tol.z_rtol:g}), heat map max |diff| {self.heatmap_max_abs:.3g} "
            f"(<= {tol.heatmap_atol:g})"
        )
        if self.probs_max_abs is not None:
            text += f", probs max |diff| {self.probs_max_abs:.3g} (<= {tol.probs_atol:g})"
        text += f" over {self.inputs} inputs"
        if self.z_over and self.worst_frame is not None:
            frame, ref, cand = self.worst_frame
            text += (
                f"; {self.z_over} frames over the z tolerance, worst frame {frame}: "
                f"reference {ref:.9g}, candidate {cand:.9g}"
            )
        return text


@dataclass
class ScoresReport:
    """All checks of one in-graph verification (the interface of ``VerifyReport``).

    ``plain``: the verification of the plain model the scores were added to, when
    there was one (an export from a checkpoint: ONNX Runtime against PyTorch).
    """

    reference: str
    candidate: str
    comparisons: list[ScoreComparison] = field(default_factory=list)
    plain: VerifyReport | None = None

    @property
    def passed(self) -> bool:
        plain_ok = self.plain is None or self.plain.passed
        return plain_ok and bool(self.comparisons) and all(c.passed for c in self.comparisons)

    def describe(self) -> str:
        lines = [self.plain.describe()] if self.plain is not None else []
        lines.append(f"{self.candidate} (scores in the graph) vs {self.reference} + Numba scoring:")
        lines += [f"  {c.describe()}" for c in self.comparisons]
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        if not self.passed:
            raise ModelError(f"verification failed: {self.describe()}")


def reference_scores(plain: Backend, images: np.ndarray, scoring: GraphScoring) -> ReferenceScores:
    """What the Numba path makes of ``images [N, 3, H, W]`` with ``plain``'s probabilities.

    ``plain``: an active backend of a plain model (``probs`` out). Frames and mirrors
    go through it in one call when ``scoring.double_evaluation``, as the pipeline does.
    """
    n = images.shape[0]
    if scoring.double_evaluation:
        both = plain.infer(np.ascontiguousarray(np.concatenate([images, images[..., ::-1]])))
        probs = merge_mirrored(both[:n], both[n:])
    else:
        probs = plain.infer(images)
    maps = pixel_scores(probs, radius=scoring.radius, method=scoring.method)
    z = np.asarray(aggregate(maps, region=scoring.region, how=scoring.aggregation), np.float64)
    return ReferenceScores(z=z, heatmap=block_max(maps, scoring.heatmap_stride), probs=probs)


def compare_scores(
    name: str,
    reference: Backend,
    candidate: Backend,
    inputs: Iterable[np.ndarray],
    tolerance: ScoreTolerance = SCORES_TOLERANCE,
) -> ScoreComparison:
    """Run each ``[B, 3, H, W]`` through the plain ``reference`` plus Numba scoring and
    through the in-graph ``candidate`` (both active); compare z, heat maps, probs."""
    scoring = candidate.model_info.scoring
    if scoring is None:
        raise ModelError(f"{candidate.source}: not a model with the scores inside its graph")
    frames, over, z_rel, heat, probs_abs = 0, 0, 0.0, 0.0, None
    worst: tuple[int, float, float] | None = None
    worst_excess = -np.inf
    for images in inputs:
        ref = reference_scores(reference, images, scoring)
        cand = candidate.infer_scores(images)
        dz = np.abs(cand.z.astype(np.float64) - ref.z)
        excess = np.nan_to_num(dz - tolerance.z_rtol * np.abs(ref.z), nan=np.inf)
        excess -= tolerance.z_atol
        over += int(np.count_nonzero(excess > 0))
        i = int(np.argmax(excess))
        if excess[i] > worst_excess:
            worst_excess = float(excess[i])
            worst = (frames + i, float(ref.z[i]), float(cand.z[i]))
        rel = dz / np.maximum(np.abs(ref.z), np.finfo(np.float64).tiny)
        z_rel = max(z_rel, float(np.nan_to_num(rel, nan=np.inf).max()))
        diff = np.abs(cand.heatmap.astype(np.float64) - ref.heatmap)
        heat = max(heat, float(np.nan_to_num(diff, nan=np.inf).max()))
        if cand.probs is not None:
            pdiff = np.nan_to_num(np.abs(cand.probs - ref.probs), nan=np.inf)
            probs_abs = max(probs_abs or 0.0, float(pdiff.max()))
        frames += images.shape[0]
    comparison = ScoreComparison(name, frames, tolerance, z_rel, over, worst, heat, probs_abs)
    log.info("score comparison %s", comparison.describe())
    return comparison


def verify_scores_export(
    reference: Backend,
    candidate: Backend,
    tolerance: ScoreTolerance = SCORES_TOLERANCE,
    *,
    frames: Sequence[np.ndarray] = (),
    rng: np.random.Generator | None = None,
    batch_size: int = 8,
) -> ScoresReport:
    """Compare the in-graph ``candidate`` with the plain ``reference`` + Numba scoring.

    On random inputs (the input size and two odd sizes) and on real ``frames`` (RGB
    uint8 ``[H, W, 3]``, resized and normalised as the pipeline does, in batches of
    ``batch_size``). Both backends must already be active.
    """
    rng = rng or np.random.default_rng(0)
    report = ScoresReport(reference=reference.name, candidate=candidate.name)
    inputs = [
        x
        for x in random_inputs(reference.model_info, rng)
        if candidate.shape_problem(x.shape) is None and reference.shape_problem(x.shape) is None
    ]
    report.comparisons.append(
        compare_scores("random inputs", reference, candidate, inputs, tolerance)
    )
    if len(frames) > 0:
        # the plain backend is not activated again, only used to preprocess
        pipeline = ScoringPipeline(reference, PipelineConfig(batch_size=batch_size))
        batches = [
            pipeline.preprocess(frames[i : i + batch_size])
            for i in range(0, len(frames), batch_size)
        ]
        report.comparisons.append(
            compare_scores("real frames", reference, candidate, batches, tolerance)
        )
    log.info("verification %s", report.describe())
    return report
