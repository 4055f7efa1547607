"""INT8 calibration from a folder of frames (or a video): data on the CPU, calibrator lazily.

:class:`CalibrationBatches` reads frames, resizes and normalises them as the scoring
pipeline does, and yields full batches ``[B, 3, H, W]`` at the model's input size
(TensorRT calibrates at one fixed shape, the calibration profile). The
:func:`make_calibrator` factory wraps them in a TensorRT entropy calibrator, which
needs tensorrt and cuda-python and is therefore only built when INT8 is asked for.
ONNX Runtime's INT8 (export/quantize.py) calibrates on the same batches;
:meth:`CalibrationBatches.held_out` gives the frames of the source it never read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from alscout.errors import DataError
from alscout.export.frames import iter_frames
from alscout.files import frame_files
from alscout.runtime.backends.profiles import ShapeProfile
from alscout.runtime.backends.tensorrt import cuda_call, import_cudart, import_tensorrt
from alscout.runtime.model_info import ModelInfo
from alscout.runtime.pipeline import resize_frame

__all__ = ["CalibrationBatches", "make_calibrator"]

log = logging.getLogger(__name__)


class CalibrationBatches:
    """Full batches of normalised frames from ``source`` (a folder or a video).

    Up to ``limit`` frames (every ``stride``-th); a last incomplete batch is dropped.
    Iterating again starts from the first frame.
    """

    def __init__(
        self,
        source: str | Path,
        info: ModelInfo,
        *,
        batch_size: int = 8,
        limit: int = 256,
        stride: int = 1,
    ) -> None:
        if batch_size < 1 or limit < batch_size:
            raise DataError(
                f"{source}: calibration needs batch_size >= 1 and limit >= batch_size, "
                f"got {batch_size} and {limit}"
            )
        self.source = Path(source)
        self.info = info
        self.batch_size = batch_size
        self.limit = limit
        self.stride = stride

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``[B, 3, H, W]`` of every batch."""
        return (self.batch_size, 3, *self.info.input_size)

    def profile(self) -> ShapeProfile:
        """The fixed-shape profile TensorRT calibrates with."""
        nhw = (self.batch_size, *self.info.input_size)
        return ShapeProfile(min=nhw, opt=nhw, max=nhw)

    def __iter__(self) -> Iterator[np.ndarray]:
        height, width = self.info.input_size
        pending: list[np.ndarray] = []
        produced = 0
        for frame in iter_frames(self.source, limit=self.limit, stride=self.stride):
            pending.append(resize_frame(frame, height, width))
            if len(pending) == self.batch_size:
                produced += 1
                yield self.info.normalisation.apply(np.stack(pending))
                pending = []
        if produced == 0:
            raise DataError(
                f"{self.source}: fewer than {self.batch_size} frames, not one calibration batch"
            )

    def held_out(self, limit: int) -> list[np.ndarray]:
        """Up to ``limit`` RGB uint8 frames ``[H, W, 3]`` of the source that calibration
        never reads: from those after the last frame it may take (``limit * stride``),
        evenly spread over the rest of the source.

        For verifying a calibrated model on frames it was not calibrated on; spread
        out, so that a ranking check compares different scenes, not neighbours of one.
        Raises :class:`DataError` when the source has no frame left.
        """
        skip = self.limit * self.stride
        stride = max(1, (_frame_count(self.source) - skip) // max(1, limit))
        frames: list[np.ndarray] = []
        for index, frame in enumerate(iter_frames(self.source, limit=skip + limit * stride)):
            if index >= skip and (index - skip) % stride == 0:
                frames.append(frame)
        if not frames:
            raise DataError(
                f"{self.source}: no frames after the {skip} calibration may read; give "
                "other verification frames or calibrate on fewer (a smaller limit)"
            )
        return frames

    def digest(self) -> str:
        """Hex SHA-256 naming this calibration set: the files (names, sizes), limit, stride,
        batch size and input size. Goes into the engine cache key."""
        digest = hashlib.sha256()
        files = frame_files(self.source) if self.source.is_dir() else [self.source]
        if not all(f.is_file() for f in files):
            raise DataError(f"{self.source}: no calibration frames found")
        for file in files:
            digest.update(f"{file.name}:{file.stat().st_size};".encode())
        digest.update(
            f"{self.limit}:{self.stride}:{self.batch_size}:{self.info.input_size}".encode()
        )
        return digest.hexdigest()


def _frame_count(source: Path) -> int:
    """Frames in a folder, or a video's frame count as its container states it."""
    if source.is_dir():
        return len(frame_files(source))
    capture = cv2.VideoCapture(str(source))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def make_calibrator(batches: CalibrationBatches, cache_file: str | Path | None = None) -> Any:
    """A ``tensorrt.IInt8EntropyCalibrator2`` feeding ``batches`` through one device buffer.

    ``cache_file``: where TensorRT's calibration table is read from and written to, so a
    rebuild on the same data skips calibration.
    """
    trt = import_tensorrt()
    cudart = import_cudart()
    cache = Path(cache_file) if cache_file else None

    # tensorrt is a module object imported at run time: mypy cannot see its classes
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._nbytes = int(np.prod(batches.shape)) * 4
            self._device = int(cuda_call(cudart.cudaMalloc(self._nbytes)))
            self._count = 0

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                log.info("calibration done batches=%d", self._count)
                return None
            batch = np.ascontiguousarray(batch)
            cuda_call(
                cudart.cudaMemcpy(
                    self._device,
                    batch.ctypes.data,
                    batch.nbytes,
                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                )
            )
            self._count += 1
            return [self._device]

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and cache.is_file():
                log.info("calibration table reused path=%s", cache)
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, table: Any) -> None:
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(bytes(table))

        def free(self) -> None:
            if self._device:
                cuda_call(cudart.cudaFree(self._device))
                self._device = 0

    return EntropyCalibrator()
