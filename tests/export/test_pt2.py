from __future__ import annotations

import numpy as np
import pytest

from alscout.errors import InvalidInputError, ModelError
from alscout.runtime.backends import open_backend

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")


@pytest.mark.slow
def test_pt2_program_runs_in_the_torch_backend_like_the_module(tmp_path):
    from alscout.export.onnx import info_from_detector
    from alscout.export.pt2 import ProgramFromTorch, SaveProgram
    from alscout.trainer.model import Detector, DetectorConfig

    torch.manual_seed(2)
    detector = Detector(DetectorConfig(width=4, fires_per_level=0)).eval()  # quick to trace
    info = info_from_detector(detector, training_data_digest="d", input_size=(96, 128))
    path = SaveProgram(ProgramFromTorch(detector, info), info, tmp_path / "det.pt2")()
    assert path.is_file() and not list(tmp_path.glob(".*partial*"))
    backend = open_backend(path)
    assert backend.name == "torch"
    assert backend.model_info.name == info.name and backend.model_info.file_format == "pt2"
    images = np.random.default_rng(0).standard_normal((3, 3, 101, 131), dtype=np.float32)
    with backend:
        probs = backend.infer(images)
        with torch.inference_mode():
            expected = detector(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        np.testing.assert_allclose(backend.infer(images[:1]), expected[:1], atol=1e-5)
        # Shapes outside the ranges torch.export derived are refused with a clear error.
        with pytest.raises(InvalidInputError, match="exported program cannot run"):
            backend.infer(images[:, :, :40, :40])


def test_pt2_without_metadata_or_not_a_program_fails_at_load(tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match=r"not a torch\.export program"):
        open_backend(junk, "torch")

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return torch.sigmoid(x)

    bare = tmp_path / "bare.pt2"
    program = torch.export.export(Tiny(), (torch.zeros(2, 3, 8, 8),))
    torch.export.save(program, str(bare))
    with pytest.raises(ModelError, match=r"no alscout_metadata\.json"):
        open_backend(bare)
