"""INT8 for ONNX Runtime: static QDQ quantisation calibrated on real frames.

:func:`quantize_onnx` turns a float32 contract model into one whose convolutions
(:data:`DEFAULT_OP_TYPES`) run on 8-bit integers: ONNX Runtime's ``quantize_static``
in QDQ format (QuantizeLinear / DequantizeLinear pairs that ONNX Runtime fuses into
integer kernels), weights signed 8-bit per output channel, activations unsigned 8-bit
with ranges calibrated on :class:`~alscout.export.calibration.CalibrationBatches`: the
same folder or video, the same resizing and normalisation as the TensorRT INT8 path.
Input ``images`` and output ``probs`` stay float32, so the file follows the plain
model contract (SPEC §4) and every backend, the pipeline and ``alscout serve`` take it
as they take the float32 model.

Only the convolutions are quantised (and of those, not the first and the last:
:attr:`QuantizeSettings.float_ends`): they hold every multiply-add (export/flops.py);
the rest of the detector (GroupNorm, pooling, the logits resize and the sigmoid) is
memory-bound, gains nothing from 8 bits and loses accuracy. On the PETS09 detector,
quantising every operator ONNX Runtime can cost 6.5 points of MR@FPPI=1 (the head
then emits probabilities in steps of 1/255, rounding the small ones the entropy
scores weigh to 0); the default settings cost none (docs/runtime.md, "INT8").

The file says what it is in its metadata: ``alscout.quantization`` (settings and
calibration set) and, once :func:`mark_quality` has run, ``alscout.quantization.quality``
(MR@FPPI=1 of float32 and INT8 on a labelled set and whether they are within
:data:`QUALITY_POINTS`, or that nothing was checked).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import ConfigError, ModelError
from alscout.export.calibration import CalibrationBatches
from alscout.runtime.model_info import INPUT_NAME

__all__ = [
    "DEFAULT_OP_TYPES",
    "QUANTIZATION_KEY",
    "QUALITY_KEY",
    "QUALITY_POINTS",
    "QuantizeSettings",
    "Int8Quality",
    "quantize_onnx",
    "end_convolutions",
    "mark_quality",
    "read_quantization",
]

log = logging.getLogger(__name__)

#: metadata key: JSON of the quantisation settings and calibration set
QUANTIZATION_KEY = "alscout.quantization"
#: metadata key: JSON of the detection-quality check (:class:`Int8Quality`)
QUALITY_KEY = "alscout.quantization.quality"
#: largest MR@FPPI=1 loss (percentage points) an INT8 model may have against float32
QUALITY_POINTS = 1.0
#: operators quantised by default: the convolutions, where the multiply-adds are
DEFAULT_OP_TYPES = ("Conv",)


@dataclass(frozen=True)
class QuantizeSettings:
    """How a model is quantised; validated on construction.

    ``per_channel``: one weight scale per output channel. ``reduce_range``: 7-bit
    weights, so that AVX2's ``vpmaddubsw`` (u8 x s8 pairs summed into 16 bits) cannot
    saturate on CPUs without VNNI; VNNI CPUs lose a little precision and no speed.
    ``moving_average``: an activation's range is the mean over calibration batches of
    each batch's minimum and maximum, not the extremes of all of them (one outlier
    frame then cannot stretch the range of every frame).
    ``op_types``: operators to quantise (None: every one ONNX Runtime can).
    ``mirrored``: calibrate on each batch and its horizontal mirror, as the pipeline
    runs them with double evaluation. ``float_ends``: the convolutions at the graph's
    ends stay float32 (:func:`end_convolutions`): the first ones read the image (3
    channels: a short, memory-bound reduction that 8 bits barely speed up) and the last
    ones write the logits, where an 8-bit step is a step in every probability. On the
    PETS09 detector they are 5 % of the multiply-adds and half of INT8's error in z.
    """

    per_channel: bool = True
    reduce_range: bool = True
    moving_average: bool = True
    op_types: tuple[str, ...] | None = DEFAULT_OP_TYPES
    mirrored: bool = True
    float_ends: bool = True

    def __post_init__(self) -> None:
        if self.op_types is not None:
            if not self.op_types or not all(isinstance(op, str) and op for op in self.op_types):
                raise ConfigError(f"op_types must be operator names, got {self.op_types!r}")
            object.__setattr__(self, "op_types", tuple(self.op_types))


@dataclass(frozen=True)
class Int8Quality:
    """Detection quality of an INT8 model next to its float32 source, on one labelled set.

    ``mr_float``, ``mr_int8``: miss rate at FPPI = 1, fractions in [0, 1]; ``dataset``:
    what they were measured on; ``images``: how many images. ``allowed_points``: the
    largest loss in percentage points that still counts as within.
    """

    dataset: str
    images: int
    mr_float: float
    mr_int8: float
    allowed_points: float = QUALITY_POINTS

    @property
    def loss_points(self) -> float:
        """INT8's miss rate minus float32's, in percentage points (> 0: INT8 misses more)."""
        return 100.0 * (self.mr_int8 - self.mr_float)

    @property
    def within(self) -> bool:
        """Whether INT8 loses at most ``allowed_points`` of MR@FPPI=1."""
        return self.loss_points <= self.allowed_points

    def describe(self) -> str:
        verdict = "ok" if self.within else "NOT within"
        return (
            f"detection quality on {self.dataset} ({self.images} images): {verdict} "
            f"MR@FPPI=1 float32 {100 * self.mr_float:.2f}%, INT8 {100 * self.mr_int8:.2f}% "
            f"({self.loss_points:+.2f} points; allowed +{self.allowed_points:g})"
        )

    def to_metadata(self) -> str:
        """The JSON stored under :data:`QUALITY_KEY`."""
        return json.dumps({"checked": True, "within": self.within, **asdict(self)})


class _FrameReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over calibration batches."""

    def __init__(self, batches: CalibrationBatches, mirrored: bool) -> None:
        self._batches = batches
        self._mirrored = mirrored
        self._iter: Iterator[np.ndarray] = iter(batches)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        if batch is None:
            return None
        self.count += 1
        if self._mirrored:
            batch = np.concatenate([batch, batch[..., ::-1]])
        return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_onnx(
    source: str | Path,
    out: str | Path,
    calibration: CalibrationBatches,
    settings: QuantizeSettings | None = None,
) -> Path:
    """Write the INT8 QDQ model of the float32 ONNX model at ``source`` to ``out``.

    ``calibration``: batches ``[B, 3, H, W]`` of real frames at the model's input size.
    The result keeps the source's metadata, adds :data:`QUANTIZATION_KEY`, and is
    checked against the model contract. Raises :class:`ModelError` when ONNX Runtime
    cannot quantise the model, :class:`~alscout.errors.DataError` when the calibration
    source holds too few frames.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from alscout.export.onnx import OnnxFromPath, SaveOnnx

    settings = settings or QuantizeSettings()
    source, out = Path(source), Path(out)
    reader = _FrameReader(calibration, settings.mirrored)
    raw = out.with_name(out.name + ".qdq")
    named = out.with_name(out.name + ".named")
    started = time.perf_counter()
    try:
        # nodes are excluded by name: the copy quantised has a name on every node
        model = onnx.load(str(source))
        for index, node in enumerate(model.graph.node):
            node.name = node.name or f"{node.op_type}_{index}"
        first, last = end_convolutions(model)
        kept = sorted(set(first) | set(last)) if settings.float_ends else []
        onnx.save(model, str(named))
        with _quiet_quantizer():
            quantize_static(
                str(named),
                str(raw),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
                nodes_to_exclude=kept,
                # MinMax keeps two numbers per tensor and batch; ONNX Runtime's
                # histogram methods keep every activation of every batch (gigabytes).
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibMovingAverage": settings.moving_average},
            )
        model = OnnxFromPath(raw)()
    except ModelError:
        raise
    except Exception as error:  # onnxruntime.quantization raises plain Exceptions
        raise ModelError(f"{source}: ONNX Runtime could not quantise the model: {error}") from error
    finally:
        raw.unlink(missing_ok=True)
        named.unlink(missing_ok=True)
    record = {
        "format": "int8-qdq",
        "activations": "uint8",
        "weights": "int8",
        **asdict(settings),
        "float_nodes": kept,
        "calibration": {
            "source": calibration.source.name,
            "digest": calibration.digest(),
            "batches": reader.count,
            "batch_size": calibration.batch_size,
            "limit": calibration.limit,
            "stride": calibration.stride,
        },
    }
    _set_metadata(model, {QUANTIZATION_KEY: json.dumps(record)})
    model.producer_name = "alscout"
    SaveOnnx(model, out)()
    log.info(
        "quantised to INT8 source=%s out=%s batches=%d seconds=%.1f",
        source,
        out,
        reader.count,
        time.perf_counter() - started,
    )
    return out


def end_convolutions(model: Any) -> tuple[list[str], list[str]]:
    """Names of the ``Conv`` nodes at the two ends of an ``onnx.ModelProto``'s graph.

    First: those that read the input ``images`` itself. Last: those from which the
    outputs are reached through no other convolution (paths through ``Shape`` carry
    sizes, not values, and are not followed).
    """
    producers = {name: node for node in model.graph.node for name in node.output}
    first = [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv" and node.input[0] == INPUT_NAME
    ]
    last: list[str] = []
    seen: set[str] = set()
    pending = [output.name for output in model.graph.output]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            last.append(node.name)
        elif node.op_type != "Shape":
            pending.extend(node.input)
    return first, last


def mark_quality(path: str | Path, quality: Int8Quality | None) -> None:
    """Record the detection-quality check in the model's metadata (:data:`QUALITY_KEY`).

    ``quality`` None records that it was not checked. A check that is not within
    :attr:`Int8Quality.allowed_points` is also logged as a warning.
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    if quality is None:
        value = json.dumps({"checked": False})
        log.info("INT8 detection quality not checked path=%s (no labelled data given)", path)
    else:
        value = quality.to_metadata()
        if not quality.within:
            log.warning("INT8 model loses detection quality path=%s %s", path, quality.describe())
    _set_metadata(model, {QUALITY_KEY: value})
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(model.SerializeToString())
    os.replace(partial, path)


