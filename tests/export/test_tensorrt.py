"""TensorRT engine building. Configuration checks run everywhere; building and running an
engine needs tensorrt, cuda-python and an NVIDIA GPU and skips with a reason elsewhere."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from shared_inputs import PETS09_VIDEO, load_asset

from alscout.errors import BackendUnavailableError, ConfigError
from alscout.export.calibration import CalibrationBatches
from alscout.export.tensorrt import EngineFromOnnx, SaveEngine, engine_sidecar
from alscout.runtime.backends.profiles import default_profiles

PROFILES = default_profiles((96, 128), max_batch=16, batch_sizes=(16,))


def test_builder_options_are_checked_before_any_work(tiny_model):
    with pytest.raises(ConfigError, match="precision"):
        EngineFromOnnx(tiny_model, precision="fp8", profiles=PROFILES)
    with pytest.raises(ConfigError, match="calibration frames"):
        EngineFromOnnx(tiny_model, precision="int8", profiles=PROFILES)
    with pytest.raises(ConfigError, match="at least one"):
        EngineFromOnnx(tiny_model, profiles=())
    with pytest.raises(ConfigError, match="workspace"):
        EngineFromOnnx(tiny_model, profiles=PROFILES, workspace_gib=0)


def test_tensorrt_is_imported_only_when_an_engine_is_built(tiny_model, tmp_path):
    def never_called():
        raise AssertionError("the ONNX loader ran before tensorrt was available")

    loader = SaveEngine(EngineFromOnnx(never_called, profiles=PROFILES), tmp_path / "m.engine", {})
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
            loader()
        assert not (tmp_path / "m.engine").exists()
        return
    pytest.skip("tensorrt is installed here; the GPU tests below cover building")


# --- the build, cache, verify and CLI flow, on the fake tensorrt/cudart of tests/assets ---


@pytest.fixture
def fake_trt(monkeypatch):
    return load_asset("fake_tensorrt").install(monkeypatch)


def test_fp16_engine_is_built_cached_and_verified(fake_trt, tiny_model, tmp_path):
    from alscout.export.cache import EngineCache
    from alscout.export.tensorrt import build_engine
    from alscout.export.verify import ENGINE_TOLERANCES, verify_export
    from alscout.runtime.backends import open_backend

    cache = EngineCache(tmp_path / "cache")
    out = tmp_path / "tiny.engine"
    path, hit = build_engine(tiny_model, out, precision="fp16", profiles=PROFILES, cache=cache)
    assert (path, hit) == (out, False)
    sidecar = json.loads(out.with_name("tiny.engine.json").read_text())
    assert sidecar["gpu"] == {"name": "Fake GPU 9000", "compute_capability": "9.0"}
    assert sidecar["precision"] == "fp16" and sidecar["tensorrt_version"] == "10.99.0-fake"
    assert len(sidecar["profiles"]) == 2 and sidecar["cache_key"]["precision"] == "fp16"
    assert build_engine(tiny_model, out, precision="fp16", profiles=PROFILES, cache=cache)[1]
    assert not build_engine(tiny_model, out, precision="fp32", profiles=PROFILES, cache=cache)[1]
    with open_backend(tiny_model) as ort, open_backend(out, "tensorrt") as engine:
        report = verify_export(ort, engine, ENGINE_TOLERANCES["fp32"], frames=frames(24))
    assert report.passed, report.describe()
    assert report.rankings[0].top == 20
    assert fake_trt.live_allocations == {}


def test_int8_build_feeds_the_calibrator_every_batch(fake_trt, tiny_model, tmp_path):
    from alscout.export.cache import EngineCache
    from alscout.export.tensorrt import build_engine
    from alscout.runtime.backends import open_backend

    folder = tmp_path / "calib"
    folder.mkdir()
    for i, frame in enumerate(frames(10)):
        cv2.imwrite(str(folder / f"{i:02d}.png"), frame[:, :, ::-1])
    info = open_backend(tiny_model).model_info
    calibration = CalibrationBatches(folder, info, batch_size=4, limit=10)
    cache = EngineCache(tmp_path / "cache")
    fed = []
    original = CalibrationBatches.__iter__

    def counting(self):
        for batch in original(self):
            fed.append(batch.shape)
            yield batch

    CalibrationBatches.__iter__ = counting
    try:
        out, _ = build_engine(
            tiny_model, tmp_path / "int8.engine", precision="int8", profiles=PROFILES,
            calibration=calibration, cache=cache,
        )  # fmt: skip
    finally:
        CalibrationBatches.__iter__ = original
    assert fed == [(4, 3, 96, 128)] * 2
    assert list(cache.root.glob("*.calib"))  # the calibration table is kept for rebuilds
    assert json.loads(out.with_name("int8.engine.json").read_text())["precision"] == "int8"
    assert fake_trt.live_allocations == {}  # the calibrator freed its device buffer


def test_unparsable_onnx_is_a_model_error(fake_trt, tmp_path):
    from alscout.errors import ModelError

    with pytest.raises(ModelError, match="cannot parse"):
        EngineFromOnnx(b"not onnx", profiles=PROFILES)()


def test_cli_builds_and_on_failed_verification_leaves_nothing(
    fake_trt, tiny_model, tmp_path, capsys, monkeypatch
):
    from alscout.apps.cli import main
    from alscout.export import verify

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames(4)):
        cv2.imwrite(str(folder / f"{i}.png"), frame[:, :, ::-1])
    out = tmp_path / "m.engine"
    args = ["export", "trt", "--onnx", str(tiny_model), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--verify-frames", str(folder)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (built)" in printed and "top-4 frames by image score: ok" in printed
    assert main(args) == 0 and "(from the cache)" in capsys.readouterr().out
    monkeypatch.setitem(verify.ENGINE_TOLERANCES, "fp16", verify.Tolerance(0.0, 0.0))
    assert main(args) == 2
    assert "verification failed" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("m.engine.json").exists()
    assert not list((tmp_path / "cache").glob("*.engine"))


# --- on a GPU ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu():
    pytest.importorskip("tensorrt", reason="needs tensorrt (pip install 'alscout[gpu]')")
    from alscout.export.cache import current_gpu

    try:
        return current_gpu(0)
    except BackendUnavailableError as error:
        pytest.skip(f"no usable NVIDIA GPU: {error}")


@pytest.fixture(scope="module")
def real_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from alscout.export.onnx import OnnxFromTorch, SaveOnnx, info_from_detector
    from alscout.trainer.model import Detector, DetectorConfig

    torch.manual_seed(0)
    detector = Detector(DetectorConfig(width=8)).eval()
    info = info_from_detector(detector, training_data_digest="t", input_size=(96, 128))
    path = tmp_path_factory.mktemp("onnx") / "det.onnx"
    SaveOnnx(OnnxFromTorch(detector, info), path)()
    return path


def frames(n: int) -> list[np.ndarray]:
    if PETS09_VIDEO.is_file():
        from alscout.export.frames import read_frames

        return read_frames(PETS09_VIDEO, limit=n, stride=795 // n)
    rng = np.random.default_rng(0)
    return [
        cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), np.uint8), (5, 5), 2) for _ in range(n)
    ]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_engine_matches_onnx_runtime_and_ranks_frames_alike(gpu, real_onnx, tmp_path, precision):
    from alscout.export.cache import EngineCache
    from alscout.export.tensorrt import build_engine
    from alscout.export.verify import ENGINE_TOLERANCES, verify_export
    from alscout.runtime.backends import open_backend

    cache = EngineCache(tmp_path / "cache")
    out = tmp_path / f"det-{precision}.engine"
    path, hit = build_engine(real_onnx, out, precision=precision, profiles=PROFILES, cache=cache)
    assert path == out and not hit
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["gpu"]["name"] == gpu.name and sidecar["precision"] == precision
    _, hit = build_engine(real_onnx, out, precision=precision, profiles=PROFILES, cache=cache)
    assert hit
    with open_backend(real_onnx, "onnxruntime-cpu") as ort, open_backend(out, "tensorrt") as trt:
        assert trt.model_info.source_sha256 == ort.model_info.sha256
        report = verify_export(ort, trt, ENGINE_TOLERANCES[precision], frames=frames(40), top=20)
        assert report.passed, report.describe()
        # Batch 16 runs on the exact profile, batch 3 on the general one.
        for n in (16, 3):
            x = np.random.default_rng(n).standard_normal((n, 3, 96, 128), dtype=np.float32)
            assert trt.infer(x).shape == (n, 5, 96, 128)
        assert trt.shape_problem((17, 3, 96, 128)) is not None


@pytest.mark.gpu
@pytest.mark.slow
def test_int8_engine_with_calibration(gpu, real_onnx, tmp_path):
    from alscout.export.tensorrt import build_engine
    from alscout.export.verify import ENGINE_TOLERANCES, verify_export
    from alscout.runtime.backends import open_backend

    folder = tmp_path / "calib"
    folder.mkdir()
    for i, frame in enumerate(frames(32)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame[:, :, ::-1])
    info = open_backend(real_onnx, "onnxruntime-cpu").model_info
    calibration = CalibrationBatches(folder, info, batch_size=8, limit=32)
    out, _ = build_engine(
        real_onnx,
        tmp_path / "int8.engine",
        precision="int8",
        profiles=PROFILES,
        calibration=calibration,
    )
    with open_backend(real_onnx, "onnxruntime-cpu") as ort, open_backend(out, "tensorrt") as trt:
        report = verify_export(ort, trt, ENGINE_TOLERANCES["int8"], frames=frames(40), top=20)
    assert report.passed, report.describe()


def test_sidecar_holds_what_the_runtime_reads(tiny_model):
    from alscout.export.cache import EngineKey, GpuIdentity
    from alscout.runtime.backends import open_backend

    info = open_backend(tiny_model).model_info
    key = EngineKey("f" * 64, "10.9", GpuIdentity("G", "9.0"), "fp16", PROFILES)
    sidecar = engine_sidecar(tiny_model, key, info.to_metadata())
    assert sidecar["metadata"] == info.to_metadata()
    assert sidecar["onnx_sha256"] == "f" * 64 and sidecar["tensorrt_version"] == "10.9"
    assert sidecar["profiles"][0] == PROFILES[0].to_json()
    json.dumps(sidecar)
