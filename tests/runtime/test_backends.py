"""One contract suite every backend plugs into, plus load-time model checks and the registry.

The ONNX Runtime CPU backend runs everywhere; the PyTorch reference runs where torch
is installed; CUDA, TensorRT-provider and native TensorRT cases skip with a reason on
machines without them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from shared_inputs import load_asset

from alscout.errors import BackendUnavailableError, ConfigError, InvalidInputError, ModelError
from alscout.runtime.backends import OnnxRuntimeBackend, OrtOptions, open_backend
from alscout.runtime.backends.profiles import ShapeProfile, default_profiles
from alscout.runtime.backends.tensorrt import sidecar_path
from alscout.runtime.model_info import ModelInfo


def gpu_backend_or_skip(name: str, path: Path):
    try:
        return open_backend(path, name)
    except BackendUnavailableError as error:
        pytest.skip(f"{name} is not available here: {error}")


@pytest.fixture(scope="module")
def detector_files(tmp_path_factory):
    """A tiny real detector (width 4) and its ONNX export, shared by the suite."""
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
    from alscout.export.onnx import OnnxFromTorch, SaveOnnx, info_from_detector
    from alscout.trainer.model import Detector, DetectorConfig

    torch.manual_seed(0)
    detector = Detector(DetectorConfig(width=4)).eval()
    info = info_from_detector(detector, training_data_digest="test", input_size=(96, 128))
    path = tmp_path_factory.mktemp("models") / "detector.onnx"
    SaveOnnx(OnnxFromTorch(detector, info), path)()
    return detector, info, path


def native_tensorrt_or_skip(files):
    pytest.importorskip("tensorrt", reason="native TensorRT needs the tensorrt package")
    from alscout.export.tensorrt import build_engine

    engine = files[2].with_suffix(".engine")
    if not engine.exists():
        try:
            build_engine(files[2], engine, precision="fp16", profiles=default_profiles((96, 128)))
        except BackendUnavailableError as error:
            pytest.skip(f"tensorrt cannot build here: {error}")
    return open_backend(engine, "tensorrt")


# name -> (factory(detector_files) -> backend, absolute tolerance against PyTorch)
BACKENDS = {
    "onnxruntime-cpu": (lambda files: open_backend(files[2], "onnxruntime-cpu"), 1e-4),
    "onnxruntime-cuda": (lambda files: gpu_backend_or_skip("onnxruntime-cuda", files[2]), 1e-3),
    "onnxruntime-tensorrt": (
        lambda files: gpu_backend_or_skip("onnxruntime-tensorrt", files[2]),
        2e-2,
    ),
    "tensorrt": (native_tensorrt_or_skip, 2e-2),
    "torch": (None, 0.0),
}


@pytest.fixture(params=list(BACKENDS))
def backend_case(request, detector_files):
    factory, tolerance = BACKENDS[request.param]
    if request.param == "torch":
        from alscout.runtime.backends.torch_reference import TorchBackend

        backend = TorchBackend(detector_files[0], detector_files[1])
    else:
        backend = factory(detector_files)
    return backend, tolerance


@pytest.mark.parametrize("shape", [(1, 3, 96, 128), (3, 3, 67, 91), (2, 3, 33, 40)])
def test_contract_output_matches_pytorch(backend_case, detector_files, shape):
    import torch

    backend, tolerance = backend_case
    images = np.random.default_rng(sum(shape)).standard_normal(shape, dtype=np.float32)
    with backend:
        probs = backend.infer(images)
    assert probs.shape == (shape[0], 5, *shape[2:])
    assert probs.dtype == np.float32
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    with torch.inference_mode():
        expected = detector_files[0](torch.from_numpy(images)).numpy()
    assert np.abs(probs - expected).max() <= tolerance


def test_contract_lifecycle_and_input_checks(backend_case):
    backend, _ = backend_case
    good = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(InvalidInputError, match="not active"):
        backend.infer(good)
    with backend as active:
        assert active is backend and backend.is_active
        for bad, message in [
            (good.astype(np.float64), "float32"),
            (good[0], r"\[N, 3, H, W\]"),
            (np.zeros((1, 4, 64, 64), np.float32), r"\[N, 3, H, W\]"),
            (np.zeros((0, 3, 64, 64), np.float32), "empty"),
            (np.full((1, 3, 64, 64), np.nan, np.float32), "NaN"),
            ([[1.0]], "numpy array"),
        ]:
            with pytest.raises(InvalidInputError, match=message):
                backend.infer(bad)
        # A non-contiguous view is accepted and gives the same result as a copy.
        wide = np.random.default_rng(0).standard_normal((1, 3, 64, 128), dtype=np.float32)
        np.testing.assert_array_equal(
            backend.infer(wide[..., ::2]), backend.infer(np.ascontiguousarray(wide[..., ::2]))
        )
    assert not backend.is_active
    backend.activate()
    backend.activate()  # idempotent
    backend.deactivate()
    backend.deactivate()
    assert backend.input_meta.name == "images" and backend.output_meta.name == "probs"
    assert backend.output_meta.shape[1] == backend.model_info.num_heads == 5


# --- load-time model checks (ONNX Runtime) -----------------------------------------


def tiny_variant(tiny_model: Path, tmp_path: Path, edit) -> Path:
    model = onnx.load(str(tiny_model))
    edit(model)
    path = tmp_path / f"variant{len(list(tmp_path.iterdir()))}.onnx"
    onnx.save(model, str(path))
    return path


def set_meta(model, key, value):
    props = {p.key: p.value for p in model.metadata_props}
    if value is None:
        props.pop(key)
    else:
        props[key] = value
    del model.metadata_props[:]
    helper.set_model_props(model, props)


def rename_input(model):
    model.graph.input[0].name = "input"
    for node in model.graph.node:
        node.input[:] = ["input" if i == "images" else i for i in node.input]


def rename_output(model):
    model.graph.output[0].name = "scores"
    model.graph.node[-1].output[0] = "scores"


def sigmoid_to_identity(model):
    model.graph.node[-1].op_type = "Identity"


def dynamic_k(model):
    dim = model.graph.output[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_param = "K"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (rename_input, r"inputs are \['input'\]"),
        (rename_output, r"outputs are \['scores'\]"),
        (lambda m: set_meta(m, "alscout.model_version", None), "lacks alscout.model_version"),
        (lambda m: set_meta(m, "alscout.num_heads", "4"), "K=4 heads but 5 default boxes"),
        (
            lambda m: (
                set_meta(m, "alscout.num_heads", "4"),
                set_meta(m, "alscout.default_boxes", json.dumps([[1, 1]] * 4)),
            ),
            "K=5 channels but metadata says K=4",
        ),
    ],
)
def test_mismatched_models_fail_at_load(tiny_model, tmp_path, edit, message):
    path = tiny_variant(tiny_model, tmp_path, edit)
    with pytest.raises(ModelError, match=message) as caught:
        open_backend(path, "onnxruntime-cpu")
    assert str(path) in str(caught.value)


def test_problems_only_a_run_shows_fail_at_activation_not_first_frame(tiny_model, tmp_path):
    def wrong_k_hidden(model):
        dynamic_k(model)
        set_meta(model, "alscout.num_heads", "4")
        set_meta(model, "alscout.default_boxes", json.dumps([[1, 1]] * 4))

    backend = open_backend(tiny_variant(tiny_model, tmp_path, wrong_k_hidden), "onnxruntime-cpu")
    with pytest.raises(ModelError, match="metadata says K=4"):
        backend.activate()
    assert not backend.is_active
    logits = open_backend(
        tiny_variant(tiny_model, tmp_path, sigmoid_to_identity), "onnxruntime-cpu"
    )
    with pytest.raises(ModelError, match=r"not probabilities in \[0, 1\]"):
        logits.activate()


def test_corrupt_and_missing_files_are_model_errors(tiny_model, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_model.read_bytes()[:300])
    with pytest.raises(ModelError, match="cannot load"):
        open_backend(corrupt, "onnxruntime-cpu")
    with pytest.raises(ModelError, match="not found"):
        open_backend(tmp_path / "absent.onnx")


# --- registry --------------------------------------------------------------------------


def test_auto_picks_the_best_available_and_says_why(tiny_model, caplog):
    import onnxruntime

    caplog.set_level(logging.INFO, logger="alscout.runtime.backends.registry")
    backend = open_backend(tiny_model)
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        assert backend.name == "onnxruntime-cpu"
        assert "skipped name=onnxruntime-cuda" in caplog.text
    assert f"backend chosen name={backend.name}" in caplog.text
    assert backend.model_info.name == "tiny-detector"
    assert len(backend.model_info.sha256) == 64


def test_registry_refuses_unknown_names_formats_and_mismatches(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="unknown backend"):
        open_backend(tiny_model, "openvino")
    with pytest.raises(ConfigError, match="cannot run a onnx file"):
        open_backend(tiny_model, "tensorrt")
    with pytest.raises(ModelError, match=r"unknown model format '\.tflite'"):
        open_backend(tmp_path / "m.tflite")


def test_unavailable_gpu_providers_raise_instead_of_falling_back(tiny_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the fallback case cannot be shown here")
    with pytest.raises(BackendUnavailableError, match="no CUDAExecutionProvider"):
        open_backend(tiny_model, "onnxruntime-cuda")


def test_engine_without_sidecar_or_metadata_fails_at_load(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(ModelError, match="no metadata sidecar"):
        open_backend(engine, "tensorrt")
    sidecar_path(engine).write_text(json.dumps({"metadata": {"alscout.contract": "1"}}))
    with pytest.raises(ModelError, match=r"lacks alscout\.model_name"):
        open_backend(engine)


def test_engine_with_metadata_needs_tensorrt_or_is_refused_by_it(tiny_model, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    info = open_backend(tiny_model).model_info
    sidecar_path(engine).write_text(json.dumps({"metadata": info.to_metadata()}))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
            open_backend(engine)
        return
    with pytest.raises((ModelError, BackendUnavailableError)):
        open_backend(engine)


def test_ort_options_are_validated(tiny_model):
    with pytest.raises(ConfigError, match="graph_optimization"):
        OrtOptions(graph_optimization="max")
    with pytest.raises(ConfigError):
        OrtOptions(intra_op_threads=-1)
    backend = OnnxRuntimeBackend(tiny_model, options=OrtOptions(intra_op_threads=1))
    with backend:
        assert backend.infer(np.zeros((1, 3, 40, 40), np.float32)).shape == (1, 5, 40, 40)


def test_profiles_cover_and_validate():
    general = default_profiles((480, 640), max_batch=16, batch_sizes=(16,))
    assert general[0] == ShapeProfile((16, 480, 640), (16, 480, 640), (16, 480, 640))
    assert general[-1].covers((1, 3, 64, 64)) and general[-1].covers((16, 3, 960, 1280))
    assert not general[-1].covers((17, 3, 480, 640))
    assert not general[0].covers((8, 3, 480, 640))
    assert ShapeProfile.from_json(general[-1].to_json()) == general[-1]
    with pytest.raises(ConfigError, match="min <= opt <= max for H"):
        ShapeProfile((1, 500, 64), (1, 480, 64), (1, 960, 64))


def test_model_info_is_the_same_through_every_reader(detector_files):
    from alscout.runtime.backends.torch_reference import TorchBackend

    ort = open_backend(detector_files[2], "onnxruntime-cpu")
    ref = TorchBackend(detector_files[0], detector_files[1])
    strip = ModelInfo.with_file
    assert strip(ort.model_info, "", "x") == strip(ref.model_info, "", "x")


# --- native TensorRT backend logic, on the fake tensorrt/cudart of tests/assets ------------


@pytest.fixture
def fake_engine(tiny_model, tmp_path, monkeypatch):
    fake = load_asset("fake_tensorrt")
    cudart = fake.install(monkeypatch)
    profiles = [
        [(4, 3, 96, 128)] * 3,
        [(1, 3, 32, 32), (8, 3, 96, 128), (8, 3, 192, 256)],
    ]
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(fake.engine_bytes(tiny_model.read_bytes(), profiles, precision="fp32"))
    info = open_backend(tiny_model).model_info
    sidecar = {"metadata": info.to_metadata(), "onnx_sha256": info.sha256,
               "tensorrt_version": fake.VERSION}  # fmt: skip
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine, cudart, fake


def test_tensorrt_backend_picks_profiles_and_manages_buffers(tiny_model, fake_engine):
    engine, cudart, _ = fake_engine
    backend = open_backend(engine)
    assert backend.name == "tensorrt"
    assert backend.model_info.file_format == "tensorrt"
    assert backend.model_info.source_sha256 == open_backend(tiny_model).model_info.sha256
    assert backend.profiles[0] == ShapeProfile((4, 96, 128), (4, 96, 128), (4, 96, 128))
    assert backend.probe_shape() == (4, 3, 96, 128)
    rng = np.random.default_rng(0)
    with backend, open_backend(tiny_model) as reference:
        for shape, profile in [((4, 3, 96, 128), 0), ((3, 3, 50, 60), 1), ((8, 3, 192, 256), 1)]:
            images = rng.standard_normal(shape, dtype=np.float32)
            np.testing.assert_allclose(backend.infer(images), reference.infer(images), atol=1e-6)
            assert backend._context.profiles_used[-1] == profile
        assert len(cudart.live_allocations) == 2  # one input, one output buffer, grown
        with pytest.raises(InvalidInputError, match="no optimization profile covers"):
            backend.infer(np.zeros((9, 3, 96, 128), np.float32))
    assert cudart.live_allocations == {}


def test_tensorrt_backend_refuses_bad_engines_at_load(tiny_model, fake_engine):
    engine, _, fake = fake_engine
    sidecar = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**sidecar, "tensorrt_version": "8.6.1"}))
    with pytest.raises(ModelError, match=r"built with TensorRT 8\.6\.1"):
        open_backend(engine)
    sidecar_path(engine).write_text(json.dumps(sidecar))
    engine.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="could not deserialize"):
        open_backend(engine)
    engine.write_bytes(fake.engine_bytes(tiny_model.read_bytes(), [[(1, 3, 32, 32)] * 3]))
    sidecar["metadata"]["alscout.num_heads"] = "4"
    sidecar["metadata"]["alscout.default_boxes"] = json.dumps([[1, 1]] * 4)
    sidecar_path(engine).write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match="K=5 channels but metadata says K=4"):
        open_backend(engine)


def test_difficulty_outputs_must_match_the_metadata(tiny_model, tmp_path):
    """A ``difficulty`` output needs the ``alscout.difficulty`` key, and the key the output."""
    from dataclasses import replace

    tiny = load_asset("tiny_detector")
    with_head = tiny.write(tmp_path / "head.onnx", replace(tiny.INFO, difficulty=True))
    with open_backend(with_head, "onnxruntime-cpu") as backend:
        assert backend.output_names == ("probs", "difficulty") and backend.model_info.difficulty
        x = np.random.default_rng(0).standard_normal((2, 3, 40, 56), dtype=np.float32)
        probs, difficulty = backend.infer_with_difficulty(x)
        assert probs.shape == (2, 5, 40, 56) and difficulty.shape == (2, 1, 40, 56)
        np.testing.assert_array_equal(backend.infer(x), probs)
        assert difficulty.min() >= 0.0 and difficulty.max() <= 1.0
    unflagged = tiny_variant(with_head, tmp_path, lambda m: set_meta(m, "alscout.difficulty", None))
    with pytest.raises(ModelError, match=r"outputs are \['probs', 'difficulty'\]"):
        open_backend(unflagged, "onnxruntime-cpu")
    flagged = tiny_variant(
        tiny_model, tmp_path, lambda m: set_meta(m, "alscout.difficulty", "true")
    )
    with pytest.raises(ModelError, match="difficulty head"):
        open_backend(flagged, "onnxruntime-cpu")
