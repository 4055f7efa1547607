"""A training checkpoint to a model file: build, describe, save, verify, then rename.

The one path from ``last.pt`` to a deployable file, used by ``alscout export``, the
fleet's finetune-and-publish and the active-learning driver. Nothing is written at
``out`` unless the file was saved whole and, when asked, verified.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError
from alscout.export.onnx import DEFAULT_OPSET, OnnxFromTorch, SaveOnnx, info_from_detector
from alscout.export.verify import ONNX_TOLERANCE, Tolerance, VerifyReport, verify_export
from alscout.export.verify_scores import SCORES_TOLERANCE, ScoresReport, ScoreTolerance
from alscout.runtime.model_info import GraphScoring

__all__ = ["export_checkpoint", "FORMATS"]

log = logging.getLogger(__name__)

#: export format -> backend that runs the exported file for verification
FORMATS = {"onnx": "onnxruntime-cpu", "pt2": "torch"}


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
            Numba scoring (``scores_tolerance``: SPEC §4's z to 1e-4 relative).
        keep_probs: with ``scores``, keep ``probs`` as a third output.

    Returns:
        The verification report (a :class:`ScoresReport` holding the plain model's
        too, with ``scores``), or None when ``verify`` is False.
    """
    from alscout.runtime.backends import open_backend
    from alscout.runtime.backends.torch_reference import TorchBackend
    from alscout.trainer.checkpoint import load_checkpoint

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {sorted(FORMATS)}")
    if scores is not None and fmt != "onnx":
        raise ConfigError(f"scores inside the graph are an ONNX export option, not {fmt}")
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
    info = info_from_detector(
        detector, training_data_digest=digest, input_size=input_size, version=version
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    report: VerifyReport | ScoresReport | None = None
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        staged = Path(scratch) / f"model.{fmt}"
        if fmt == "onnx":
            SaveOnnx(OnnxFromTorch(detector, info, opset=opset), staged)()
        else:
            from alscout.export.pt2 import ProgramFromTorch, SaveProgram

            SaveProgram(ProgramFromTorch(detector, info), info, staged)()
        if verify:
            reference = TorchBackend(detector, info, source=str(checkpoint))
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
        os.replace(staged, out)
    log.info(
        "exported %s out=%s version=%s scores_in_graph=%s", fmt, out, info.version, bool(scores)
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
