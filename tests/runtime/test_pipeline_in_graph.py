"""The pipeline with a model that computes its scores in the graph (runtime/pipeline.py).

Such a model's z and heat map replace the Numba scoring: the pipeline must give the
plain model's numbers (z to 1e-4 relative, heat maps to 1e-3), never touch the
probabilities or the Numba kernels, say which path it is on, and refuse a model whose
settings disagree with its own.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from alscout.errors import BackendUnavailableError, InvalidInputError, ModelError
from alscout.export.onnx import OnnxFromPath, SaveOnnx
from alscout.export.onnx_scores import ScoredOnnxFromOnnx
from alscout.runtime.backends import open_backend
from alscout.runtime.backends.base import TensorMeta, check_io_contract
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline

pytest.importorskip("torch", reason="building an in-graph model traces torch modules")

#: the settings of the models built here and of the pipelines that run them
CONFIG = PipelineConfig(batch_size=3, radius=4, region=20, heatmap_stride=16)


@pytest.fixture(scope="module")
def scored(tiny_model, tmp_path_factory):
    """(without probs, with probs) in-graph versions of the tiny model, CONFIG's settings."""
    folder = tmp_path_factory.mktemp("in_graph")
    plain = OnnxFromPath(tiny_model)
    lean = SaveOnnx(ScoredOnnxFromOnnx(plain, CONFIG.scoring), folder / "lean.onnx")
    kept = SaveOnnx(ScoredOnnxFromOnnx(plain, CONFIG.scoring, keep_probs=True), folder / "k.onnx")
    lean(), kept()
    return folder / "lean.onnx", folder / "k.onnx"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120))
    return [np.roll(base, 7 * i, axis=1) for i in range(5)] + [
        rng.integers(0, 256, (90, 200, 3), dtype=np.uint8),
        np.zeros((96, 128, 3), np.uint8),
    ]


def test_in_graph_scores_equal_the_numba_path(tiny_model, scored, frames):
    with (
        ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), CONFIG) as plain,
        ScoringPipeline(open_backend(scored[0], "onnxruntime-cpu"), CONFIG) as graph,
    ):
        assert (plain.scoring_path, graph.scoring_path) == ("numba", "in_graph")
        expected = plain.score(frames, heatmaps=True)
        got = graph.score(frames, heatmaps=True)
    assert len(got) == len(frames)
    for e, g in zip(expected, got, strict=True):
        assert g.z == pytest.approx(e.z, rel=1e-4, abs=1e-9)
        assert g.heatmap is not None and e.heatmap is not None
        assert g.heatmap.shape == e.heatmap.shape == (6, 8)
        np.testing.assert_allclose(g.heatmap, e.heatmap, atol=1e-3)
        assert g.model_hash != e.model_hash and g.score_ms == 0.0


def test_no_probabilities_leave_the_model_and_numba_is_not_called(scored, frames, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the in-graph path must not score with Numba")

    monkeypatch.setattr("alscout.runtime.pipeline.frame_scores", refuse)
    backend = open_backend(scored[0], "onnxruntime-cpu")
    seen: list[dict[str, tuple]] = []
    run = backend.infer_outputs_impl

    def spy(images):
        out = run(images)
        seen.append({name: value.shape for name, value in out.items()})
        return out

    monkeypatch.setattr(backend, "infer_outputs_impl", spy)
    monkeypatch.setattr(backend, "infer_impl", refuse)
    with ScoringPipeline(backend, CONFIG) as pipeline:
        scores = pipeline.score(frames[:4], heatmaps=False)
    assert all(s.heatmap is None for s in scores)
    assert seen[-2:] == [{"z": (3,), "heatmap": (3, 6, 8)}, {"z": (1,), "heatmap": (1, 6, 8)}]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"radius": 9}, "radius: 4 vs 9"),
        ({"region": 30}, "region: 20 vs 30"),
        ({"method": "entropy"}, "method: divergence vs entropy"),
        ({"double_evaluation": False}, "double_evaluation: True vs False"),
        ({"heatmap_stride": 8}, "heatmap_stride: 16 vs 8"),
        ({"aggregation": "mean"}, "aggregation: maxpool vs mean"),
    ],
)
def test_a_model_whose_settings_disagree_is_refused_before_activation(scored, change, named):
    backend = open_backend(scored[0], "onnxruntime-cpu")
    config = PipelineConfig(**{**CONFIG.__dict__, **change})
    with pytest.raises(ModelError, match=named) as caught:
        ScoringPipeline(backend, config)
    assert "--scores-in-graph" in str(caught.value)
    assert not backend.is_active


def test_batch_size_and_input_size_are_free(scored, frames):
    config = PipelineConfig(**{**CONFIG.__dict__, "batch_size": 2, "input_size": (64, 80)})
    with ScoringPipeline(open_backend(scored[0], "onnxruntime-cpu"), config) as pipeline:
        scores = pipeline.score(frames, heatmaps=True)
    assert all(s.heatmap is not None and s.heatmap.shape == (4, 5) for s in scores)


