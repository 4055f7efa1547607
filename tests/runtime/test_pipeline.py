from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from alscout.errors import ConfigError, InvalidInputError, ModelError
from alscout.runtime.backends import open_backend
from alscout.runtime.pipeline import (
    FrameScore,
    PipelineConfig,
    ScoringPipeline,
    block_max,
    resize_frame,
)
from alscout.runtime.scoring import aggregate, pixel_scores


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120))
    return [np.roll(base, 9 * i, axis=1) for i in range(5)] + [
        rng.integers(0, 256, (90, 200, 3), dtype=np.uint8),  # another size and aspect
        np.zeros((96, 128, 3), np.uint8),  # the model's own size, flat
    ]


def reference_z(backend, frames, config: PipelineConfig) -> np.ndarray:
    """The pipeline's steps written out by hand, one frame at a time."""
    info = backend.model_info
    h, w = info.input_size
    mean = np.asarray(info.normalisation.mean, np.float32)
    std = np.asarray(info.normalisation.std, np.float32)
    out = []
    for frame in frames:
        area = h * w < frame.shape[0] * frame.shape[1]
        resized = cv2.resize(
            frame, (w, h), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR
        )
        x = ((resized / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1)[None]
        probs = backend.infer(np.ascontiguousarray(x))
        if config.double_evaluation:
            mirrored = backend.infer(np.ascontiguousarray(x[..., ::-1]))
            probs = (probs + mirrored[..., ::-1]) / 2
        maps = pixel_scores(probs.astype(np.float32), config.radius, config.method)
        out.append(aggregate(maps, config.region, config.aggregation)[0])
    return np.asarray(out)


@pytest.mark.parametrize("double", [True, False])
def test_scores_equal_the_steps_done_by_hand(tiny_model, frames, double):
    config = PipelineConfig(batch_size=3, double_evaluation=double, radius=4, region=20)
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as pipeline:
        scores = pipeline.score(frames)
        expected = reference_z(pipeline.backend, frames, config)
    assert len(scores) == len(frames)
    assert all(isinstance(s, FrameScore) and s.heatmap is None for s in scores)
    np.testing.assert_allclose([s.z for s in scores], expected, rtol=1e-4)
    assert len({round(s.z, 6) for s in scores}) > 3  # the frames really differ


def test_batch_size_does_not_change_scores(tiny_model, frames):
    backend = open_backend(tiny_model, "onnxruntime-cpu")
    with backend:
        one = ScoringPipeline(backend, PipelineConfig(batch_size=1)).score(frames)
        all_at_once = ScoringPipeline(backend, PipelineConfig(batch_size=16)).score(frames)
    np.testing.assert_allclose([s.z for s in one], [s.z for s in all_at_once], rtol=1e-5)


def test_double_evaluation_makes_scores_mirror_invariant(tiny_model, frames):
    # Regions tile from the left; with a width the region divides, mirroring the frame
    # mirrors the merged maps exactly, so z must not change.
    config = PipelineConfig(region=32, input_size=(96, 128))
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as pipeline:
        z = [s.z for s in pipeline.score(frames[:4])]
        z_mirrored = [s.z for s in pipeline.score([f[:, ::-1] for f in frames[:4]])]
        single = ScoringPipeline(
            pipeline.backend, PipelineConfig(region=32, double_evaluation=False)
        )
        z_single = [s.z for s in single.score(frames[:4])]
        z_single_m = [s.z for s in single.score([f[:, ::-1] for f in frames[:4]])]
    np.testing.assert_allclose(z, z_mirrored, rtol=1e-5)
    assert not np.allclose(z_single, z_single_m, rtol=1e-5)


def test_heatmaps_are_block_maxima_of_the_score_map(tiny_model, frames):
    config = PipelineConfig(heatmap_stride=16)
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as pipeline:
        scores = pipeline.score(frames[:2], heatmaps=True)
        maps = pixel_scores(pipeline.probabilities(frames[:2]))
    for score, score_map in zip(scores, maps, strict=True):
        assert score.heatmap.shape == (6, 8)  # 96 x 128 at stride 16
        assert score.heatmap.dtype == np.float32
        assert score.heatmap[1, 2] == pytest.approx(score_map[16:32, 32:48].max())
        assert score.heatmap.max() == pytest.approx(score_map.max())


def test_frame_scores_carry_the_model_identity_and_timings(tiny_model, frames):
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu")) as pipeline:
        score = pipeline.score(frames[:2])[0]
        info = pipeline.model_info
    assert score.model_version == info.version == "test-1"
    assert score.model_hash == info.sha256 and len(score.model_hash) == 64
    assert score.infer_ms > 0 and score.score_ms > 0


def test_block_max_counts_partial_edge_blocks():
    maps = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    out = block_max(maps, 3)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0], [[16, 19, 20], [30, 33, 34]])
    np.testing.assert_array_equal(out[:, -1, -1], maps[:, 4, 6])


def test_resize_follows_the_trainers_rule():
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        resize_frame(big, 20, 30), cv2.resize(big, (30, 20), interpolation=cv2.INTER_AREA)
    )
    np.testing.assert_array_equal(
        resize_frame(big, 80, 120), cv2.resize(big, (120, 80), interpolation=cv2.INTER_LINEAR)
    )
    assert resize_frame(big, 40, 60) is big


