"""Scoring the unlabeled pool with the code the car runs, and counting each frame's errors.

Each cycle's detector is exported to ONNX and scored by
:class:`~alscout.runtime.pipeline.ScoringPipeline` on ONNX Runtime CPU (resize,
normalise, double evaluation) with the method's acquisition function
(:mod:`alscout.runtime.acquisition`, the registry the vehicle uses). The same forward
pass also gives each frame's detections, hence its false positives and false negatives
against the ground truth (and the number of persons that count): what the random
control slice and the rank checks compare.
With ``[scoring] quality_gate`` each scored frame is also measured by the vehicle's
quality gate, and the frames it holds back are marked (never picked).

MC dropout needs stochastic passes, which an ONNX export (traced in eval mode, dropout
folded away) cannot give; that baseline runs the PyTorch detector with dropout kept on
(:meth:`Detector.enable_mc_dropout`) on the pipeline's own preprocessed inputs, with
double evaluation. Dropout sits after the encoder-decoder, so the T passes share one
feature pass (:meth:`Detector.sample_probabilities`); the masks are drawn in the order
of T full passes, so the scores equal (to ~1e-6) those of T passes through the
PyTorch backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from alscout.errors import InvalidInputError
from alscout.runtime.backends.base import PROBE_SIDE
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline
from alscout.runtime.quality import QualityConfig
from alscout.trainer.al.config import EvaluationConfig, ScoringConfig
from alscout.trainer.al.methods import Method
from alscout.trainer.data.annotations import Dataset, ImageRecord
from alscout.trainer.data.filters import BoxFilter, filter_record

__all__ = [
    "PoolScores",
    "McDropoutSampler",
    "export_model",
    "score_pool",
    "FrameCounts",
    "frame_counts",
    "frame_errors",
    "spearman",
]

log = logging.getLogger(__name__)


@dataclass
class PoolScores:
    """Per pool position: ``z [P]`` float64 (NaN where not scored), ``false_positives``,
    ``false_negatives`` and ``ground_truth`` (the persons that count, not ignore)
    ``[P]`` int64 (-1 where not counted; ``ground_truth`` None: not kept), ``gated [P]``
    bool (the quality gate held the frame back; None without a gate); ``seconds``: wall
    time of inference and scoring; ``frames``: how many frames went through."""

    z: np.ndarray
    false_positives: np.ndarray
    false_negatives: np.ndarray
    seconds: float
    frames: int
    gated: np.ndarray | None = None
    ground_truth: np.ndarray | None = None

    @property
    def low_quality(self) -> list[int]:
        """Positions the quality gate held back, increasing."""
        return [] if self.gated is None else [int(p) for p in np.flatnonzero(self.gated)]

    @property
    def errors(self) -> np.ndarray:
        """False positives plus false negatives ``[P]`` (-1 where not counted)."""
        both = self.false_positives + self.false_negatives
        return np.where(self.false_positives < 0, -1, both)

    @property
    def error_rate(self) -> np.ndarray:
        """``(FP + FN) / (GT + FP)`` ``[P]`` float64, 0 where GT + FP = 0, NaN where not
        counted (:func:`alscout.trainer.al.stats.error_rate`)."""
        from alscout.trainer.al.stats import error_rate

        if self.ground_truth is None:
            raise InvalidInputError("these pool scores kept no ground-truth counts")
        return error_rate(self.false_positives, self.false_negatives, self.ground_truth)


def export_model(checkpoint: Path, out: Path, version: str) -> Path:
    """Export ``checkpoint`` to the ONNX file ``out`` (model contract, SPEC §4)."""
    from alscout.trainer.checkpoint_export import export_checkpoint

    export_checkpoint(checkpoint, out, version=version, missing_digest="unknown", verify=False)
    return out


class FrameCounts(NamedTuple):
    """One frame's detections against its ground truth at the error threshold."""

    false_positives: int
    false_negatives: int
    ground_truth: int  # persons that count (not ignore)


def frame_errors(
    record: ImageRecord,
    probs: np.ndarray,
    boxes_640: Sequence[tuple[float, float]],
    evaluation: EvaluationConfig,
) -> tuple[int, int]:
    """(false positives, false negatives) of one frame: :func:`frame_counts`."""
    counts = frame_counts(record, probs, boxes_640, evaluation)
    return counts.false_positives, counts.false_negatives


