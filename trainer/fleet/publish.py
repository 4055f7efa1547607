"""Publishing an ONNX model into the registry, optionally with calibrated flag thresholds.

``alscout fleet publish`` (and ``fleet finetune`` after training) copy a checked ONNX
file into a :class:`~alscout.runtime.model_registry.ModelRegistry`, stamped with the
registry's version. With calibration frames (``--calibration-frames``) the model is
first scored on them and the thresholds of a few target flag rates are written into
its metadata and into the registry entry's metrics (``calibration``), so that a server
asked for a rate flags at it from the first frame (docs/temporal.md, "Shipped
thresholds"). No PyTorch here: ``alscout calibrate --registry`` uses it too.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import ConfigError, DataError, ModelError
from alscout.files import frame_files
from alscout.runtime.model_info import FlagCalibration
from alscout.runtime.model_registry import ModelRegistry, ModelVersion

__all__ = [
    "publish_model",
    "stamp_version",
    "calibration_metrics",
    "calibrate_model",
    "calibration_frames",
]

log = logging.getLogger(__name__)


def publish_model(
    registry: ModelRegistry,
    model_file: str | Path,
    *,
    metrics: dict[str, Any],
    notes: str = "",
    version: str | None = None,
    calibration: FlagCalibration | None = None,
) -> ModelVersion:
    """Publish an ONNX file into the registry (checked against the model contract first).

    The registry's version is the model's version: the copy published carries it in
    its ``alscout.model_version`` metadata (what ``GetModelInfo`` and every decision
    report), whatever version the file was exported with. ``version``: take exactly
    this name; default the next free one (taken again if another publisher wins it).
    ``calibration``: thresholds to ship in the copy's metadata and, summarised, in the
    entry's ``metrics["calibration"]``.
    """
    from alscout.export.onnx import OnnxFromPath

    OnnxFromPath(model_file)()  # raises ModelError naming the file
    source = Path(model_file)
    if calibration is not None:
        metrics = {**metrics, "calibration": calibration_metrics(calibration)}
    for _ in range(100):
        name = version or registry.next_version()
        with tempfile.TemporaryDirectory(prefix="alscout-publish-") as folder:
            stamped = stamp_version(source, Path(folder) / source.name, name, calibration)
            try:
                return registry.publish(stamped, metrics=metrics, notes=notes, version=name)
            except ConfigError:
                if version is not None:
                    raise
                log.info("version taken by another publisher version=%s", name)
    raise ModelError(f"{registry.root}: could not take a free version number")


def stamp_version(
    model_file: Path, out: Path, version: str, calibration: FlagCalibration | None = None
) -> Path:
    """Copy the ONNX file ``model_file`` to ``out`` with metadata version ``version``
    (and the calibrated thresholds, when given)."""
    import onnx

    from alscout.runtime.model_info import CALIBRATION_KEY

    model = onnx.load(str(model_file))
    props = {prop.key: prop.value for prop in model.metadata_props}
    props["alscout.model_version"] = version
    if calibration is not None:
        props[CALIBRATION_KEY] = calibration.to_json()
    onnx.helper.set_model_props(model, props)
    out.write_bytes(model.SerializeToString())
    return out


def calibration_metrics(calibration: FlagCalibration) -> dict[str, Any]:
    """The registry entry's summary of a calibration: thresholds by rate in percent."""
    return {
        "thresholds": {f"{100 * rate:g}%": value for rate, value in calibration.thresholds},
        "frames": calibration.frames,
        "candidates": calibration.candidates,
        "source": calibration.source,
        "settings": calibration.settings_dict(),
    }


def calibration_frames(source: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames ``[H, W, 3]`` of an image folder (natural name order) or a video
    file, at most ``max_frames``. (MCAP and S3 recordings: ``alscout calibrate``.)"""
    from alscout.trainer.data.images import VideoReader, read_still

    path = Path(source)
    if path.is_dir():
        yield from (read_still(f) for f in frame_files(path)[:max_frames])
        return
    if not path.is_file():
        raise DataError(f"{path}: calibration frames not found (a video file or image folder)")
    with VideoReader(path) as reader:
        for index in itertools.count():
            if max_frames is not None and index >= max_frames:
                return
            try:
                yield reader.read(index)
            except DataError:
                if index == 0:
                    raise
                return  # the end of the video


def calibrate_model(
    model_file: str | Path,
    sources: Sequence[str | Path],
    rates: Sequence[float],
    *,
    serve_config: str | Path | None = None,
    acquisition: str | None = None,
    quality_gate: bool | None = None,
    max_frames: int | None = None,
    threads: int = 0,
) -> FlagCalibration:
    """Score ``sources`` with the ONNX model (ONNX Runtime on the CPU) and calibrate
    the thresholds of ``rates`` for the selection settings of ``serve_config`` (the
    server's TOML; ``acquisition`` and ``quality_gate`` as ``alscout serve``'s flags)."""
    from alscout.runtime.backends.registry import open_backend
    from alscout.runtime.pipeline import ScoringPipeline
    from alscout.runtime.shipped_thresholds import calibrate, selection_settings

    pipeline_config, selector = selection_settings(
        serve_config, method=acquisition, quality=quality_gate
    )
    backend = open_backend(model_file, "onnxruntime-cpu", threads=threads)
    with ScoringPipeline(backend, pipeline_config) as pipeline:
        return calibrate(
            pipeline,
            (calibration_frames(s, max_frames) for s in sources),
            selector,
            rates,
            source=", ".join(str(s) for s in sources),
        )
