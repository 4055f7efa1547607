"""Scores inside the ONNX graph (export/onnx_scores.py): contract, structure, numbers.

The in-graph model is built from the tiny contract model and compared, through ONNX
Runtime, with the same plain model plus the float64 Numba scoring: z to 1e-4 relative,
the heat map to 1e-3 absolute (SPEC §4), on random, synthetic and PETS09 frames.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from scenes import scene

from alscout.errors import ModelError
from alscout.export.onnx import OnnxFromPath, SaveOnnx, check_onnx
from alscout.export.onnx_scores import ScoredOnnxFromOnnx
from alscout.export.verify_scores import (
    SCORES_TOLERANCE,
    compare_scores,
    reference_scores,
    verify_scores_export,
)
from alscout.runtime.backends import open_backend
from alscout.runtime.model_info import SCORING_KEYS, GraphScoring

pytest.importorskip("torch", reason="the score head is traced from torch modules")

SETTINGS = {
    "default": GraphScoring(),
    "entropy-single": GraphScoring(method="entropy", double_evaluation=False),
    "small-windows": GraphScoring(radius=3, region=7, heatmap_stride=8),
}


@pytest.fixture(scope="module")
def scored(tiny_model, tmp_path_factory):
    """name -> path of the tiny model with the scores inside, per :data:`SETTINGS`."""
    folder = tmp_path_factory.mktemp("scored")
    paths = {}
    for name, scoring in SETTINGS.items():
        paths[name] = folder / f"{name}.onnx"
        SaveOnnx(ScoredOnnxFromOnnx(OnnxFromPath(tiny_model), scoring), paths[name])()
    paths["keep-probs"] = folder / "keep.onnx"
    SaveOnnx(ScoredOnnxFromOnnx(OnnxFromPath(tiny_model), GraphScoring(), keep_probs=True),
             paths["keep-probs"])()  # fmt: skip
    return paths


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_outputs_are_exactly_z_and_heatmap_and_probs_only_on_request(scored, tiny_model):
    model = onnx.load(str(scored["default"]))
    assert [i.name for i in model.graph.input] == ["images"]
    assert dims(model.graph.input[0]) == ["N", 3, "H", "W"]
    assert [o.name for o in model.graph.output] == ["z", "heatmap"]
    assert dims(model.graph.output[0]) == ["N"]
    assert dims(model.graph.output[1])[0] == "N"
    kept = onnx.load(str(scored["keep-probs"]))
    assert [o.name for o in kept.graph.output] == ["z", "heatmap", "probs"]
    assert dims(kept.graph.output[2]) == ["N", 5, "H", "W"]
    info = check_onnx(model, source="scored")
    plain = check_onnx(onnx.load(str(tiny_model)), source="plain")
    assert info.scoring == GraphScoring() and plain.scoring is None
    assert info.name == plain.name and info.input_size == plain.input_size
    props = {p.key: p.value for p in model.metadata_props}
    assert {key: props[key] for key in SCORING_KEYS} == {
        "alscout.scores.radius": "9",
        "alscout.scores.region": "30",
        "alscout.scores.method": "divergence",
        "alscout.scores.aggregation": "maxpool",
        "alscout.scores.double_evaluation": "true",
        "alscout.scores.heatmap_stride": "16",
    }


def test_windows_are_separable_pools_not_a_quadratic_filter(scored, tiny_model):
    model = onnx.load(str(scored["default"]))
    pools = [n for n in model.graph.node if n.op_type == "AveragePool"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in pools]
    assert sorted(tuple(a["kernel_shape"]) for a in attrs) == [(1, 19), (1, 19), (19, 1), (19, 1)]
    assert all(a.get("count_include_pad", 0) == 0 for a in attrs)  # clipped windows
    maxpools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    kernels = sorted(
        tuple(onnx.helper.get_attribute_value(a))
        for n in maxpools
        for a in n.attribute
        if a.name == "kernel_shape"
    )
    assert kernels == [(16, 16), (30, 30)]
    assert all(
        onnx.helper.get_attribute_value(a) == 1
        for n in maxpools
        for a in n.attribute
        if a.name == "ceil_mode"
    )
    plain_convs = sum(n.op_type == "Conv" for n in onnx.load(str(tiny_model)).graph.node)
    assert sum(n.op_type == "Conv" for n in model.graph.node) == plain_convs


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_z_equals_the_plain_model_plus_numba_on_random_inputs(scored, tiny_model, name):
    with (
        open_backend(tiny_model, "onnxruntime-cpu") as plain,
        open_backend(scored[name], "onnxruntime-cpu") as graph,
    ):
        assert graph.model_info.scoring == SETTINGS[name]
        report = verify_scores_export(plain, graph, rng=np.random.default_rng(1))
    assert report.passed, report.describe()
    random = report.comparisons[0]
    assert random.inputs == 6 and random.z_rel < 1e-5 and random.heatmap_max_abs < 1e-5


def test_z_equals_the_plain_model_plus_numba_on_synthetic_and_pets_frames(
    scored, tiny_model, pets_video
):
    from alscout.export.frames import read_frames

    synthetic = [scene(seed, 120, 160) for seed in range(6)]
    pets = read_frames(pets_video, limit=10, stride=70)
    with (
        open_backend(tiny_model, "onnxruntime-cpu") as plain,
        open_backend(scored["default"], "onnxruntime-cpu") as graph,
    ):
        report = verify_scores_export(plain, graph, frames=synthetic + pets, batch_size=4)
    assert report.passed, report.describe()
    frames = report.comparisons[1]
    assert frames.inputs == 16 and frames.z_rel < 1e-5 and frames.heatmap_max_abs < 1e-5


def test_probs_kept_are_the_merged_probabilities(scored, tiny_model):
    images = np.random.default_rng(2).standard_normal((2, 3, 50, 70), np.float32)
    with (
        open_backend(tiny_model, "onnxruntime-cpu") as plain,
        open_backend(scored["keep-probs"], "onnxruntime-cpu") as graph,
    ):
        ref = reference_scores(plain, images, GraphScoring())
        out = graph.infer_scores(images)
        assert out.probs is not None
        np.testing.assert_allclose(out.probs, ref.probs, atol=1e-6)
        np.testing.assert_allclose(graph.infer(images), ref.probs, atol=1e-6)


@pytest.mark.parametrize("size", [(5, 7), (16, 16), (31, 47)])
def test_any_frame_size_runs_and_sizes_the_heatmap_by_ceil(scored, tiny_model, size):
    images = np.random.default_rng(3).standard_normal((3, 3, *size), np.float32)
    with (
        open_backend(tiny_model, "onnxruntime-cpu") as plain,
        open_backend(scored["default"], "onnxruntime-cpu") as graph,
    ):
        out = graph.infer_scores(images)
        ref = reference_scores(plain, images, GraphScoring())
    assert out.heatmap.shape == (3, math.ceil(size[0] / 16), math.ceil(size[1] / 16))
    np.testing.assert_allclose(out.z, ref.z, rtol=1e-4)


def test_a_model_whose_metadata_lies_fails_verification(tiny_model, tmp_path):
    """Radius 5 in the graph, radius 9 in the metadata: the comparison must catch it."""
    model = ScoredOnnxFromOnnx(OnnxFromPath(tiny_model), GraphScoring(radius=5))()
    props = {p.key: p.value for p in model.metadata_props} | {"alscout.scores.radius": "9"}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    path = tmp_path / "lying.onnx"
    onnx.save(model, str(path))
    images = [np.random.default_rng(4).standard_normal((2, 3, 96, 128), np.float32)]
    with (
        open_backend(tiny_model, "onnxruntime-cpu") as plain,
        open_backend(path, "onnxruntime-cpu") as graph,
    ):
        comparison = compare_scores("random", plain, graph, images, SCORES_TOLERANCE)
    assert not comparison.passed and comparison.z_over > 0
    assert "FAILED" in comparison.describe() and "worst frame" in comparison.describe()


def test_only_plain_models_take_scores(scored):
    with pytest.raises(ModelError, match="already has scores"):
        ScoredOnnxFromOnnx(OnnxFromPath(scored["default"]), GraphScoring())()


def test_check_refuses_scored_outputs_without_the_metadata(scored, tmp_path):
    model = onnx.load(str(scored["default"]))
    props = {p.key: p.value for p in model.metadata_props if not p.key.startswith("alscout.scores")}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    with pytest.raises(ModelError, match=r"outputs are \['z', 'heatmap'\], need \['probs'\]"):
        check_onnx(model, source="stripped")
    partial = props | {"alscout.scores.radius": "9"}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, partial)
    with pytest.raises(ModelError, match=r"lacks alscout\.scores\.region"):
        check_onnx(model, source="partial")
