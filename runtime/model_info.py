"""What a model file says about itself: the metadata half of the model contract (SPEC §4).

An ONNX model carries these keys in its ``metadata_props``; a TensorRT engine carries
the same keys in a JSON sidecar next to it (``model.engine.json``); a ``.pt2``
program in its ``extra_files``. Export writes them with :meth:`ModelInfo.to_metadata`
and every backend reads them back with :meth:`ModelInfo.from_metadata`, so the two
sides cannot drift apart.

Input normalisation: for an RGB ``uint8`` pixel ``p``, the model input is
``(p * scale - mean[c]) / std[c]`` for channel ``c``.

A model with the scores inside its graph (``alscout export onnx --scores-in-graph``,
SPEC §4) outputs ``z`` and ``heatmap`` (and ``probs`` only on request) instead of
``probs``, and carries the settings its graph computes them with in the
``alscout.scores.*`` keys (:class:`GraphScoring`).

A model with the learned difficulty head (DEAL, docs/detector.md) has a second output
``difficulty`` float32 ``(N, 1, H, W)`` in [0, 1] after ``probs``, and says so in the
optional key ``alscout.difficulty`` = ``"true"`` (:attr:`ModelInfo.difficulty`); a
model without the head carries no such key, so its metadata is as before.

A calibrated model (``alscout calibrate``, ``alscout fleet publish
--calibration-frames``) carries the thresholds on the smoothed score that flagged given
fractions of a calibration set, with the settings they hold for, in the
``alscout.calibration`` key (:class:`FlagCalibration`): the server starts its adaptive
threshold from them (docs/temporal.md, "Shipped thresholds").
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from alscout.errors import InvalidInputError, ModelError

__all__ = [
    "CONTRACT_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "Z_NAME",
    "HEATMAP_NAME",
    "DIFFICULTY_NAME",
    "DIFFICULTY_KEY",
    "METADATA_KEYS",
    "SCORING_KEYS",
    "CALIBRATION_KEY",
    "GraphScoring",
    "FlagCalibration",
    "Normalisation",
    "ModelInfo",
    "file_sha256",
]

#: Bumped when the meaning of a key changes; a runtime refuses contracts it does not know.
CONTRACT_VERSION = "1"
INPUT_NAME = "images"
OUTPUT_NAME = "probs"
#: outputs of a model with the scores inside its graph
Z_NAME = "z"
HEATMAP_NAME = "heatmap"
#: second output of a model with the learned difficulty head
DIFFICULTY_NAME = "difficulty"
#: optional key: "true" for a model with the ``difficulty`` output
DIFFICULTY_KEY = "alscout.difficulty"
#: optional key: each head's stride in input pixels (JSON list), which the decoder
#: refines peaks with (``decode_detections(strides=...)``); absent: pixel peaks
STRIDES_KEY = "alscout.head_strides"

#: Every key a model must carry; values are strings (JSON where structured).
METADATA_KEYS = (
    "alscout.contract",
    "alscout.model_name",
    "alscout.model_version",
    "alscout.num_heads",
    "alscout.default_boxes",
    "alscout.input_size",
    "alscout.normalisation",
    "alscout.training_data_digest",
)
#: Keys of a model with the scores inside its graph: all of them, or none.
SCORING_KEYS = (
    "alscout.scores.radius",
    "alscout.scores.region",
    "alscout.scores.method",
    "alscout.scores.aggregation",
    "alscout.scores.double_evaluation",
    "alscout.scores.heatmap_stride",
)
_SCORING_PREFIX = "alscout.scores."
#: optional key of a calibrated model: :meth:`FlagCalibration.to_json`
CALIBRATION_KEY = "alscout.calibration"
#: two target rates closer than this (relative) are the same rate
_RATE_RTOL = 1e-6
#: the pixel-score methods and aggregations of runtime/scoring.py (tested to match;
#: not imported from there, so reading metadata needs no Numba)
_METHODS = ("divergence", "entropy")
_AGGREGATIONS = ("maxpool", "mean")


@dataclass(frozen=True)
class GraphScoring:
    """The settings a model's graph computes its scores with (SPEC §1 and §4).

    ``radius``, ``region``, ``method`` and ``aggregation`` as in
    :func:`~alscout.runtime.scoring.pixel_scores` and
    :func:`~alscout.runtime.scoring.aggregate`; ``double_evaluation``: the graph runs
    each frame with its mirror; ``heatmap_stride``: side in pixels of the blocks whose
    maxima form the ``heatmap`` output.
    """

    radius: int = 9
    region: int = 30
    method: str = "divergence"
    aggregation: str = "maxpool"
    double_evaluation: bool = True
    heatmap_stride: int = 16

    def __post_init__(self) -> None:
        for name, minimum in (("radius", 0), ("region", 1), ("heatmap_stride", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ModelError(f"scores in the graph: {name} must be an integer >= {minimum}")
        if self.method not in _METHODS:
            raise ModelError(f"scores in the graph: method must be one of {_METHODS}")
        if self.aggregation not in _AGGREGATIONS:
            raise ModelError(f"scores in the graph: aggregation must be one of {_AGGREGATIONS}")
        if not isinstance(self.double_evaluation, bool):
            raise ModelError("scores in the graph: double_evaluation must be true or false")

    def to_metadata(self) -> dict[str, str]:
        """The ``alscout.scores.*`` metadata props."""
        return {
            "alscout.scores.radius": str(self.radius),
            "alscout.scores.region": str(self.region),
            "alscout.scores.method": self.method,
            "alscout.scores.aggregation": self.aggregation,
            "alscout.scores.double_evaluation": "true" if self.double_evaluation else "false",
            "alscout.scores.heatmap_stride": str(self.heatmap_stride),
        }

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, str], *, source: str | Path
    ) -> GraphScoring | None:
        """The settings in ``metadata``, or None for a model without scores in its graph."""
        present = [key for key in metadata if key.startswith(_SCORING_PREFIX)]
        if not present:
            return None
        missing = [key for key in SCORING_KEYS if key not in metadata]
        if missing:
            raise ModelError(
                f"{source}: model has scores in its graph but its metadata lacks "
                f"{', '.join(missing)}; re-export it with `alscout export onnx --scores-in-graph`"
            )
        key = ""
        try:
            key = "alscout.scores.double_evaluation"
            double = {"true": True, "false": False}[metadata[key]]
            key = "alscout.scores.radius"
            radius = int(metadata[key])
            key = "alscout.scores.region"
            region = int(metadata[key])
            key = "alscout.scores.heatmap_stride"
            stride = int(metadata[key])
            return cls(
                radius=radius,
                region=region,
                method=metadata["alscout.scores.method"],
                aggregation=metadata["alscout.scores.aggregation"],
                double_evaluation=double,
                heatmap_stride=stride,
            )
        except ModelError as error:
            raise ModelError(f"{source}: {error}") from error
        except (ValueError, KeyError) as error:
            raise ModelError(f"{source}: metadata {key} is malformed: {error!r}") from error

    def disagreements(self, other: GraphScoring) -> list[str]:
        """``"name: mine vs other"`` for every setting that differs from ``other``'s.

        A setting that neither side uses is not compared: the radius when both score
        by entropy (no window), the region when both aggregate by the mean.
        """
        skip = set()
        if self.method == other.method == "entropy":
            skip.add("radius")
        if self.aggregation == other.aggregation == "mean":
            skip.add("region")
        names = (
            "radius",
            "region",
            "method",
            "aggregation",
            "double_evaluation",
            "heatmap_stride",
        )
        return [
            f"{name}: {getattr(self, name)} vs {getattr(other, name)}"
            for name in names
            if name not in skip and getattr(self, name) != getattr(other, name)
        ]


@dataclass(frozen=True)
class FlagCalibration:
    """Thresholds on the smoothed score that flag target fractions of frames.

    ``thresholds``: ``(rate, threshold)`` pairs by increasing rate; flagging the local
    maxima of the smoothed score at or above ``threshold`` flagged ``rate`` of the
    calibration frames. ``settings``: what they hold for, as canonical JSON (the
    acquisition function and its settings, double evaluation, input size, quality gate,
    and the selector's dt, sigma, dt1); a server with other settings must not use them.
    ``frames``: frames scored; ``candidates``: local maxima among them; ``source``:
    what was scored (for people); ``created``: ISO 8601 UTC time.
    """

    thresholds: tuple[tuple[float, float], ...]
    settings: str
    frames: int
    candidates: int
    source: str = ""
    created: str = ""

    def __post_init__(self) -> None:
        pairs = tuple((float(r), float(v)) for r, v in self.thresholds)
        if not pairs:
            raise ModelError("a calibration needs at least one (rate, threshold) pair")
        rates = [r for r, _ in pairs]
        if any(not 0.0 < r <= 1.0 for r in rates) or rates != sorted(set(rates)):
            raise ModelError(f"calibration rates must be distinct, increasing, in (0, 1]: {rates}")
        if not all(math.isfinite(v) for _, v in pairs):
            raise ModelError(f"calibration thresholds must be finite: {pairs}")
        try:
            settings = json.loads(self.settings)
        except (TypeError, ValueError) as error:
            raise ModelError(f"calibration settings are not JSON: {error}") from None
        if not isinstance(settings, dict):
            raise ModelError("calibration settings must be a JSON object")
        if self.frames < 1 or self.candidates < 0:
            raise ModelError("a calibration needs frames >= 1 and candidates >= 0")
        object.__setattr__(self, "thresholds", pairs)
        object.__setattr__(self, "settings", json.dumps(settings, sort_keys=True))

    @property
    def rates(self) -> tuple[float, ...]:
        """The calibrated target rates, increasing."""
        return tuple(r for r, _ in self.thresholds)

    def threshold_for(self, rate: float) -> float | None:
        """The threshold calibrated for ``rate`` (same to 1e-6 relative), or None."""
        for r, value in self.thresholds:
            if abs(r - rate) <= _RATE_RTOL * max(r, rate):
                return value
        return None

    def settings_dict(self) -> dict[str, object]:
        """:attr:`settings` parsed."""
        return dict(json.loads(self.settings))

    def to_json(self) -> str:
        return json.dumps(
            {
                "thresholds": [list(pair) for pair in self.thresholds],
                "settings": self.settings_dict(),
                "frames": self.frames,
                "candidates": self.candidates,
                "source": self.source,
                "created": self.created,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> FlagCalibration:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ModelError("calibration must be a JSON object")
        return cls(
            thresholds=tuple((float(r), float(v)) for r, v in data["thresholds"]),
            settings=json.dumps(data["settings"], sort_keys=True),
            frames=int(data["frames"]),
            candidates=int(data["candidates"]),
            source=str(data.get("source", "")),
            created=str(data.get("created", "")),
        )


@dataclass(frozen=True)
class Normalisation:
    """Per-channel input normalisation ``(p * scale - mean) / std`` of RGB pixels ``p``."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ModelError(f"normalisation needs 3 means and 3 stds, got {self.mean}, {self.std}")
        values = (*self.mean, *self.std, self.scale)
        if not all(math.isfinite(float(v)) for v in values):
            raise ModelError(f"normalisation values must be finite, got {values}")
        if min(self.std) <= 0 or self.scale <= 0:
            raise ModelError(f"normalisation std and scale must be > 0, got {self.std}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "scale", float(self.scale))

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Normalise frames for the model.

        ``images``: ``[N, H, W, 3]`` or ``[H, W, 3]`` RGB (uint8, or float in pixel units).
        Returns ``[N, 3, H, W]`` (or ``[3, H, W]``) float32, C-contiguous.
        """
        if images.ndim not in (3, 4) or images.shape[-1] != 3:
            raise InvalidInputError(f"expected [N,H,W,3] or [H,W,3] RGB, got {images.shape}")
        gain = np.asarray([self.scale / s for s in self.std], dtype=np.float32)
        offset = np.asarray([m / s for m, s in zip(self.mean, self.std, strict=True)], np.float32)
        normed = images.astype(np.float32) * gain - offset
        return np.ascontiguousarray(np.moveaxis(normed, -1, -3))

    def to_json(self) -> str:
        return json.dumps({"color": "RGB", "scale": self.scale, "mean": self.mean, "std": self.std})

    @classmethod
    def from_json(cls, text: str) -> Normalisation:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("color", "RGB") != "RGB":
            raise ModelError(f"normalisation must be an RGB JSON object, got {text!r}")
        return cls(mean=tuple(data["mean"]), std=tuple(data["std"]), scale=data["scale"])


@dataclass(frozen=True)
class ModelInfo:
    """Identity and input contract of one model file.

    ``default_boxes``: ``K`` (height, width) pairs in pixels at ``input_size``.
    ``input_size``: (height, width) in pixels the model was trained at; the pipeline
    resizes frames to it.
    ``sha256``: of the file that was loaded (an engine's own bytes for TensorRT);
    ``source_sha256``: of the ONNX file it was built from (equal for ONNX models).
    ``scoring``: the settings of the scores inside the model's graph, or None for a
    model that outputs ``probs`` only. ``calibration``: the model's shipped flag
    thresholds, or None for a model not calibrated. ``difficulty``: the model also
    outputs the learned difficulty map ``difficulty [N, 1, H, W]`` (after ``probs``).
    ``head_strides``: each head's stride in input pixels, or None when the model does
    not say (detections then sit on pixel peaks).
    """

    name: str
    version: str
    num_heads: int
    default_boxes: tuple[tuple[float, float], ...]
    input_size: tuple[int, int]
    normalisation: Normalisation
    training_data_digest: str
    sha256: str = ""
    source_sha256: str = ""
    file_format: str = "onnx"
    scoring: GraphScoring | None = None
    calibration: FlagCalibration | None = None
    difficulty: bool = False
    head_strides: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ModelError("model name and version must not be empty")
        if self.num_heads < 1:
            raise ModelError(f"model must have K >= 1 heads, got {self.num_heads}")
        if len(self.default_boxes) != self.num_heads:
            raise ModelError(
                f"model has K={self.num_heads} heads but {len(self.default_boxes)} default boxes"
            )
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ModelError(f"input_size must be (height, width) >= 1, got {self.input_size}")
        if not self.training_data_digest:
            raise ModelError("training_data_digest must not be empty")
        if self.difficulty and self.scoring is not None:
            raise ModelError(
                "a model with the scores inside its graph has no difficulty output "
                "(export the difficulty model without --scores-in-graph)"
            )
        boxes = tuple((float(h), float(w)) for h, w in self.default_boxes)
        object.__setattr__(self, "default_boxes", boxes)
        object.__setattr__(self, "input_size", (int(self.input_size[0]), int(self.input_size[1])))
        if self.head_strides is not None:
            strides = tuple(self.head_strides)
            if len(strides) != self.num_heads or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in strides
            ):
                raise ModelError(
                    f"head_strides must be {self.num_heads} integers >= 1, got {strides!r}"
                )
            object.__setattr__(self, "head_strides", strides)

    def to_metadata(self) -> dict[str, str]:
        """The metadata props (string to string) that carry this info in a model file."""
        scoring = self.scoring.to_metadata() if self.scoring is not None else {}
        if self.calibration is not None:
            scoring = scoring | {CALIBRATION_KEY: self.calibration.to_json()}
        if self.difficulty:
            scoring = scoring | {DIFFICULTY_KEY: "true"}
        if self.head_strides is not None:
            scoring = scoring | {STRIDES_KEY: json.dumps(list(self.head_strides))}
        return scoring | {
            "alscout.contract": CONTRACT_VERSION,
            "alscout.model_name": self.name,
            "alscout.model_version": self.version,
            "alscout.num_heads": str(self.num_heads),
            "alscout.default_boxes": json.dumps([list(b) for b in self.default_boxes]),
            "alscout.input_size": json.dumps(
                {"height": self.input_size[0], "width": self.input_size[1]}
            ),
            "alscout.normalisation": self.normalisation.to_json(),
            "alscout.training_data_digest": self.training_data_digest,
        }

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, str],
        *,
        source: str | Path,
        sha256: str = "",
        source_sha256: str = "",
        file_format: str = "onnx",
    ) -> ModelInfo:
        """Parse metadata props; a :class:`ModelError` names ``source`` and the bad key."""
        missing = [key for key in METADATA_KEYS if key not in metadata]
        if missing:
            raise ModelError(
                f"{source}: model metadata lacks {', '.join(missing)}; "
                "re-export it with `alscout export onnx`"
            )
        if metadata["alscout.contract"] != CONTRACT_VERSION:
            raise ModelError(
                f"{source}: model contract {metadata['alscout.contract']!r} is not supported "
                f"(this runtime reads contract {CONTRACT_VERSION!r})"
            )
        key = ""
        try:
            key = "alscout.num_heads"
            num_heads = int(metadata[key])
            key = "alscout.default_boxes"
            boxes = tuple((float(h), float(w)) for h, w in json.loads(metadata[key]))
            key = "alscout.input_size"
            size = json.loads(metadata[key])
            height, width = int(size["height"]), int(size["width"])
            key = "alscout.normalisation"
            normalisation = Normalisation.from_json(metadata[key])
            key = ""
            scoring = GraphScoring.from_metadata(metadata, source=source)
            key = CALIBRATION_KEY
            calibration = FlagCalibration.from_json(metadata[key]) if key in metadata else None
            key = DIFFICULTY_KEY
            difficulty = {"true": True, "false": False}[metadata.get(key, "false")]
            key = STRIDES_KEY
            strides = tuple(json.loads(metadata[key])) if key in metadata else None
            return cls(
                name=metadata["alscout.model_name"],
                version=metadata["alscout.model_version"],
                num_heads=num_heads,
                default_boxes=boxes,
                input_size=(height, width),
                normalisation=normalisation,
                training_data_digest=metadata["alscout.training_data_digest"],
                sha256=sha256,
                source_sha256=source_sha256 or sha256,
                file_format=file_format,
                scoring=scoring,
                calibration=calibration,
                difficulty=difficulty,
                head_strides=strides,
            )
        except ModelError as error:
            if str(error).startswith(f"{source}: "):
                raise
            raise ModelError(f"{source}: {error}") from error
        except (ValueError, TypeError, KeyError) as error:
            raise ModelError(f"{source}: metadata {key} is malformed: {error}") from error

    def with_file(self, sha256: str, file_format: str, source_sha256: str = "") -> ModelInfo:
        """The same model identity, loaded from another file."""
        return replace(
            self, sha256=sha256, file_format=file_format, source_sha256=source_sha256 or sha256
        )


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
