"""Build TensorRT engines from ONNX models (FP32, FP16, or INT8 with calibration).

``EngineFromOnnx(OnnxFromPath("model.onnx"), precision="fp16", profiles=...)`` is a
lazy loader that returns the serialized engine; :func:`build_engine` adds the engine
cache (keyed by GPU, TensorRT version, ONNX hash, precision, profiles and calibration
set) and writes the engine with its metadata sidecar, which the runtime's TensorRT
backend requires. tensorrt is imported only when an engine is built.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError, ModelError
from alscout.export.cache import (
    PRECISIONS,
    EngineCache,
    EngineKey,
    copy_engine,
    current_gpu,
    write_engine,
)
from alscout.export.calibration import CalibrationBatches, make_calibrator
from alscout.export.loaders import Loader, resolve
from alscout.export.onnx import OnnxFromPath, check_onnx
from alscout.runtime.backends.profiles import ShapeProfile
from alscout.runtime.backends.tensorrt import import_tensorrt
from alscout.runtime.model_info import INPUT_NAME, file_sha256

__all__ = ["EngineFromOnnx", "SaveEngine", "build_engine", "engine_sidecar"]

log = logging.getLogger(__name__)


class EngineFromOnnx(Loader[bytes]):
    """Build a serialized TensorRT engine from an ONNX model.

    ``model``: an ``onnx.ModelProto`` or ONNX bytes, or a loader of either.
    ``profiles``: optimization profiles for ``images`` (at least one).
    ``calibration``: required for "int8"; FP16 kernels stay allowed next to INT8 ones
    so layers that quantise badly can fall back.
    ``workspace_gib``: the builder's scratch memory limit.
    """

    def __init__(
        self,
        model: Any,
        *,
        precision: str = "fp16",
        profiles: Sequence[ShapeProfile],
        calibration: CalibrationBatches | None = None,
        calibration_cache: str | Path | None = None,
        workspace_gib: float = 4.0,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not profiles:
            raise ConfigError("an engine needs at least one optimization profile")
        if precision == "int8" and calibration is None:
            raise ConfigError("INT8 needs calibration frames (--calib-frames)")
        if workspace_gib <= 0:
            raise ConfigError(f"workspace_gib must be > 0, got {workspace_gib}")
        self.model = model
        self.precision = precision
        self.profiles = tuple(profiles)
        self.calibration = calibration
        self.calibration_cache = calibration_cache
        self.workspace_gib = workspace_gib

    def call_impl(self) -> bytes:
        trt = import_tensorrt()
        model = resolve(self.model)
        data = model if isinstance(model, bytes) else model.SerializeToString()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(data):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelError(f"TensorRT cannot parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.workspace_gib * 2**30))
        if self.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        for profile in self.profiles:
            config.add_optimization_profile(_trt_profile(builder, profile))
        calibrator = None
        if self.precision == "int8" and self.calibration is not None:  # None refused above
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = make_calibrator(self.calibration, self.calibration_cache)
            config.int8_calibrator = calibrator
            config.set_calibration_profile(_trt_profile(builder, self.calibration.profile()))
        log.info(
            "building TensorRT engine precision=%s profiles=%d tensorrt=%s",
            self.precision,
            len(self.profiles),
            trt.__version__,
        )
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
        if serialized is None:
            raise ModelError("TensorRT could not build the engine; run with -vv for its log")
        return bytes(serialized)


class SaveEngine(Loader[Path]):
    """Write the engine another loader builds, with its metadata sidecar, to ``path``."""

    def __init__(self, engine: Any, path: str | Path, sidecar: dict[str, Any]) -> None:
        self.engine = engine
        self.path = Path(path)
        self.sidecar = sidecar

    def call_impl(self) -> Path:
        return write_engine(self.path, resolve(self.engine), self.sidecar)


def engine_sidecar(
    onnx_path: str | Path, key: EngineKey, metadata: dict[str, str]
) -> dict[str, Any]:
    """What the runtime needs to know about an engine besides its bytes."""
    return {
        "metadata": metadata,
        "onnx_sha256": key.onnx_sha256,
        "onnx_file": Path(onnx_path).name,
        "tensorrt_version": key.tensorrt_version,
        "gpu": key.to_json()["gpu"],
        "precision": key.precision,
        "profiles": [p.to_json() for p in key.profiles],
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def build_engine(
    onnx_path: str | Path,
    out_path: str | Path,
    *,
    precision: str = "fp16",
    profiles: Sequence[ShapeProfile],
    calibration: CalibrationBatches | None = None,
    cache: EngineCache | None = None,
    device_id: int = 0,
    workspace_gib: float = 4.0,
) -> tuple[Path, bool]:
    """Build (or fetch from ``cache``) the engine for an ONNX file; write it to ``out_path``.

    Returns (``out_path``, whether the engine came from the cache).
    """
    trt = import_tensorrt()
    loader = OnnxFromPath(onnx_path)
    model = loader()
    info = check_onnx(model, source=onnx_path)
    key = EngineKey(
        onnx_sha256=file_sha256(onnx_path),
        tensorrt_version=trt.__version__,
        gpu=current_gpu(device_id),
        precision=precision,
        profiles=tuple(profiles),
        calibration_digest=calibration.digest() if calibration is not None else "",
    )
    sidecar = engine_sidecar(onnx_path, key, info.to_metadata())
    table = None
    if calibration is not None and cache is not None:
        table = cache.root / f"{key.digest()[:40]}.calib"
    builder = EngineFromOnnx(
        model,
        precision=precision,
        profiles=profiles,
        calibration=calibration,
        calibration_cache=table,
        workspace_gib=workspace_gib,
    )
    if cache is None:
        return SaveEngine(builder, out_path, sidecar)(), False
    cached_path, hit = cache.get_or_build(key, builder, sidecar)
    return copy_engine(cached_path, out_path), hit


def _trt_profile(builder: Any, profile: ShapeProfile) -> Any:
    result = builder.create_optimization_profile()
    result.set_shape(
        INPUT_NAME,
        profile.images_shape("min"),
        profile.images_shape("opt"),
        profile.images_shape("max"),
    )
    return result
