"""Flag thresholds calibrated on a set of frames and shipped inside the model file.

``alscout calibrate`` (and ``alscout fleet publish --calibration-frames``) score a
calibration set with the model through the runtime pipeline, smooth and select as the
streaming rule does (:func:`~alscout.runtime.temporal.candidate_scores`), and write the
thresholds for a few target flag rates into the model's metadata
(:class:`~alscout.runtime.model_info.FlagCalibration`). A server asked for a target
rate (``alscout serve --target-rate 1%``) starts its adaptive threshold from the
shipped one (:func:`with_shipped_threshold`) instead of flagging nothing while it warms
up, provided the thresholds were calibrated with the settings it scores with.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import ConfigError, InvalidInputError, ModelError
from alscout.runtime.detections import NMS_CONTAINED, NMS_OVERLAP
from alscout.runtime.model_info import CALIBRATION_KEY, FlagCalibration
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline
from alscout.runtime.temporal import SelectorConfig, candidate_scores, rate_thresholds

__all__ = [
    "DEFAULT_RATES",
    "ShippedChoice",
    "parse_rate",
    "calibration_settings",
    "calibrate",
    "write_calibration",
    "with_shipped_threshold",
    "selection_settings",
]

log = logging.getLogger(__name__)

#: target rates calibrated when none are given: 0.5%, 1%, 2%
DEFAULT_RATES = (0.005, 0.01, 0.02)


def parse_rate(text: str | float) -> float:
    """A target flag rate: ``"1%"`` -> 0.01, ``"0.01"`` -> 0.01; must be in (0, 1]."""
    value: float
    try:
        if isinstance(text, str) and text.strip().endswith("%"):
            value = float(text.strip()[:-1]) / 100.0
        else:
            value = float(text)
    except ValueError:
        raise ConfigError(
            f"a target rate is a fraction or a percentage (1%), got {text!r}"
        ) from None
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"a target rate must be in (0, 1] (0%..100%], got {text!r}")
    return value


def calibration_settings(pipeline: ScoringPipeline, selector: SelectorConfig) -> dict[str, Any]:
    """Every setting a shipped threshold depends on: how z is computed (acquisition and
    its settings, double evaluation, input size, quality gate) and how it is smoothed
    and reduced to candidates (dt, sigma, dt1)."""
    cfg = pipeline.config
    quality = None if cfg.quality is None else dataclasses.asdict(cfg.quality)
    return {
        "acquisition": cfg.method,
        "radius": cfg.radius,
        "region": cfg.region,
        "aggregation": cfg.aggregation,
        "candidate_threshold": cfg.candidate_threshold,
        "count_threshold": cfg.count_threshold,
        "nms_iou": cfg.nms_iou,
        "nms_contained": NMS_CONTAINED,
        "nms_overlap": NMS_OVERLAP,
        "double_evaluation": cfg.double_evaluation,
        "input_size": list(pipeline.input_size),
        "quality": quality,
        "dt": selector.dt,
        "sigma": selector.sigma,
        "dt1": selector.dt1,
    }


def calibrate(
    pipeline: ScoringPipeline,
    recordings: Iterable[Iterable[np.ndarray]],
    selector: SelectorConfig,
    rates: Sequence[float] = DEFAULT_RATES,
    *,
    source: str = "",
    on_frames: Callable[[int], None] | None = None,
) -> FlagCalibration:
    """Score every recording and set the thresholds for ``rates``.

    Args:
        pipeline: the model's scoring pipeline, configured as the server's.
        recordings: each an iterable of consecutive RGB uint8 frames ``[H, W, 3]``;
            candidates are taken per recording and pooled.
        selector: the selector settings the server will run (dt, sigma, dt1 matter).
        rates: target flag rates in (0, 1].
        source: what was scored, kept in the metadata for people.
        on_frames: called with the number of frames of each scored batch (progress).
    """
    candidates: list[np.ndarray] = []
    n_frames = 0
    batch_size = pipeline.config.batch_size
    for frames in recordings:
        z: list[float] = []
        gated: list[bool] = []
        stream = iter(frames)
        while batch := list(itertools.islice(stream, batch_size)):
            scores = pipeline.score(batch)
            z.extend(s.z for s in scores)
            gated.extend(s.gated for s in scores)
            if on_frames is not None:
                on_frames(len(batch))
        if z:
            candidates.append(candidate_scores(z, selector, gated))
            n_frames += len(z)
    pooled = np.concatenate(candidates) if candidates else np.zeros(0)
    thresholds = rate_thresholds(pooled, n_frames, rates)
    calibration = FlagCalibration(
        thresholds=tuple(thresholds),
        settings=_json(calibration_settings(pipeline, selector)),
        frames=n_frames,
        candidates=int(pooled.size),
        source=source,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    log.info(
        "calibrated model=%s frames=%d candidates=%d thresholds=%s",
        pipeline.model_info.version,
        n_frames,
        pooled.size,
        thresholds,
    )
    return calibration


def write_calibration(
    model_path: str | Path, calibration: FlagCalibration, out: str | Path | None = None
) -> Path:
    """Write ``calibration`` into an ONNX model's metadata: into ``out``, or in place.

    The file is replaced atomically (written beside, then renamed). Needs the ``onnx``
    package (the ``cpu`` extra); a TensorRT engine is calibrated through its ONNX file.
    """
    source = Path(model_path)
    target = Path(out) if out is not None else source
    if source.suffix.lower() != ".onnx":
        raise ConfigError(
            f"{source}: thresholds are written into ONNX models; calibrate the ONNX file and "
            "build the engine from it"
        )
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "writing model metadata needs the onnx package: pip install 'alscout[cpu]'"
        ) from None
    try:
        model = onnx.load(str(source))
    except Exception as error:  # onnx raises several kinds for a bad file
        raise ModelError(f"{source}: cannot read the ONNX model: {error}") from error
    props = {prop.key: prop.value for prop in model.metadata_props}
    props[CALIBRATION_KEY] = calibration.to_json()
    onnx.helper.set_model_props(model, props)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.calibrating")
    staging.write_bytes(model.SerializeToString())
    os.replace(staging, target)
    return target


@dataclass(frozen=True)
class ShippedChoice:
    """What a server starts a stream's selector with: ``selector`` (with
    ``initial_threshold`` set when ``used``) and ``message``, one line saying why."""

    selector: SelectorConfig
    used: bool
    message: str


def with_shipped_threshold(selector: SelectorConfig, pipeline: ScoringPipeline) -> ShippedChoice:
    """The selector settings with the model's shipped threshold for the target rate.

    Only for the adaptive threshold without a configured ``initial_threshold``; the
    thresholds must have been calibrated for exactly ``selector.target_rate`` and with
    the settings :func:`calibration_settings` names. Otherwise the settings come back
    unchanged, with a message saying why (the adaptive threshold then warms up).
    """
    if not selector.adaptive:
        return ShippedChoice(selector, False, "fixed threshold: shipped thresholds unused")
    if selector.initial_threshold is not None:
        return ShippedChoice(selector, False, "initial_threshold configured: shipped unused")
    info = pipeline.model_info
    rate = selector.target_rate
    fallback = (
        f"the adaptive threshold flags nothing for the first {selector.min_history} frames "
        "of each stream"
    )
    calibration = info.calibration
    if calibration is None:
        return ShippedChoice(
            selector,
            False,
            f"model {info.name} {info.version} carries no calibrated thresholds, so "
            f"{fallback}; calibrate it with `alscout calibrate --model M.onnx --frames SOURCE`",
        )
    differences = _differences(
        calibration.settings_dict(), calibration_settings(pipeline, selector)
    )
    if differences:
        return ShippedChoice(
            selector,
            False,
            f"model {info.name} {info.version} was calibrated with other settings "
            f"({'; '.join(differences)}), so {fallback}; calibrate it again with these",
        )
    threshold = calibration.threshold_for(rate)
    if threshold is None:
        shipped = ", ".join(f"{100 * r:g}%" for r in calibration.rates)
        return ShippedChoice(
            selector,
            False,
            f"model {info.name} {info.version} ships thresholds for {shipped}, not for "
            f"{100 * rate:g}%, so {fallback}; choose one of those rates or calibrate "
            f"with --rates {100 * rate:g}%",
        )
    chosen = dataclasses.replace(selector, initial_threshold=threshold)
    return ShippedChoice(
        chosen,
        True,
        f"model {info.name} {info.version}: shipped threshold {threshold:.6g} for "
        f"{100 * rate:g}% (calibrated on {calibration.frames} frames of "
        f"{calibration.source or 'an unnamed set'}) from the first frame, adaptive after "
        f"{selector.min_history} frames",
    )


def _differences(shipped: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(shipped) | set(current))
    normal = {k: _normal(shipped.get(k)) for k in keys}
    return [
        f"{k}: {shipped.get(k)!r} vs {current.get(k)!r}"
        for k in keys
        if normal[k] != _normal(current.get(k))
    ]


def _normal(value: Any) -> Any:
    """JSON round trip: tuples become lists, ints in float fields compare equal."""
    return json.loads(json.dumps(value, sort_keys=True))


def _json(values: dict[str, Any]) -> str:
    try:
        return json.dumps(values, sort_keys=True, allow_nan=False)
    except ValueError as error:
        raise InvalidInputError(f"calibration settings must be finite: {error}") from None


def selection_settings(
    path: str | Path | None = None, **pipeline_changes: Any
) -> tuple[PipelineConfig, SelectorConfig]:
    """The ``[pipeline]`` and ``[selector]`` tables of a server config file (or the
    defaults), with ``pipeline_changes`` (None values ignored) on top.

    For the fleet side (``alscout fleet publish --calibration-frames``), which does not
    load the server; ``alscout calibrate`` reads the file, environment and flags as
    ``alscout serve`` does.
    """
    tables: dict[str, Any] = {}
    if path is not None:
        try:
            tables = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the server config: {error}") from None
    pipeline = dict(tables.get("pipeline", {}))
    pipeline.update({k: v for k, v in pipeline_changes.items() if v is not None})
    pipeline = {k: tuple(v) if isinstance(v, list) else v for k, v in pipeline.items()}
    try:
        return PipelineConfig(**pipeline), SelectorConfig(**dict(tables.get("selector", {})))
    except TypeError as error:
        raise ConfigError(f"{path}: bad [pipeline] or [selector] setting: {error}") from None
