"""What a model file says about itself: the metadata half of the model contract (SPEC §4).

An ONNX model carries these keys in its ``metadata_props``; a TensorRT engine carries
the same keys in a JSON sidecar next to it (``model.engine.json``); a ``.pt2``
program in its ``extra_files``. Export writes them with :meth:`ModelInfo.to_metadata`
and every backend reads them back with :meth:`ModelInfo.from_metadata`, so the two
sides cannot drift apart.

Input normalisation: for an RGB ``uint8`` pixel ``p``, the model input is
``(p * scale - mean[c]) / std[c]`` for channel ``c``.
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
    "METADATA_KEYS",
    "Normalisation",
    "ModelInfo",
    "file_sha256",
]

#: Bumped when the meaning of a key changes; a runtime refuses contracts it does not know.
CONTRACT_VERSION = "1"
INPUT_NAME = "images"
OUTPUT_NAME = "probs"

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
        boxes = tuple((float(h), float(w)) for h, w in self.default_boxes)
        object.__setattr__(self, "default_boxes", boxes)
        object.__setattr__(self, "input_size", (int(self.input_size[0]), int(self.input_size[1])))

    def to_metadata(self) -> dict[str, str]:
        """The metadata props (string to string) that carry this info in a model file."""
        return {
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
            )
        except ModelError as error:
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
