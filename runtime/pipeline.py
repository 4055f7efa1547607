"""From decoded frames to image scores: the one path the server and offline tools share.

resize to the model's input size (area interpolation when shrinking, bilinear when
enlarging: the trainer's rule) -> normalise as the model's metadata says -> batched
inference, each frame with its horizontal mirror in the same batch (double
evaluation, SPEC §1) -> the acquisition function's image score z
(:mod:`alscout.runtime.acquisition`; default the paper's divergence), and on request
a low-resolution heat map of its score map. With a quality gate
(:mod:`alscout.runtime.quality`) each decoded frame is also measured, and a frame that
fails is marked ``low_quality`` (the selector never flags it).

A model with the scores inside its graph (``ModelInfo.scoring``) does the mirroring,
scoring and heat map itself: the pipeline then takes its ``z`` and ``heatmap``, and
neither probabilities nor Numba scoring are involved. Its settings must equal the
pipeline's (:data:`SCORING_PATHS`, :meth:`ScoringPipeline.scoring_path`).

The ``difficulty`` acquisition function reads the learned difficulty map of a model
with the difficulty head (``ModelInfo.difficulty``), mirrors merged as the
probabilities are; a model without that output, or with the scores inside its graph,
is refused with a :class:`ConfigError` when the pipeline is built.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

from alscout.errors import ConfigError, InvalidInputError, ModelError
from alscout.runtime.acquisition import (
    AcquisitionConfig,
    frame_scores,
    get_acquisition,
    reference_boxes,
)
from alscout.runtime.backends.base import Backend
from alscout.runtime.detections import DEFAULT_BOXES
from alscout.runtime.model_info import GraphScoring, ModelInfo
from alscout.runtime.quality import FrameQuality, QualityConfig, measure_quality
from alscout.runtime.scoring import AGGREGATIONS, merge_mirrored

__all__ = [
    "SCORING_PATHS",
    "PipelineConfig",
    "FrameScore",
    "ScoringPipeline",
    "block_max",
    "resize_frame",
]

#: where z is computed: inside the model's graph, or by the Numba kernels after it
SCORING_PATHS = ("in_graph", "numba")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """How frames are scored; validated on construction.

    ``batch_size``: frames per inference call (the backend sees twice as many with
    ``double_evaluation``). ``method``: the acquisition function, a name of
    :data:`~alscout.runtime.acquisition.VEHICLE_ACQUISITIONS`. ``radius``, ``region``,
    ``aggregation``: SPEC §1. ``candidate_threshold``, ``count_threshold``, ``nms_iou``:
    the detection-based acquisition functions'
    (:class:`~alscout.runtime.acquisition.AcquisitionConfig`).
    ``heatmap_stride``: side in pixels (at the model's input size) of the blocks whose
    maximum forms one heat-map cell. ``input_size``: (height, width) override; None
    uses the model's metadata. ``quality``: the quality gate's limits, or None (off);
    ``True`` or a mapping of limits (a TOML table) is turned into a
    :class:`~alscout.runtime.quality.QualityConfig`.
    """

    batch_size: int = 8
    double_evaluation: bool = True
    radius: int = 9
    region: int = 30
    method: str = "divergence"
    aggregation: str = "maxpool"
    heatmap_stride: int = 16
    input_size: tuple[int, int] | None = None
    candidate_threshold: float = 0.05
    count_threshold: float = 0.5
    nms_iou: float = 0.5
    quality: QualityConfig | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.radius < 0:
            raise ConfigError(f"radius must be >= 0, got {self.radius}")
        if self.region < 1:
            raise ConfigError(f"region must be >= 1, got {self.region}")
        get_acquisition(self.method, vehicle=True)  # ConfigError naming the choices
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"aggregation must be one of {sorted(AGGREGATIONS)}, got {self.aggregation!r}"
            )
        if self.heatmap_stride < 1:
            raise ConfigError(f"heatmap_stride must be >= 1, got {self.heatmap_stride}")
        if self.input_size is not None:
            if len(self.input_size) != 2 or min(self.input_size) < 1:
                raise ConfigError(f"input_size must be (height, width) >= 1: {self.input_size}")
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "quality", QualityConfig.parse(self.quality))
        self.acquisition()  # validates the detection settings

    def acquisition(
        self, default_boxes: tuple[tuple[float, float], ...] | None = None
    ) -> AcquisitionConfig:
        """The acquisition settings; ``default_boxes`` (height, width) at 640x480, default
        the paper's."""
        return AcquisitionConfig(
            radius=self.radius,
            region=self.region,
            aggregation=self.aggregation,
            default_boxes=DEFAULT_BOXES if default_boxes is None else default_boxes,
            candidate_threshold=self.candidate_threshold,
            count_threshold=self.count_threshold,
            nms_iou=self.nms_iou,
        )

    @property
    def scoring(self) -> GraphScoring:
        """These settings as a model's graph would carry them."""
        return GraphScoring(
            radius=self.radius,
            region=self.region,
            method=self.method,
            aggregation=self.aggregation,
            double_evaluation=self.double_evaluation,
            heatmap_stride=self.heatmap_stride,
        )


@dataclass(frozen=True)
class FrameScore:
    """The score of one frame.

    ``z``: image score (SPEC eq. 5). ``heatmap``: ``[ceil(H/s), ceil(W/s)]`` float32
    block maxima of S at the model's input size (s = heatmap_stride), or None.
    ``infer_ms``/``score_ms``: the frame's share (batch time / frames in the batch) of
    resizing, normalising and inference, and of scoring, in milliseconds (with the
    scores inside the model's graph, inference includes the scoring and ``score_ms``
    is 0; the quality gate's time counts as scoring). ``quality``: the frame's
    statistics when the pipeline has a quality gate, else None; ``low_quality``: the
    checks it failed (empty: it passed, or no gate).
    """

    z: float
    heatmap: np.ndarray | None
    model_version: str
    model_hash: str
    infer_ms: float
    score_ms: float
    quality: FrameQuality | None = None
    low_quality: tuple[str, ...] = ()

    @property
    def gated(self) -> bool:
        """Whether the quality gate holds this frame back (it is never flagged)."""
        return bool(self.low_quality)


class ScoringPipeline:
    """Scores frames with one backend; safe to call from several threads.

    Activates the backend if it is not active yet, so a bad model fails here, at
    start-up, rather than at the first frame; :meth:`close` deactivates it again. A
    model with the scores inside its graph whose settings (radius, region, method,
    aggregation, double evaluation, heat-map stride) disagree with ``config`` is
    refused with a :class:`ModelError` before it is activated.
    """

    def __init__(self, backend: Backend, config: PipelineConfig | None = None) -> None:
        self.backend = backend
        self.config = config or PipelineConfig()
        self.model_info: ModelInfo = backend.model_info
        self.input_size: tuple[int, int] = self.config.input_size or self.model_info.input_size
        self._needs_difficulty = get_acquisition(self.config.method).needs_difficulty
        if self._needs_difficulty:
            _check_difficulty(backend.source, self.model_info, self.config.method)
        if self.model_info.scoring is not None:
            _check_graph_method(backend.source, self.model_info.scoring, self.config.method)
            _check_graph_scoring(backend.source, self.model_info.scoring, self.config.scoring)
            self._acquisition = self.config.acquisition()
        else:
            info = self.model_info
            boxes = reference_boxes(info.default_boxes, info.input_size)
            self._acquisition = self.config.acquisition(boxes)
        self._owns_activation = not backend.is_active
        backend.activate()
        self._lock = threading.Lock()
        log.info(
            "pipeline ready backend=%s model=%s version=%s input=%sx%s batch=%d double=%s "
            "scoring=%s acquisition=%s quality_gate=%s",
            backend.name,
            self.model_info.name,
            self.model_info.version,
            self.input_size[1],
            self.input_size[0],
            self.config.batch_size,
            self.config.double_evaluation,
            self.scoring_path,
            self.config.method,
            self.config.quality is not None,
        )

    @property
    def scoring_path(self) -> str:
        """``"in_graph"`` when the model computes z itself, else ``"numba"``."""
        return "in_graph" if self.model_info.scoring is not None else "numba"

    def close(self) -> None:
        """Deactivate the backend if this pipeline activated it."""
        if self._owns_activation:
            self.backend.deactivate()

    def __enter__(self) -> ScoringPipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 frames ``[H_i, W_i, 3]`` -> model input ``[N, 3, H, W]`` float32."""
        height, width = self.input_size
        resized = np.stack(
            [resize_frame(_check_frame(img, i), height, width) for i, img in enumerate(images)]
        )
        return self.model_info.normalisation.apply(resized)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Head probabilities ``[N, K, H, W]`` at the input size, mirrors merged if on.

        A model with the scores inside its graph has them only if exported with
        ``--keep-probs`` (else :class:`ModelError`).
        """
        inputs = self.preprocess(images)
        if self.model_info.scoring is not None:
            with self._lock:
                return self.backend.infer(inputs)
        return self._infer(inputs)

    def maps(
        self, images: Sequence[np.ndarray], difficulty: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Head probabilities ``[N, K, H, W]`` and, with ``difficulty``, the learned
        difficulty maps ``[N, 1, H, W]`` (else None), at the input size, mirrors merged
        if on; one inference. ``difficulty`` needs a model with the difficulty head
        (else :class:`ConfigError`) and without the scores inside its graph.
        """
        if not difficulty:
            return self.probabilities(images), None
        _check_difficulty(self.backend.source, self.model_info, "difficulty")
        return self._infer_maps(self.preprocess(images), True)

    def score(self, images: Sequence[np.ndarray], heatmaps: bool = False) -> list[FrameScore]:
        """Score RGB uint8 frames ``[H_i, W_i, 3]`` (any sizes); one result per frame."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise InvalidInputError("score() takes a sequence of frames, got a single frame")
        results: list[FrameScore] = []
        size = self.config.batch_size
        for start in range(0, len(images), size):
            results.extend(self._score_batch(images[start : start + size], heatmaps))
        return results

    def _score_batch(self, images: Sequence[np.ndarray], heatmaps: bool) -> list[FrameScore]:
        n = len(images)
        started = time.perf_counter()
        cells: np.ndarray | None
        if self.model_info.scoring is not None:
            inputs = self.preprocess(images)
            with self._lock:
                out = self.backend.infer_scores(inputs)
            z = out.z.astype(np.float64)
            cells = out.heatmap if heatmaps else None
            inferred = scored = time.perf_counter()
        else:
            probs, difficulty = self._infer_maps(self.preprocess(images), self._needs_difficulty)
            inferred = time.perf_counter()
            scores = frame_scores(
                probs, self.config.method, self._acquisition, difficulty=difficulty
            )
            z = scores.z
            cells = block_max(scores.maps, self.config.heatmap_stride) if heatmaps else None
            scored = time.perf_counter()
        gate = self.config.quality
        quality = self.quality(images)
        gate_s = time.perf_counter() - scored if gate is not None else 0.0
        infer_ms = 1000.0 * (inferred - started) / n
        score_ms = 1000.0 * (scored - inferred + gate_s) / n
        return [
            FrameScore(
                z=float(z[i]),
                heatmap=None if cells is None else cells[i],
                model_version=self.model_info.version,
                model_hash=self.model_info.sha256,
                infer_ms=infer_ms,
                score_ms=score_ms,
                quality=None if quality is None else quality[i],
                low_quality=() if quality is None or gate is None else gate.failures(quality[i]),
            )
            for i in range(n)
        ]

    def quality(self, images: Sequence[np.ndarray]) -> list[FrameQuality] | None:
        """The quality statistics of RGB uint8 frames, or None without a quality gate."""
        gate = self.config.quality
        if gate is None:
            return None
        return [measure_quality(_check_frame(img, i), gate) for i, img in enumerate(images)]

    def _infer(self, inputs: np.ndarray) -> np.ndarray:
        return self._infer_maps(inputs, False)[0]

    def _infer_maps(
        self, inputs: np.ndarray, difficulty: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and (``difficulty``) difficulty maps, mirrors merged if on."""
        n = inputs.shape[0]
        if self.config.double_evaluation:
            inputs = np.concatenate([inputs, inputs[..., ::-1]])
        maps: np.ndarray | None = None
        with self._lock:
            if difficulty:
                probs, maps = self.backend.infer_with_difficulty(inputs)
            else:
                probs = self.backend.infer(inputs)
        if self.config.double_evaluation:
            probs = merge_mirrored(probs[:n], probs[n:])
            if maps is not None:
                maps = merge_mirrored(maps[:n], maps[n:])
        return probs, maps


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``[H, W, 3]`` to ``[height, width, 3]``: area when shrinking, else bilinear."""
    old_h, old_w = image.shape[:2]
    if (old_h, old_w) == (height, width):
        return image
    shrink = height * width < old_h * old_w
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def block_max(maps: np.ndarray, stride: int) -> np.ndarray:
    """Maxima of ``stride x stride`` blocks tiled from the top-left corner.

    ``maps``: ``[N, H, W]``. Returns ``[N, ceil(H/stride), ceil(W/stride)]`` float32;
    edge blocks may be smaller and still count (as regions do in SPEC eq. 5).
    """
    n, h, w = maps.shape
    rows, cols = -(-h // stride), -(-w // stride)
    padded = np.full((n, rows * stride, cols * stride), -np.inf, dtype=np.float32)
    padded[:, :h, :w] = maps
    blocks = padded.reshape(n, rows, stride, cols, stride)
    return blocks.max(axis=(2, 4))


def _check_difficulty(source: str, info: ModelInfo, method: str) -> None:
    """Refuse a model that cannot give the learned difficulty map ``method`` reads."""
    if info.scoring is not None:
        raise ConfigError(
            f"{source}: acquisition {method!r} reads the model's learned difficulty map, but "
            "this model computes its scores inside its graph and outputs no difficulty map: "
            "serve the model exported without --scores-in-graph"
        )
    if not info.difficulty:
        raise ConfigError(
            f"{source}: acquisition {method!r} needs a model with the learned difficulty head "
            "(output 'difficulty'); this model has none. Train it with [detector] "
            "difficulty_head = true and export it again, or choose another --acquisition"
        )


def _check_graph_method(source: str, model: GraphScoring, method: str) -> None:
    """Refuse an acquisition function a model with scores in its graph cannot give."""
    if get_acquisition(method).pixel_method is None:
        raise ModelError(
            f"{source}: the model computes z = {model.method} inside its graph, so it "
            f"supports only acquisition {model.method!r}, not {method!r} (which needs the "
            "head probabilities): serve a model exported without --scores-in-graph, or "
            f"choose --acquisition {model.method}"
        )


def _check_graph_scoring(source: str, model: GraphScoring, wanted: GraphScoring) -> None:
    """Refuse a model whose in-graph scoring differs from the pipeline's settings."""
    differences = model.disagreements(wanted)
    if differences:
        raise ModelError(
            f"{source}: the model computes its scores in the graph with settings that "
            f"disagree with this pipeline's (model vs configured): {'; '.join(differences)}. "
            "Re-export it with `alscout export onnx --scores-in-graph` and matching "
            "--radius/--region/--method/--no-double-eval, or configure the same settings"
        )


def _check_frame(image: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"frame {index} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(
            f"frame {index} must be [H, W, 3] uint8 RGB, got {image.dtype} {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"frame {index} is empty: {image.shape}")
    return image
