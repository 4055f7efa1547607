from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from alscout.errors import ModelError
from alscout.export.loaders import Loader, resolve
from alscout.export.onnx import (
    OnnxFromPath,
    OnnxFromTorch,
    SaveOnnx,
    check_onnx,
    info_from_detector,
)
from alscout.export.verify import ONNX_TOLERANCE, verify_export
from alscout.runtime.backends import open_backend
from alscout.runtime.model_info import ModelInfo

torch = pytest.importorskip("torch", reason="export needs torch (the train extra)")
from alscout.trainer.model import Detector, DetectorConfig  # noqa: E402


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(1)
    model = Detector(DetectorConfig(width=4, name="ped", version="7"))
    # Non-trivial normalisation statistics, so a wrong export of them would show.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory):
    info = info_from_detector(detector, training_data_digest="abc123", input_size=(96, 128))
    path = tmp_path_factory.mktemp("onnx") / "ped.onnx"
    model = SaveOnnx(OnnxFromTorch(detector, info), path)()
    return info, path, model


def test_export_follows_the_contract(exported):
    info, path, model = exported
    assert path.is_file()
    checked = check_onnx(onnx.load(str(path)), source=path)
    assert checked == info
    props = {p.key: p.value for p in model.metadata_props}
    assert props["alscout.model_name"] == "ped" and props["alscout.model_version"] == "7"
    assert props["alscout.training_data_digest"] == "abc123"
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[1].dim_value == 5
    assert [d.dim_param for d in out_dims] == ["N", "", "H", "W"]
    in_dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in in_dims] == ["N", 3, "H", "W"]


def test_info_from_detector_scales_default_boxes_to_the_input(detector):
    info = info_from_detector(detector, training_data_digest="d", input_size=(240, 320))
    assert info.default_boxes[0] == (135.0, 80.0)  # 270 x 160 at 480 x 640, halved
    assert info.input_size == (240, 320)
    assert info.normalisation.mean == detector.config.mean
    assert info.normalisation.scale == pytest.approx(1 / 255)
    full = info_from_detector(detector, training_data_digest="d")
    assert full.input_size == (480, 640) and full.default_boxes[4] == (55.0, 31.0)


def test_onnx_runtime_equals_pytorch_on_random_inputs(detector, exported):
    from alscout.runtime.backends.torch_reference import TorchBackend

    info, path, _ = exported
    with TorchBackend(detector, info) as ref, open_backend(path, "onnxruntime-cpu") as ort:
        report = verify_export(ref, ort, ONNX_TOLERANCE, rng=np.random.default_rng(5))
    assert report.passed, report.describe()
    random = report.comparisons[0]
    assert random.inputs == 6 and random.max_abs <= 1e-4


def test_onnx_runtime_equals_pytorch_on_real_frames(pets_video, detector, exported):
    from alscout.export.frames import read_frames
    from alscout.runtime.backends.torch_reference import TorchBackend

    info, path, _ = exported
    frames = read_frames(pets_video, limit=8, stride=90)
    with TorchBackend(detector, info) as ref, open_backend(path, "onnxruntime-cpu") as ort:
        report = verify_export(ref, ort, ONNX_TOLERANCE, frames=frames, top=4)
    assert report.passed, report.describe()
    assert [c.name for c in report.comparisons] == ["random inputs", "real frames"]
    assert report.comparisons[1].inputs == 8
    assert report.rankings[0].top == 4


def test_export_restores_training_mode(detector, exported):
    info = exported[0]
    detector.train()
    OnnxFromTorch(detector, info)()
    assert detector.training
    detector.eval()


def test_loaders_are_lazy_and_compose(detector, exported, tmp_path):
    info = exported[0]
    calls = []

    def build():
        calls.append(1)
        return detector

    save = SaveOnnx(OnnxFromTorch(build, info), tmp_path / "lazy.onnx")
    assert calls == [] and not (tmp_path / "lazy.onnx").exists()
    model = save()
    assert calls == [1] and (tmp_path / "lazy.onnx").is_file()
    assert isinstance(OnnxFromPath(tmp_path / "lazy.onnx")(), onnx.ModelProto)
    assert resolve(model) is model and resolve(detector) is detector
    assert isinstance(save, Loader)


def edited(exported, tmp_path, edit) -> Path:
    model = onnx.load(str(exported[1]))
    edit(model)
    path = tmp_path / "edited.onnx"
    onnx.save(model, str(path))
    return path


def drop_metadata(model):
    del model.metadata_props[:]


def fix_batch(model):
    for value in (model.graph.input[0], model.graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1


def wrong_k(model):
    props = {p.key: p.value for p in model.metadata_props}
    props["alscout.num_heads"] = "4"
    props["alscout.default_boxes"] = "[[1, 1], [1, 1], [1, 1], [1, 1]]"
    props["alscout.head_strides"] = "[32, 16, 8, 4]"
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)


def broken_graph(model):
    model.graph.node[0].input[0] = "nowhere"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (drop_metadata, "metadata lacks"),
        (fix_batch, r"axes \[0\] are fixed"),
        (wrong_k, "has 5 channels, need 4"),
        (broken_graph, "ONNX check failed"),
    ],
)
def test_check_refuses_models_that_break_the_contract(exported, tmp_path, edit, message):
    with pytest.raises(ModelError, match=message):
        OnnxFromPath(edited(exported, tmp_path, edit))()


