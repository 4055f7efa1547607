"""A training checkpoint to a model file: build, describe, save, verify, then rename.

The one path from ``last.pt`` to a deployable file, used by ``alscout export``, the
fleet's finetune-and-publish and the active-learning driver. Nothing is written at
``out`` unless the file was saved whole and, when asked, verified.

A detector with the learned difficulty head exports its ``difficulty`` output too
(ONNX and .pt2; verified like ``probs``), except with the scores inside the graph,
which compute the pixel score from ``probs`` alone: that export leaves the head out.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alscout.errors import ConfigError
from alscout.export.onnx import DEFAULT_OPSET, OnnxFromTorch, SaveOnnx, info_from_detector
from alscout.export.quantize import QuantizeSettings
from alscout.export.verify import (
    INT8_TOLERANCE,
    ONNX_TOLERANCE,
    Tolerance,
    VerifyReport,
    verify_export,
)
from alscout.export.verify_scores import SCORES_TOLERANCE, ScoresReport, ScoreTolerance
from alscout.runtime.model_info import GraphScoring, ModelInfo

if TYPE_CHECKING:
    from alscout.trainer.data.annotations import Dataset

__all__ = ["export_checkpoint", "FORMATS", "Int8Export"]

log = logging.getLogger(__name__)

#: export format -> backend that runs the exported file for verification
FORMATS = {"onnx": "onnxruntime-cpu", "pt2": "torch"}


@dataclass(frozen=True)
class Int8Export:
    """An INT8 ONNX export (``alscout export onnx --int8``, export/quantize.py).

    ``calibration``: folder of frames or video to calibrate on (the TensorRT INT8
    path's ``--calib-frames``), at most ``limit`` frames, every ``stride``-th.
    ``verify_limit``: held-out frames verified on when the caller gives none: those of
    the calibration source after the ones calibration may read. ``quality``: labelled
    images (e.g. PETS09 frames 601-795) on which MR@FPPI=1 of INT8 and float32 are
    compared; None records in the metadata that it was not checked.
    """

    calibration: Path
    limit: int = 256
    stride: int = 1
    verify_limit: int = 40
    settings: QuantizeSettings = field(default_factory=QuantizeSettings)
    tolerance: Tolerance = INT8_TOLERANCE
    quality: Dataset | None = None

    def __post_init__(self) -> None:
        for name in ("limit", "stride", "verify_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"INT8 export: {name} must be >= 1, got {getattr(self, name)}")


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    fmt: str = "onnx",
    version: str | None = None,
    training_data_digest: str | None = None,
    missing_digest: str | None = None,
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    frames: Sequence[Any] = (),
    tolerance: Tolerance = ONNX_TOLERANCE,
    scores: GraphScoring | None = None,
    keep_probs: bool = False,
    scores_tolerance: ScoreTolerance = SCORES_TOLERANCE,
    int8: Int8Export | None = None,
) -> VerifyReport | ScoresReport | None:
    """Export ``checkpoint`` to ``out`` (SPEC §4 model contract).

    Args:
        checkpoint: a trainer checkpoint (``last.pt``).
        out: the file to write.
        fmt: ``"onnx"`` or ``"pt2"`` (:data:`FORMATS`).
        version: model version in the metadata (default: the detector config's).
        training_data_digest: digest in the metadata; default the checkpoint's.
        missing_digest: used when neither is known; None raises :class:`ConfigError`.
        input_size: (height, width) in the metadata; default the training input size.
        opset: ONNX opset.
        verify: compare the exported file with PyTorch on random inputs and ``frames``
            (RGB uint8 ``[H, W, 3]``); a mismatch raises and writes nothing.
        tolerance: what verification accepts; default SPEC §4's 1e-4 absolute.
        scores: ONNX only: put the scores inside the graph with these settings
            (``alscout export onnx --scores-in-graph``); the plain model is exported
            and verified first, then the in-graph one is verified against it plus
            Numba scoring (``scores_tolerance``: SPEC §4's z to 1e-4 relative). A
            difficulty head is left out of such an export.
        keep_probs: with ``scores``, keep ``probs`` as a third output.
        int8: ONNX only: quantise the verified float32 model to INT8 (QDQ), verify it
            against float32 (:data:`INT8_TOLERANCE`, on ``frames`` or, without them,
            on held-out frames of the calibration source) and check its detection
            quality (:class:`Int8Export`); the INT8 model is what ``out`` receives.

    Returns:
        The verification report (a :class:`ScoresReport` holding the plain model's
        too, with ``scores``; with ``int8``, INT8's holding float32's), or None when
        ``verify`` is False.
    """
    from alscout.runtime.backends import open_backend
    from alscout.runtime.backends.torch_reference import TorchBackend
    from alscout.trainer.checkpoint import load_checkpoint
    from alscout.trainer.model import export_module

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {sorted(FORMATS)}")
    if scores is not None and fmt != "onnx":
        raise ConfigError(f"scores inside the graph are an ONNX export option, not {fmt}")
    if int8 is not None and (fmt != "onnx" or scores is not None):
        raise ConfigError(
            "INT8 is an option of plain ONNX exports (not pt2, not with --scores-in-graph)"
        )
    out = Path(out)
    state = load_checkpoint(checkpoint)
    digest = training_data_digest or state.data_digest or missing_digest
    if not digest:
        raise ConfigError(
            f"{checkpoint} holds no training data digest; pass training_data_digest "
            "(--training-data-digest on the command line)"
        )
    if input_size is None and state.train is not None:
        input_size = state.train.input_size
    detector = state.build_model()
    # The in-graph scores read probs only; such a model carries no difficulty output.
    difficulty = detector.has_difficulty and scores is None
    if detector.has_difficulty and not difficulty:
        log.info("export with scores in the graph: the difficulty head is left out")
    module = export_module(detector) if difficulty else detector
    info = info_from_detector(
        detector,
        training_data_digest=digest,
        input_size=input_size,
        version=version,
        difficulty=difficulty,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    report: VerifyReport | ScoresReport | None = None
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        staged = Path(scratch) / f"model.{fmt}"
        if fmt == "onnx":
            SaveOnnx(OnnxFromTorch(module, info, opset=opset), staged)()
        else:
            from alscout.export.pt2 import ProgramFromTorch, SaveProgram

            SaveProgram(ProgramFromTorch(module, info), info, staged)()
        if int8 is not None and verify and not frames:
            frames = _held_out(int8, info)
        if verify:
            reference = TorchBackend(module, info, source=str(checkpoint))
            with reference, open_backend(staged, FORMATS[fmt]) as candidate:
                report = verify_export(reference, candidate, tolerance, frames=list(frames))
            report.raise_for_failure()
        if scores is not None:
            plain_report = report if isinstance(report, VerifyReport) else None
            staged, report = _add_scores(
                staged, scores, keep_probs, list(frames) if verify else None, scores_tolerance
            )
            if report is not None:
                report.plain = plain_report
        if int8 is not None:
            float_report = report if isinstance(report, VerifyReport) else None
            frames_int8 = list(frames) if verify else None
            staged, report = _quantize(staged, info, int8, frames_int8, float_report)
        os.replace(staged, out)
    log.info(
        "exported %s out=%s version=%s scores_in_graph=%s int8=%s",
        fmt,
        out,
        info.version,
        bool(scores),
        int8 is not None,
    )
    return report


def _add_scores(
    plain: Path,
    scores: GraphScoring,
    keep_probs: bool,
    frames: list[Any] | None,
    tolerance: ScoreTolerance,
) -> tuple[Path, ScoresReport | None]:
    """Write the model at ``plain`` with the scores inside its graph next to it.

    ``frames``: None skips verification; else the in-graph model is compared with the
    plain one plus Numba scoring on random inputs and these frames, and a mismatch
    raises. Returns the new file and the report.
    """
    from alscout.export.onnx import OnnxFromPath
    from alscout.export.onnx_scores import ScoredOnnxFromOnnx
    from alscout.export.verify_scores import verify_scores_export
    from alscout.runtime.backends import open_backend

    scored = plain.with_name("scored.onnx")
    SaveOnnx(ScoredOnnxFromOnnx(OnnxFromPath(plain), scores, keep_probs=keep_probs), scored)()
    if frames is None:
        return scored, None
    with (
        open_backend(plain, "onnxruntime-cpu") as reference,
        open_backend(scored, "onnxruntime-cpu") as candidate,
    ):
        report = verify_scores_export(reference, candidate, tolerance, frames=frames)
    report.raise_for_failure()
    return scored, report


def _held_out(int8: Int8Export, info: ModelInfo) -> list[Any]:
    """Frames of the calibration source that calibration never reads."""
    from alscout.export.calibration import CalibrationBatches

    batches = CalibrationBatches(int8.calibration, info, limit=int8.limit, stride=int8.stride)
    return batches.held_out(int8.verify_limit)


def _quantize(
    plain: Path,
    info: ModelInfo,
    int8: Int8Export,
    frames: list[Any] | None,
    previous: VerifyReport | None,
) -> tuple[Path, VerifyReport | None]:
    """Write the INT8 model of the float32 one at ``plain`` next to it.

    ``frames``: None skips verification; else INT8 is compared with float32 on random
    inputs and these frames and a mismatch raises (``previous``, the float32 model's
    verification, goes into the report). Detection quality is checked when
    ``int8.quality`` is given, and recorded in the metadata either way. Returns the new
    file and the report (its notes hold the quality check).
    """
    from alscout.export.calibration import CalibrationBatches
    from alscout.export.quantize import mark_quality, quantize_onnx
    from alscout.runtime.backends import open_backend
    from alscout.trainer.evaluation.exported import int8_quality

    quantized = plain.with_name("int8.onnx")
    calibration = CalibrationBatches(int8.calibration, info, limit=int8.limit, stride=int8.stride)
    quantize_onnx(plain, quantized, calibration, int8.settings)
    report = None
    quality = None
    with (
        open_backend(plain, "onnxruntime-cpu") as reference,
        open_backend(quantized, "onnxruntime-cpu") as candidate,
    ):
        if frames is not None:
            report = verify_export(reference, candidate, int8.tolerance, frames=frames)
            report.reference, report.candidate = "ONNX Runtime FP32", "ONNX Runtime INT8"
            report.previous = previous
            report.raise_for_failure()
        if int8.quality is not None:
            quality = int8_quality(reference, candidate, int8.quality)
    mark_quality(quantized, quality)
    if report is not None:
        if quality is None:
            report.notes.append(
                "detection quality: not checked (no labelled data; the metadata says so)"
            )
        else:
            report.notes.append(quality.describe())
            if not quality.within:
                report.notes.append(
                    "WARNING: INT8 loses detection quality; the model's metadata "
                    "(alscout.quantization.quality) says so"
                )
    return quantized, report
