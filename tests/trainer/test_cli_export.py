from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from shared_inputs import write_tiny_detector

from alscout.apps.cli import main

torch = pytest.importorskip("torch", reason="export needs torch (the train extra)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from alscout.trainer.checkpoint import Checkpoint, save_checkpoint
    from alscout.trainer.model import Detector, DetectorConfig

    torch.manual_seed(3)
    config = DetectorConfig(width=4, fires_per_level=0, name="cli-det", version="5")
    detector = Detector(config)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(
        path, Checkpoint(model=detector.state_dict(), detector=config, data_digest="digest-1")
    )


@pytest.fixture(scope="module")
def frame_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for i in range(3):
        image = cv2.GaussianBlur(rng.integers(0, 256, (60, 80, 3), np.uint8), (5, 5), 1)
        cv2.imwrite(str(folder / f"{i}.png"), image)
    return folder


def test_export_onnx_writes_a_verified_model(checkpoint, frame_dir, tmp_path, capsys):
    out = tmp_path / "models" / "det.onnx"
    code = main(
        [
            "export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out),
            "--input-size", "128x96", "--version", "5.1", "--verify-frames", str(frame_dir),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "random inputs: ok" in printed
    assert "real frames: ok" in printed and "over 3 inputs" in printed
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["alscout.model_version"] == "5.1"
    assert props["alscout.model_name"] == "cli-det"
    assert props["alscout.training_data_digest"] == "digest-1"
    assert props["alscout.input_size"] == '{"height": 96, "width": 128}'
    assert sorted(p.name for p in out.parent.iterdir()) == ["det.onnx"]


def test_export_onnx_without_a_digest_says_what_to_pass(tmp_path, capsys):
    from alscout.trainer.checkpoint import Checkpoint, save_checkpoint
    from alscout.trainer.model import Detector, DetectorConfig

    config = DetectorConfig(width=4)
    bare = save_checkpoint(
        tmp_path / "bare.pt", Checkpoint(model=Detector(config).state_dict(), detector=config)
    )
    code = main(["export", "onnx", "--checkpoint", str(bare), "--out", str(tmp_path / "m.onnx")])
    assert code == 2
    assert "--training-data-digest" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_export_trt_reports_what_is_missing(tmp_path, capsys):
    onnx_path = write_tiny_detector(tmp_path / "det.onnx")
    engine = tmp_path / "det.engine"
    code = main(["export", "trt", "--onnx", str(onnx_path), "--out", str(engine),
                 "--precision", "int8"])  # fmt: skip
    assert code == 2 and "--calib-frames" in capsys.readouterr().err
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        code = main(["export", "trt", "--onnx", str(onnx_path), "--out", str(engine)])
        assert code == 2 and "tensorrt is not installed" in capsys.readouterr().err
        assert not engine.exists()


def test_export_onnx_tolerance_flags(checkpoint, frame_dir, tmp_path, capsys):
    """--atol/--rtol set the verification tolerance; a failure names the values over it
    and writes nothing."""
    out = tmp_path / "det.onnx"
    args = ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out),
            "--input-size", "128x96", "--verify-frames", str(frame_dir)]  # fmt: skip
    assert main([*args, "--atol", "0"]) == 2
    err = capsys.readouterr().err
    assert "verification failed" in err and "values over the tolerance" in err
    assert "worst at [n, k, y, x] = [" in err and "--atol/--rtol" in err
    assert not out.exists()
    assert main([*args, "--atol", "1e-3", "--rtol", "1e-3"]) == 0
    printed = capsys.readouterr().out
    assert "real frames: ok" in printed and "(<= 0.001 + 0.001 * |reference|)" in printed
    assert "(<= 0.0001) over 3 inputs" in printed  # the mean bound moves with --atol
    assert out.is_file()
    assert main([*args, "--atol", "-1"]) == 2
    assert "atol" in capsys.readouterr().err