def frame_counts(
    record: ImageRecord,
    probs: np.ndarray,
    boxes_640: Sequence[tuple[float, float]],
    evaluation: EvaluationConfig,
) -> FrameCounts:
    """False positives, false negatives and ground-truth persons of one frame, with the
    detections above ``evaluation.error_threshold``.

    ``probs``: ``[K, h, w]`` head maps at the model's input size; boxes are scaled to
    the record's pixels. Ground truth the network cannot represent (the paper's
    filters, measured at the input size) is ignore, as in the Caltech evaluation: it
    is neither a false negative nor counted in ``ground_truth``, and a detection on it
    is no false positive.
    """
    from alscout.trainer.evaluation.caltech import match_image
    from alscout.trainer.evaluation.detections import decode_detections

    _, h, w = probs.shape
    boxes, scores = decode_detections(
        probs, boxes_640, evaluation.error_threshold, evaluation.nms_iou
    )
    scale = np.array([record.width / w, record.height / h] * 2, np.float64)
    truth = filter_record(record, BoxFilter.at_input(h, w)).boxes
    gt = np.array([[b.x, b.y, b.w, b.h] for b in truth], np.float64).reshape(-1, 4)
    ignore = np.array([b.ignore for b in truth], bool)
    det_type, matched = match_image(boxes * scale, scores, gt, ignore)
    return FrameCounts(
        int((det_type == 0).sum()), int((~ignore & ~matched).sum()), int((~ignore).sum())
    )


def score_pool(
    model_path: Path,
    pool: Dataset,
    positions: Sequence[int],
    method: Method | None,
    scoring: ScoringConfig,
    evaluation: EvaluationConfig,
    *,
    threads: int = 1,
    checkpoint: Path | None = None,
    seed: int = 0,
) -> PoolScores:
    """Score pool ``positions`` with ``model_path`` (ONNX) and count their errors.

    ``method``: whose image score z to compute (None or a random method: errors only).
    ``checkpoint``: the same detector's checkpoint, needed by "mc_dropout";
    ``seed`` seeds its dropout masks. With ``scoring.quality_gate`` the scored frames
    are measured by the quality gate too (``PoolScores.gated``).
    """
    import numba

    from alscout.runtime.acquisition import frame_scores, get_acquisition
    from alscout.runtime.backends.onnxruntime import OnnxRuntimeBackend, OrtOptions
    from alscout.runtime.scoring import aggregate, mc_dropout_scores
    from alscout.trainer.data.images import load_image

    # One Numba thread per allowed thread: its OpenMP pool is the one PyTorch uses in
    # this process, and a bigger pool left spinning slows the next finetuning ~20x.
    # (numba.config sets NUMBA_NUM_THREADS at import time through globals(): unseen by mypy)
    pool_max = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    numba.set_num_threads(max(1, min(threads, pool_max)))
    n = len(pool)
    z = np.full(n, np.nan)
    fp = np.full(n, -1, np.int64)
    fn = np.full(n, -1, np.int64)
    gt = np.full(n, -1, np.int64)
    gate = method is not None and method.scored and scoring.quality_gate
    gated = np.zeros(n, bool) if gate else None
    config = PipelineConfig(
        batch_size=scoring.batch_size,
        double_evaluation=scoring.double_evaluation,
        radius=scoring.radius,
        region=scoring.region,
        aggregation=method.aggregation if method is not None else "maxpool",
        candidate_threshold=evaluation.threshold,
        count_threshold=evaluation.error_threshold,
        nms_iou=evaluation.nms_iou,
        quality=QualityConfig() if gate else None,
    )
    backend = OnnxRuntimeBackend(model_path, "cpu", OrtOptions(intra_op_threads=threads))
    mc = None
    if method is not None and method.score == "mc_dropout":
        if checkpoint is None:
            raise InvalidInputError("mc_dropout scoring needs the detector's checkpoint")
        mc = McDropoutSampler(
            checkpoint, scoring.mc_samples, scoring.mc_rate, scoring.double_evaluation, seed
        )
    # "difficulty" reads the model's learned difficulty map, from the same forward pass
    wants_difficulty = (
        method is not None and method.scored and get_acquisition(method.score).needs_difficulty
    )
    seconds = 0.0
    with ScoringPipeline(backend, config) as pipeline:
        boxes_640 = _boxes_at_640(pipeline)
        acquisition = config.acquisition(tuple(boxes_640))
        todo = [int(p) for p in positions]
        for start in range(0, len(todo), scoring.batch_size):
            batch = todo[start : start + scoring.batch_size]
            images = [load_image(pool[p]) for p in batch]
            began = time.perf_counter()
            probs, difficulty = pipeline.maps(images, difficulty=wants_difficulty)
            if mc is not None and method is not None:
                samples = mc.sample(pipeline.preprocess(images), threads)
                maps = mc_dropout_scores(samples)
                z[batch] = aggregate(maps, scoring.region, method.aggregation)
            elif method is not None and method.scored:
                z[batch] = frame_scores(probs, method.score, acquisition, difficulty=difficulty).z
            if gated is not None and config.quality is not None:
                for p, quality in zip(batch, pipeline.quality(images) or [], strict=True):
                    gated[p] = bool(config.quality.failures(quality))
            seconds += time.perf_counter() - began
            for p, maps in zip(batch, probs, strict=True):
                fp[p], fn[p], gt[p] = frame_counts(pool[p], maps, boxes_640, evaluation)
    if gated is not None and gated.any():
        log.info("quality gate held back %d of %d pool frames", int(gated.sum()), len(todo))
    return PoolScores(z, fp, fn, seconds, len(positions), gated, gt)