def test_probabilities_only_from_a_model_that_keeps_them(tiny_model, scored, frames):
    lean = ScoringPipeline(open_backend(scored[0], "onnxruntime-cpu"), CONFIG)
    with lean, pytest.raises(ModelError, match="--keep-probs"):
        lean.probabilities(frames[:2])
    with (
        ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), CONFIG) as plain,
        ScoringPipeline(open_backend(scored[1], "onnxruntime-cpu"), CONFIG) as kept,
    ):
        np.testing.assert_allclose(
            kept.probabilities(frames[:2]), plain.probabilities(frames[:2]), atol=1e-6
        )


def test_backend_calls_match_the_model_kind(tiny_model, scored):
    images = np.zeros((1, 3, 32, 32), np.float32)
    with open_backend(scored[0], "onnxruntime-cpu") as graph:
        assert graph.scores_in_graph and graph.output_names == ("z", "heatmap")
        with pytest.raises(ModelError, match="use infer_scores"):
            graph.infer(images)
        with pytest.raises(InvalidInputError, match="float32"):
            graph.infer_scores(images.astype(np.float64))
        out = graph.infer_scores(images)
        assert out.z.shape == (1,) and out.heatmap.shape == (1, 2, 2) and out.probs is None
    with open_backend(tiny_model, "onnxruntime-cpu") as plain:
        assert not plain.scores_in_graph
        with pytest.raises(ModelError, match="--scores-in-graph"):
            plain.infer_scores(images)


def test_io_contract_of_a_scored_model(scored):
    info = open_backend(scored[0], "onnxruntime-cpu").model_info
    image = TensorMeta("images", "float32", (None, 3, None, None))
    z = TensorMeta("z", "float32", (None,))
    heat = TensorMeta("heatmap", "float32", (None, None, None))
    probs = TensorMeta("probs", "float32", (None, 5, None, None))
    assert check_io_contract("m", info, [image], [z, heat])[1] == z
    check_io_contract("m", info, [image], [z, heat, probs])
    with pytest.raises(ModelError, match="scores in its graph"):
        check_io_contract("m", info, [image], [probs])
    with pytest.raises(ModelError, match="z has rank 2"):
        check_io_contract("m", info, [image], [TensorMeta("z", "float32", (None, 1)), heat])
    with pytest.raises(ModelError, match="K=4"):
        check_io_contract(
            "m", info, [image], [z, heat, TensorMeta("probs", "float32", (1, 4, 2, 2))]
        )


def test_the_torch_reference_runs_the_scored_module(tiny_model):
    import torch

    from alscout.export.scores_graph import ScoredDetector
    from alscout.runtime.backends.torch_reference import TorchBackend

    plain = open_backend(tiny_model, "onnxruntime-cpu")
    info = plain.model_info
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.Sigmoid())
    module = ScoredDetector(conv, CONFIG.scoring)
    with TorchBackend(module, replace(info, scoring=CONFIG.scoring)) as backend:
        out = backend.infer_scores(np.ones((2, 3, 40, 40), np.float32))
    assert out.z.shape == (2,) and out.heatmap.shape == (2, 3, 3)


def test_native_tensorrt_refuses_scored_models_before_loading_tensorrt(scored, tmp_path):
    import json

    from alscout.runtime.backends.tensorrt import TensorRTBackend, sidecar_path

    info = open_backend(scored[0], "onnxruntime-cpu").model_info
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    sidecar_path(engine).write_text(json.dumps({"metadata": info.to_metadata()}))
    with pytest.raises(ModelError, match="onnxruntime-tensorrt"):
        TensorRTBackend(engine)


def test_backends_without_in_graph_support_say_so(tiny_model):
    from alscout.runtime.backends.base import Backend

    class ProbsOnly(Backend):
        name = "probs-only"
        source = "probs-only"

        def activate_impl(self): ...

        def infer_impl(self, images):
            return images

        def deactivate_impl(self): ...

    backend = ProbsOnly()
    with pytest.raises(BackendUnavailableError, match="cannot run models with the scores"):
        backend.infer_outputs_impl(np.zeros((1, 3, 4, 4), np.float32))


@pytest.mark.parametrize("method", ["least_confidence", "instance_count", "divergence_count"])
def test_a_graph_model_supports_only_its_own_acquisition(scored, method):
    backend = open_backend(scored[0], "onnxruntime-cpu")
    config = PipelineConfig(**{**CONFIG.__dict__, "method": method})
    with pytest.raises(ModelError, match=f"supports only acquisition 'divergence', not '{method}'"):
        ScoringPipeline(backend, config)
    assert not backend.is_active


def test_a_graph_model_has_no_difficulty_map(scored):
    from alscout.errors import ConfigError

    backend = open_backend(scored[0], "onnxruntime-cpu")
    config = PipelineConfig(**{**CONFIG.__dict__, "method": "difficulty"})
    with pytest.raises(ConfigError, match="inside its graph and outputs no difficulty map"):
        ScoringPipeline(backend, config)
    assert not backend.is_active