def test_bad_frames_are_refused_by_index(tiny_model, frames):
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu")) as pipeline:
        with pytest.raises(InvalidInputError, match="frame 1 must be"):
            pipeline.score([frames[0], frames[0].astype(np.float32)])
        with pytest.raises(InvalidInputError, match="frame 0 must be"):
            pipeline.score([frames[0][:, :, 0]])
        with pytest.raises(InvalidInputError, match="single frame"):
            pipeline.score(frames[0])
        assert pipeline.score([]) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=0),
        dict(radius=-1),
        dict(region=0),
        dict(method="variance"),
        dict(aggregation="median"),
        dict(heatmap_stride=0),
        dict(input_size=(0, 10)),
    ],
)
def test_config_is_validated(kwargs):
    with pytest.raises(ConfigError):
        PipelineConfig(**kwargs)


def test_pipeline_activates_at_start_and_a_bad_model_fails_there(tiny_model, tmp_path):
    import onnx

    backend = open_backend(tiny_model, "onnxruntime-cpu")
    pipeline = ScoringPipeline(backend)
    assert backend.is_active
    pipeline.close()
    assert not backend.is_active
    model = onnx.load(str(tiny_model))
    model.graph.node[-1].op_type = "Identity"  # logits instead of probabilities
    bad = tmp_path / "logits.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelError, match="not probabilities"):
        ScoringPipeline(open_backend(bad, "onnxruntime-cpu"))


def test_concurrent_callers_get_their_own_results(tiny_model, frames):
    with ScoringPipeline(
        open_backend(tiny_model, "onnxruntime-cpu"), PipelineConfig(batch_size=2)
    ) as p:
        expected = [s.z for s in p.score(frames)]
        results: dict[int, list[float]] = {}

        def work(i: int) -> None:
            order = frames[i:] + frames[:i]
            results[i] = [s.z for s in p.score(order)]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, got in results.items():
        np.testing.assert_allclose(got, expected[i:] + expected[:i], rtol=1e-6)


def test_real_video_frames_score_and_vary(pets_video, tiny_model):
    from alscout.export.frames import read_frames

    frames = read_frames(pets_video, limit=6, stride=40)
    assert frames[0].shape == (360, 480, 3)
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu")) as pipeline:
        z = np.array([s.z for s in pipeline.score(frames)])
    assert np.isfinite(z).all() and (z > 0).all()
    assert np.unique(np.round(z, 6)).size == len(frames)


# ------------------------------------------------- acquisition functions and the gate


@pytest.mark.parametrize(
    "method", ["entropy", "least_confidence", "instance_count", "divergence_count"]
)
def test_every_vehicle_acquisition_scores_the_pipelines_probabilities(tiny_model, frames, method):
    from alscout.runtime.acquisition import AcquisitionConfig, frame_scores, reference_boxes

    config = PipelineConfig(batch_size=3, method=method, radius=4, region=20, count_threshold=0.3)
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as pipeline:
        scores = pipeline.score(frames, heatmaps=True)
        probs = pipeline.probabilities(frames)
        info = pipeline.model_info
    boxes = reference_boxes(info.default_boxes, info.input_size)
    acquisition = AcquisitionConfig(radius=4, region=20, count_threshold=0.3, default_boxes=boxes)
    want = frame_scores(probs, method, acquisition)
    np.testing.assert_allclose([s.z for s in scores], want.z, rtol=1e-6)
    assert all(s.heatmap is not None and s.heatmap.shape == (6, 8) for s in scores)
    assert all(s.quality is None and not s.gated for s in scores)  # no gate configured


def test_unknown_or_training_side_acquisitions_are_refused():
    with pytest.raises(ConfigError, match="least_confidence"):
        PipelineConfig(method="margin")
    with pytest.raises(ConfigError, match="alscout al"):
        PipelineConfig(method="mc_dropout")


def test_the_quality_gate_marks_flat_frames_and_passes_textured_ones(tiny_model):
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    textured = cv2.resize(blocks, (160, 120), interpolation=cv2.INTER_NEAREST)  # sharp edges
    black = np.zeros((120, 160, 3), np.uint8)
    blurred = cv2.GaussianBlur(textured, (0, 0), 4.0)
    config = PipelineConfig(batch_size=2, quality=True)
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as pipeline:
        scores = pipeline.score([textured, black, blurred])
        plain = ScoringPipeline(pipeline.backend, PipelineConfig(batch_size=2))
        ungated = plain.score([textured, black, blurred])
    assert [s.gated for s in scores] == [False, True, True]
    assert "dark" in scores[1].low_quality and scores[2].low_quality == ("blurred",)
    assert all(s.quality is not None for s in scores)
    # the gate does not change z
    assert [s.z for s in scores] == [s.z for s in ungated]


def test_quality_settings_parse_from_a_table():
    config = PipelineConfig(quality={"min_sharpness": 0.2})  # type: ignore[arg-type]
    assert config.quality is not None and config.quality.min_sharpness == 0.2
    assert PipelineConfig(quality=False).quality is None  # type: ignore[arg-type]