def _boxes_at_640(pipeline: ScoringPipeline) -> list[tuple[float, float]]:
    """The model's default boxes (metadata: at its input size) rescaled to 640x480."""
    info = pipeline.model_info
    h, w = info.input_size
    return [(bh * 480.0 / h, bw * 640.0 / w) for bh, bw in info.default_boxes]


class McDropoutSampler:
    """T MC-dropout passes of a checkpoint's detector, sharing one feature pass per batch.

    ``samples`` T and ``rate``: SPEC §1's MC dropout; ``double``: double evaluation
    (each frame and its mirror, the mirror with its own features, merged per pass
    as the pipeline merges them); ``seed`` seeds torch's generator once. The masks
    are drawn as by the earlier implementation, T passes of a ``ScoringPipeline``
    over the PyTorch reference backend seeded before it was activated: one pass on
    the backend's probe frame first, then per batch and pass the pipeline's masks.
    Its scores equal the earlier implementation's to ~1e-6 (the blocks after
    dropout run image by image, :meth:`Detector.sample_probabilities`).
    """

    def __init__(
        self, checkpoint: Path, samples: int, rate: float, double: bool, seed: int
    ) -> None:
        import torch

        from alscout.trainer.checkpoint import load_checkpoint

        self.detector = load_checkpoint(checkpoint).build_model()
        self.detector.enable_mc_dropout(True, rate)
        self.samples = samples
        self.double = double
        self._buffers: dict[str, np.ndarray] = {}  # reused: hundreds of MB per batch
        torch.manual_seed(seed)
        with torch.inference_mode():  # the reference backend's probe pass at activation
            self.detector(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE))

    def sample(self, inputs: np.ndarray, threads: int = 1) -> np.ndarray:
        """Preprocessed ``inputs [N, 3, H, W]`` float32 -> probabilities ``[N, T, K, H, W]``
        float32, mirrors merged when ``double``; torch runs with ``threads`` threads.
        The result is a buffer that the next call overwrites."""
        import torch

        n, _, height, width = inputs.shape
        if self.double:
            inputs = np.concatenate([inputs, inputs[..., ::-1]])
        shape = (len(inputs), self.samples, self.detector.config.num_heads, height, width)
        probs = self._buffer("probs", shape)
        saved = torch.get_num_threads()
        torch.set_num_threads(max(1, threads))
        try:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32))
                self.detector.sample_probabilities(x, self.samples, out=torch.from_numpy(probs))
        finally:
            torch.set_num_threads(saved)
        if not self.double:
            return probs
        # runtime.scoring.merge_mirrored's arithmetic, into a kept buffer
        merged = self._buffer("merged", (n, *shape[1:]))
        np.add(probs[:n], probs[n:][..., ::-1], out=merged, dtype=np.float32)
        merged *= np.float32(0.5)
        return merged

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array of ``shape`` kept between calls (a view of a larger one)."""
        size = int(np.prod(shape))
        kept = self._buffers.get(name)
        if kept is None or kept.size < size:
            kept = self._buffers[name] = np.empty(size, np.float32)
        return kept[:size].reshape(shape)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of ``a [n]`` and ``b [n]`` (ties: average ranks); NaN
    when either is constant or n < 2."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise InvalidInputError(f"spearman needs two [n] arrays, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]
