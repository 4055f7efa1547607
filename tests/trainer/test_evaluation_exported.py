"""Caltech evaluation of an exported model (trainer/evaluation/exported.py).

An ONNX export run by ONNX Runtime must score a labelled set as ``alscout evaluate``
scores the checkpoint it came from: same filters, resizing, double evaluation and
decoding, so the INT8 quality check compares like with like.
"""

from __future__ import annotations

import pytest

from alscout.export.onnx import OnnxFromTorch, SaveOnnx, info_from_detector
from alscout.runtime.backends import open_backend

torch = pytest.importorskip("torch", reason="the reference evaluation runs the torch model")


def test_an_onnx_export_scores_pets_as_alscout_evaluate_does(pets_dir, tmp_path):
    from alscout.trainer.cli_train import load_data
    from alscout.trainer.evaluation.exported import evaluate_backend, int8_quality
    from alscout.trainer.model import Detector, DetectorConfig
    from alscout.trainer.training import evaluate

    torch.manual_seed(2)
    detector = Detector(DetectorConfig(width=4, fires_per_level=1)).eval()
    with torch.no_grad():
        detector.logits.bias.fill_(-1.0)  # enough peaks over 0.05 to make a curve
    info = info_from_detector(detector, training_data_digest="d", input_size=(120, 160))
    path = tmp_path / "m.onnx"
    SaveOnnx(OnnxFromTorch(detector, info), path)()
    video = pets_dir / "vtest.avi"
    data = load_data(pets_dir / "gt.txt", None, video, (601, 612))
    want, _ = evaluate(detector, data, (120, 160), mirror=True)
    with open_backend(path, "onnxruntime-cpu") as backend:
        got = evaluate_backend(backend, data)
        same = int8_quality(backend, backend, data)
    assert want.num_detections > 0 and want.num_gt > 0
    assert (got.num_images, got.num_gt, got.num_ignore_gt) == (
        want.num_images,
        want.num_gt,
        want.num_ignore_gt,
    )
    assert got.num_detections == want.num_detections
    assert got.mr_at_fppi1 == pytest.approx(want.mr_at_fppi1, abs=1e-9)
    assert got.lamr == pytest.approx(want.lamr, abs=1e-9)
    assert same.loss_points == 0 and same.within and same.images == 12
