"""Acquisition functions: one registry from head probabilities to a frame score z.

Every consumer picks its frame scorer here by name: ``alscout al`` (the pool of each
cycle), the runtime pipeline (hence ``alscout serve`` and ``alscout score``). A scorer
maps ``probs [N, K, H, W]`` (sigmoid outputs at the model's input size, mirrors merged)
to ``z [N]`` float64, higher = more worth labeling, and to the score maps
``[N, H, W]`` a heat map is drawn from. docs/scoring.md, "Acquisition functions",
states each definition.

- ``divergence``: the paper, region max-pool (or mean) of
  ``sum_k H(mean_win p_k) - mean_win H(p_k)``;
- ``entropy``: the same reduction of ``sum_k H(p_k)``;
- ``least_confidence``: ``max_i (1 - max(c_i, 1 - c_i))`` over the candidate
  detections' confidences ``c_i``, 0 without any;
- ``instance_count``: detections with confidence > ``count_threshold``;
- ``divergence_count``: ``divergence * (1 + instance_count)``;
- ``difficulty``: the learned difficulty map (DEAL; a model with the difficulty head,
  ``ModelInfo.difficulty``) reduced like the pixel scores, region max-pool (or mean);
  its scorer reads ``difficulty [N, 1, H, W]`` instead of the probabilities;
- ``mc_dropout``: training side only, T stochastic passes of the PyTorch detector.

Detections are decoded as the evaluation decodes them (:mod:`alscout.runtime.detections`:
local maxima of each head above a threshold, the head's default box, greedy NMS).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alscout.errors import ConfigError, InvalidInputError
from alscout.runtime.detections import (
    DEFAULT_BOXES,
    NMS_CONTAINED,
    NMS_IOU,
    REFERENCE_SIZE,
    decode_detections,
)
from alscout.runtime.scoring import (
    AGGREGATIONS,
    aggregate,
    checked_probabilities,
    pixel_scores,
)

__all__ = [
    "AcquisitionConfig",
    "AcquisitionScores",
    "Acquisition",
    "ACQUISITIONS",
    "VEHICLE_ACQUISITIONS",
    "get_acquisition",
    "frame_scores",
    "least_confidence",
    "instance_count",
    "reference_boxes",
]


@dataclass(frozen=True)
class AcquisitionConfig:
    """Settings of the frame scorers; validated on construction.

    ``radius``, ``region``, ``aggregation``: the pixel scores' (SPEC §1).
    ``default_boxes``: K (height, width) in pixels at 640x480 (what
    :func:`~alscout.runtime.detections.decode_detections` takes; :func:`reference_boxes`
    converts a model's). ``candidate_threshold``: a local maximum above it is a candidate
    detection of ``least_confidence`` (0.05: the evaluation's curve threshold).
    ``count_threshold``: a detection above it counts as an instance (0.5: the threshold
    the per-frame errors of ``alscout al`` are counted at). ``nms_iou``,
    ``nms_contained``, ``peak_radius``: the decoder's.
    """

    radius: int = 9
    region: int = 30
    aggregation: str = "maxpool"
    default_boxes: tuple[tuple[float, float], ...] = DEFAULT_BOXES
    candidate_threshold: float = 0.05
    count_threshold: float = 0.5
    nms_iou: float = NMS_IOU
    peak_radius: int = 1
    nms_contained: float = NMS_CONTAINED

    def __post_init__(self) -> None:
        for name, minimum in (("radius", 0), ("region", 1), ("peak_radius", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"aggregation must be one of {sorted(AGGREGATIONS)}, got {self.aggregation!r}"
            )
        for name in ("candidate_threshold", "count_threshold", "nms_iou", "nms_contained"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
            object.__setattr__(self, name, float(value))
        boxes = tuple((float(h), float(w)) for h, w in self.default_boxes)
        if not boxes or any(not (h > 0 and w > 0) for h, w in boxes):
            raise ConfigError(f"default_boxes must be (height, width) > 0 pairs, got {boxes}")
        object.__setattr__(self, "default_boxes", boxes)


@dataclass(frozen=True)
class AcquisitionScores:
    """Scores of N frames: ``z [N]`` float64 and the maps ``[N, H, W]`` float32 whose
    block maxima form the heat map (the score map S for pixel scores; docs/scoring.md
    names the map of each detection-based score)."""

    z: np.ndarray
    maps: np.ndarray


#: probs [N, K, H, W] (not checked yet: each scorer checks as it reads), config -> scores
Scorer = Callable[[np.ndarray, AcquisitionConfig], AcquisitionScores]


@dataclass(frozen=True)
class Acquisition:
    """One registry entry.

    ``score``: the frame scorer, or None for a method that needs more than one
    probability map per frame (``mc_dropout``: run by ``alscout al`` itself).
    ``pixel_method``: the pixel score of :func:`~alscout.runtime.scoring.pixel_scores`
    whose aggregate z is, or None when z is not an aggregate of a score map (such a
    method cannot use a model with the scores inside its graph).
    ``needs_difficulty``: the scorer reads the model's learned difficulty maps
    ``[N, 1, H, W]`` (``frame_scores(..., difficulty=...)``) instead of ``probs``.
    """

    name: str
    summary: str
    score: Scorer | None
    pixel_method: str | None = None
    needs_difficulty: bool = False

    @property
    def on_vehicle(self) -> bool:
        """Whether the runtime pipeline (and so ``serve`` and ``score``) can run it."""
        return self.score is not None


def _pixel(method: str) -> Scorer:
    def score(batch: np.ndarray, config: AcquisitionConfig) -> AcquisitionScores:
        maps = pixel_scores(batch, radius=config.radius, method=method)
        z = np.asarray(aggregate(maps, config.region, config.aggregation), np.float64)
        return AcquisitionScores(z.reshape(-1), maps)

    return score


def least_confidence(probs: np.ndarray, config: AcquisitionConfig | None = None) -> float:
    """``max_i min(c_i, 1 - c_i)`` over one frame's candidate detections; 0 without any.

    ``probs``: ``[K, H, W]`` in [0, 1]. Candidates: local maxima above
    ``config.candidate_threshold`` after NMS. ``min(c, 1 - c) = 1 - max(c, 1 - c)`` is the
    least-confidence of the binary decision "pedestrian here or not", in [0, 0.5].
    """
    return _least_confidence_of(_one_frame(probs), config or AcquisitionConfig())


def instance_count(probs: np.ndarray, config: AcquisitionConfig | None = None) -> int:
    """Detections with confidence > ``config.count_threshold`` in one frame ``[K, H, W]``."""
    return _count_of(_one_frame(probs), config or AcquisitionConfig())


def _one_frame(probs: np.ndarray) -> np.ndarray:
    if np.ndim(probs) != 3:
        raise InvalidInputError(f"probs must be one frame [K,H,W], got shape {np.shape(probs)}")
    return checked_probabilities(probs)[0]


def _least_confidence_of(frame: np.ndarray, config: AcquisitionConfig) -> float:
    _, confidences = _detections(frame, config, config.candidate_threshold)
    if not len(confidences):
        return 0.0
    c = confidences.astype(np.float64)
    return float(np.minimum(c, 1.0 - c).max())


def _count_of(frame: np.ndarray, config: AcquisitionConfig) -> int:
    boxes, _ = _detections(frame, config, config.count_threshold)
    return len(boxes)


def _detections(
    probs: np.ndarray, config: AcquisitionConfig, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    if probs.shape[0] != len(config.default_boxes):
        raise InvalidInputError(
            f"probs has {probs.shape[0]} heads but the acquisition settings have "
            f"{len(config.default_boxes)} default boxes (the model's metadata gives them)"
        )
    return decode_detections(
        probs,
        config.default_boxes,
        threshold,
        config.nms_iou,
        config.peak_radius,
        nms_contained=config.nms_contained,
    )


def _least_confidence(batch: np.ndarray, config: AcquisitionConfig) -> AcquisitionScores:
    batch = checked_probabilities(batch)
    z = np.asarray([_least_confidence_of(frame, config) for frame in batch], np.float64)
    # heat map: the most uncertain head per pixel
    maps = np.minimum(batch, np.float32(1.0) - batch).max(axis=1).astype(np.float32)
    return AcquisitionScores(z, maps)


def _instance_count(batch: np.ndarray, config: AcquisitionConfig) -> AcquisitionScores:
    batch = checked_probabilities(batch)
    z = np.asarray([_count_of(frame, config) for frame in batch], np.float64)
    # heat map: the most confident head per pixel (where the counted instances are)
    return AcquisitionScores(z, batch.max(axis=1).astype(np.float32))


def _divergence_count(batch: np.ndarray, config: AcquisitionConfig) -> AcquisitionScores:
    divergence = _pixel("divergence")(batch, config)  # checks the values
    counts = np.asarray([_count_of(frame, config) for frame in batch], np.float64)
    return AcquisitionScores(divergence.z * (1.0 + counts), divergence.maps)


def _difficulty(batch: np.ndarray, config: AcquisitionConfig) -> AcquisitionScores:
    """``batch``: difficulty maps ``[N, 1, H, W]`` in [0, 1] (not probabilities)."""
    maps = checked_probabilities(batch, "difficulty")
    if maps.shape[1] != 1:
        raise InvalidInputError(f"difficulty must be [N, 1, H, W], got shape {maps.shape}")
    maps = np.ascontiguousarray(maps[:, 0], dtype=np.float32)
    z = np.asarray(aggregate(maps, config.region, config.aggregation), np.float64)
    return AcquisitionScores(z.reshape(-1), maps)


#: Every acquisition function by name (docs/scoring.md, "Acquisition functions").
ACQUISITIONS: dict[str, Acquisition] = {
    a.name: a
    for a in (
        Acquisition(
            "divergence",
            "the paper: divergence of the window mean from the pixels (SPEC §1)",
            _pixel("divergence"),
            pixel_method="divergence",
        ),
        Acquisition(
            "entropy",
            "binary entropy of each pixel, summed over heads",
            _pixel("entropy"),
            pixel_method="entropy",
        ),
        Acquisition(
            "least_confidence",
            "1 - max(c, 1 - c) of the least confident candidate detection",
            _least_confidence,
        ),
        Acquisition("instance_count", "detections above the count threshold", _instance_count),
        Acquisition(
            "divergence_count",
            "divergence weighted by the predicted instances: z * (1 + count)",
            _divergence_count,
        ),
        Acquisition(
            "difficulty",
            "learned difficulty map (DEAL) of a model with the difficulty head, max-pooled",
            _difficulty,
            needs_difficulty=True,
        ),
        Acquisition(
            "mc_dropout",
            "MC dropout: T stochastic passes of the PyTorch detector (alscout al only)",
            None,
        ),
    )
}

#: the names the runtime pipeline scores with (no PyTorch)
VEHICLE_ACQUISITIONS: tuple[str, ...] = tuple(n for n, a in ACQUISITIONS.items() if a.on_vehicle)


def get_acquisition(name: str, *, vehicle: bool = False) -> Acquisition:
    """The entry ``name``; :class:`ConfigError` listing the choices when unknown, or
    (``vehicle``) when the pipeline cannot run it."""
    entry = ACQUISITIONS.get(name)
    if entry is None:
        raise ConfigError(f"unknown acquisition {name!r}; choose from {sorted(ACQUISITIONS)}")
    if vehicle and not entry.on_vehicle:
        raise ConfigError(
            f"acquisition {name!r} needs stochastic passes of the PyTorch detector and runs "
            f"in `alscout al` only; on the vehicle choose from {sorted(VEHICLE_ACQUISITIONS)}"
        )
    return entry


def frame_scores(
    probs: np.ndarray,
    method: str = "divergence",
    config: AcquisitionConfig | None = None,
    *,
    difficulty: np.ndarray | None = None,
) -> AcquisitionScores:
    """Score frames with the acquisition function ``method``.

    Args:
        probs: ``[K, H, W]`` or ``[N, K, H, W]`` probabilities in [0, 1].
        method: a name of :data:`VEHICLE_ACQUISITIONS`.
        config: its settings; default :class:`AcquisitionConfig()`.
        difficulty: the same frames' learned difficulty maps ``[1, H, W]`` or
            ``[N, 1, H, W]`` in [0, 1] (a model with the difficulty head); needed by
            ``difficulty``, ignored by the others.

    Returns:
        ``z [N]`` float64 and maps ``[N, H, W]`` float32 (N = 1 for one frame).
    """
    entry = get_acquisition(method, vehicle=True)
    assert entry.score is not None  # on_vehicle
    batch = _rank4(probs, "probs", "K")
    if entry.needs_difficulty:
        if difficulty is None:
            raise InvalidInputError(
                f"acquisition {method!r} needs the difficulty maps [N, 1, H, W] of a model "
                "with the learned difficulty head (difficulty=...)"
            )
        maps = _rank4(difficulty, "difficulty", "1")
        n, _, h, w = batch.shape
        if maps.shape != (n, 1, h, w):
            raise InvalidInputError(
                f"difficulty {maps.shape} does not fit probs {batch.shape}: need {(n, 1, h, w)}"
            )
        batch = maps
    return entry.score(batch, config or AcquisitionConfig())


def _rank4(values: np.ndarray, name: str, channels: str) -> np.ndarray:
    """``[C, H, W]`` -> ``[1, C, H, W]``; ``[N, C, H, W]`` as it is; other ranks refused."""
    batch = np.asarray(values)
    if batch.ndim == 3:
        return batch[np.newaxis]
    if batch.ndim != 4:
        raise InvalidInputError(
            f"{name} must have rank 3 [{channels},H,W] or 4 [N,{channels},H,W], got shape "
            f"{batch.shape}"
        )
    return batch


def reference_boxes(
    default_boxes: Sequence[tuple[float, float]], input_size: tuple[int, int]
) -> tuple[tuple[float, float], ...]:
    """A model's default boxes (height, width) at its ``input_size`` (height, width),
    rescaled to the 640x480 the decoder takes them at."""
    height, width = input_size
    ref_w, ref_h = REFERENCE_SIZE
    if min(height, width) < 1 or not all(math.isfinite(v) for box in default_boxes for v in box):
        raise InvalidInputError(f"bad input size {input_size} or boxes {default_boxes}")
    return tuple((bh * ref_h / height, bw * ref_w / width) for bh, bw in default_boxes)
