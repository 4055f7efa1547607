"""The vehicle has no PyTorch: runtime/ must import and score frames where torch cannot load.

A child process installs a ``sys.meta_path`` finder that refuses torch (and the
trainer, which needs it), imports every module under ``alscout.runtime``, decodes
PNG frames and scores them through ONNX Runtime. Its scores must equal the ones this
process computes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from shared_inputs import REFUSE_TORCH, write_tiny_detector

from alscout.runtime.backends import open_backend
from alscout.runtime.pipeline import ScoringPipeline

CHILD = (
    r"""
import json, pkgutil, sys
"""
    + REFUSE_TORCH
    + r"""
import alscout.runtime
modules = sorted(
    m.name for m in pkgutil.walk_packages(alscout.runtime.__path__, "alscout.runtime.")
)
for name in modules:
    __import__(name)

from alscout.errors import BackendUnavailableError
from alscout.runtime.backends import open_backend
from alscout.runtime.backends.torch_reference import TorchBackend
from alscout.runtime.decode import decode_frame
from alscout.runtime.pipeline import ScoringPipeline

model, frame_dir = sys.argv[1], sys.argv[2]
frames = [
    decode_frame(open(f"{frame_dir}/{i}.png", "rb").read(), encoding="png") for i in range(3)
]
with ScoringPipeline(open_backend(model, "onnxruntime-cpu")) as pipeline:
    scores = pipeline.score(frames, heatmaps=True)
try:
    TorchBackend.from_file(model.replace(".onnx", ".pt2"))
    torch_refused = False
except BackendUnavailableError:
    torch_refused = True
print(json.dumps({
    "z": [s.z for s in scores],
    "modules": modules,
    "torch_loaded": any(m.split(".")[0] == "torch" for m in sys.modules),
    "torch_refused": torch_refused,
}))
"""
)


def test_runtime_imports_and_scores_without_torch(tmp_path):
    model = write_tiny_detector(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.pt2").write_bytes(b"placeholder that must never be opened")
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8) for i in range(3)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame[:, :, ::-1])

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch_loaded"] is False
    assert report["torch_refused"] is True
    for expected in ("alscout.runtime.pipeline", "alscout.runtime.backends.torch_reference"):
        assert expected in report["modules"]

    with ScoringPipeline(open_backend(model, "onnxruntime-cpu")) as pipeline:
        here = [s.z for s in pipeline.score(frames)]
    np.testing.assert_allclose(report["z"], here, rtol=1e-6)


def test_the_blocker_really_blocks():
    code = CHILD.split("import alscout.runtime")[0] + "import torch\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode == 0:
        pytest.fail("the meta_path blocker let torch import")
    assert "blocked" in result.stderr