def test_unreadable_files_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        OnnxFromPath(tmp_path / "none.onnx")()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelError):
        OnnxFromPath(junk)()


def test_save_is_atomic_and_leaves_no_partial_file(exported, tmp_path):
    target = tmp_path / "sub" / "m.onnx"
    SaveOnnx(exported[2], target)()
    assert target.read_bytes() == exported[2].SerializeToString()
    assert [p.name for p in target.parent.iterdir()] == ["m.onnx"]


def test_info_round_trips_through_the_file(exported):
    info, path, _ = exported
    backend = open_backend(path, "onnxruntime-cpu")
    assert backend.model_info == ModelInfo.from_metadata(
        info.to_metadata(), source=path, sha256=backend.model_info.sha256
    )
    assert backend.model_info.head_strides == (64, 32, 16, 8, 4)  # the decoder refines with them


# --- the learned difficulty head ------------------------------------------------------


@pytest.fixture(scope="module")
def head_detector():
    from alscout.trainer.model import export_module

    torch.manual_seed(2)
    model = Detector(DetectorConfig(width=4, difficulty_head=True))
    with torch.no_grad():  # a head far from its initial weights, so a wrong export shows
        for parameter in model.difficulty.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model, export_module(model)


def test_plain_models_carry_no_difficulty(exported):
    info, _, model = exported
    assert not info.difficulty
    assert "alscout.difficulty" not in {p.key for p in model.metadata_props}
    assert [o.name for o in model.graph.output] == ["probs"]


def test_the_difficulty_head_exports_a_second_output_onnx_runtime_matches(head_detector, tmp_path):
    from alscout.runtime.backends.torch_reference import TorchBackend

    detector, module = head_detector
    info = info_from_detector(detector, training_data_digest="d", input_size=(64, 96))
    assert info.difficulty
    path = tmp_path / "head.onnx"
    model = SaveOnnx(OnnxFromTorch(module, info), path)()
    assert [o.name for o in model.graph.output] == ["probs", "difficulty"]
    dims = model.graph.output[1].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1, "H", "W"]
    assert check_onnx(onnx.load(str(path)), source=path).difficulty
    with TorchBackend(module, info) as ref, open_backend(path, "onnxruntime-cpu") as ort:
        report = verify_export(ref, ort, ONNX_TOLERANCE, rng=np.random.default_rng(3))
        x = np.random.default_rng(4).standard_normal((2, 3, 50, 70), dtype=np.float32)
        ref_probs, ref_difficulty = ref.infer_with_difficulty(x)
        ort_probs, ort_difficulty = ort.infer_with_difficulty(x)
    assert report.passed, report.describe()
    names = [c.name for c in report.comparisons]
    assert names == ["random inputs", "random inputs, difficulty"]
    assert report.comparisons[1].max_abs <= 1e-4 and report.comparisons[1].inputs == 6
    np.testing.assert_allclose(ort_difficulty, ref_difficulty, atol=1e-4)
    np.testing.assert_allclose(ort_probs, ref_probs, atol=1e-4)
    assert ref_difficulty.std() > 1e-3  # not a constant map: the comparison bites


def test_a_module_without_the_difficulty_output_is_refused(head_detector):
    detector, _ = head_detector
    info = info_from_detector(detector, training_data_digest="d", input_size=(64, 96))
    with pytest.raises(ModelError, match="export_module"):  # probs only, head promised
        OnnxFromTorch(detector, info)()


@pytest.fixture(scope="module")
def head_checkpoint(head_detector, tmp_path_factory):
    from alscout.trainer.checkpoint import Checkpoint, save_checkpoint

    detector, _ = head_detector
    return save_checkpoint(
        tmp_path_factory.mktemp("head") / "last.pt",
        Checkpoint(model=detector.state_dict(), detector=detector.config, data_digest="d"),
    )


def test_export_checkpoint_keeps_the_head_and_verifies_it(head_checkpoint, tmp_path):
    from alscout.trainer.checkpoint_export import export_checkpoint

    checkpoint = head_checkpoint
    report = export_checkpoint(checkpoint, tmp_path / "m.onnx", input_size=(64, 96))
    assert report is not None and report.passed
    assert "random inputs, difficulty" in [c.name for c in report.comparisons]
    with open_backend(tmp_path / "m.onnx", "onnxruntime-cpu") as backend:
        assert backend.model_info.difficulty
        assert backend.output_names == ("probs", "difficulty")


def test_export_with_scores_in_the_graph_leaves_the_head_out(head_checkpoint, tmp_path):
    from alscout.runtime.model_info import GraphScoring
    from alscout.trainer.checkpoint_export import export_checkpoint

    checkpoint = head_checkpoint
    scoring = GraphScoring(
        radius=2, region=8, method="divergence", aggregation="maxpool",
        double_evaluation=True, heatmap_stride=16,
    )  # fmt: skip
    export_checkpoint(
        checkpoint, tmp_path / "s.onnx", input_size=(64, 96), scores=scoring, verify=False
    )
    scored = onnx.load(str(tmp_path / "s.onnx"))
    assert [o.name for o in scored.graph.output] == ["z", "heatmap"]
    assert "alscout.difficulty" not in {p.key for p in scored.metadata_props}