def read_quantization(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """The quantisation record of a model's metadata (with its ``quality``), or None."""
    text = metadata.get(QUANTIZATION_KEY)
    if text is None:
        return None
    try:
        record = dict(json.loads(text))
        if QUALITY_KEY in metadata:
            record["quality"] = json.loads(metadata[QUALITY_KEY])
    except (ValueError, TypeError) as error:
        raise ModelError(f"metadata {QUANTIZATION_KEY} is malformed: {error}") from error
    return record


def _set_metadata(model: Any, values: Mapping[str, str]) -> None:
    props = {prop.key: prop.value for prop in model.metadata_props}
    props.update(values)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


class _QuantizerNoise(logging.Filter):
    """Drops the root-logger warnings onnxruntime.quantization emits per node."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if f"onnxruntime{os.sep}quantization" in record.pathname:
            self.dropped += 1
            return False
        return True


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization warns on the root logger for every bias it cannot fold
    (GroupNorm's constants) and asks for pre-processing; those are expected here."""
    noise = _QuantizerNoise()
    root = logging.getLogger()
    root.addFilter(noise)
    try:
        yield
    finally:
        root.removeFilter(noise)
        if noise.dropped:
            log.debug("onnxruntime.quantization warnings dropped count=%d", noise.dropped)
