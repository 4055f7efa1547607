"""Thresholds for target flag rates: set on a calibration set, shipped in the model."""

from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pytest

from alscout.errors import ConfigError, InvalidInputError, ModelError
from alscout.runtime.backends import open_backend
from alscout.runtime.model_info import FlagCalibration, ModelInfo
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline
from alscout.runtime.shipped_thresholds import (
    calibrate,
    parse_rate,
    selection_settings,
    with_shipped_threshold,
    write_calibration,
)
from alscout.runtime.temporal import (
    Reason,
    SelectorConfig,
    candidate_scores,
    flag_recording,
    rate_thresholds,
    smooth,
)


def test_rate_thresholds_by_hand():
    candidates = np.array([1.0, 5.0, 3.0, 4.0, 2.0])
    got = rate_thresholds(candidates, 100, [0.02, 0.01, 0.05, 0.5])
    # k = 1: between 5 and 4; k = 2: between 4 and 3; k >= 5 candidates: the smallest
    assert got == [(0.01, 4.5), (0.02, 3.5), (0.05, 1.0), (0.5, 1.0)]
    assert rate_thresholds(candidates, 100, [0.015]) == [(0.015, 3.5)]  # 1.5 rounds up
    with pytest.raises(InvalidInputError, match="longer calibration set"):
        rate_thresholds(np.zeros(0), 100, [0.01])
    with pytest.raises(InvalidInputError, match=r"\(0, 1\]"):
        rate_thresholds(candidates, 100, [0.0])


def test_candidates_are_the_local_maxima_the_rule_could_flag():
    rng = np.random.default_rng(2)
    z = rng.normal(size=300)
    gated = rng.random(300) < 0.1
    zhat = smooth(z)
    want = []
    for t in range(300):
        if gated[t]:
            continue
        window = [s for s in range(max(0, t - 15), min(300, t + 16)) if not gated[s]]
        if all(zhat[s] < zhat[t] for s in window if s < t) and all(
            zhat[s] <= zhat[t] for s in window if s > t
        ):
            want.append(zhat[t])
    got = candidate_scores(z, SelectorConfig(threshold=5.0, max_flags=1, per_frames=100), gated)
    np.testing.assert_array_equal(got, want)  # threshold and budget play no part


@pytest.mark.parametrize("rate", [0.005, 0.01, 0.02])
def test_a_calibrated_threshold_flags_the_rate_on_its_own_set(rate):
    z = np.random.default_rng(5).normal(size=5000)
    config = SelectorConfig()
    [(_, threshold)] = rate_thresholds(candidate_scores(z, config), len(z), [rate])
    flagged = sum(
        d.flagged for d in flag_recording(z, dataclasses.replace(config, threshold=threshold))
    )
    assert flagged == round(rate * len(z))


def test_parse_rate():
    assert parse_rate("1%") == pytest.approx(0.01)
    assert parse_rate("0.5%") == pytest.approx(0.005)
    assert parse_rate("0.02") == 0.02
    for bad in ("0%", "150%", "x", "-1"):
        with pytest.raises(ConfigError):
            parse_rate(bad)


def test_calibration_round_trips_through_the_metadata():
    calibration = FlagCalibration(
        thresholds=((0.005, 2.0), (0.01, 1.5)),
        settings='{"dt": 5, "acquisition": "divergence"}',
        frames=300,
        candidates=9,
        source="pets 1-300",
    )
    assert FlagCalibration.from_json(calibration.to_json()) == calibration
    assert calibration.threshold_for(0.01) == 1.5 and calibration.threshold_for(0.02) is None
    with pytest.raises(ModelError, match="increasing"):
        FlagCalibration(((0.02, 1.0), (0.01, 2.0)), "{}", 10, 1)
    with pytest.raises(ModelError, match="finite"):
        FlagCalibration(((0.01, math.inf),), "{}", 10, 1)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """One drifting textured scene with noise bursts (varied scores), 160x120; ``seed``
    draws the bursts, so every seed gives other frames of the same scene."""
    scene = np.random.default_rng(99).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    base = cv2.resize(scene, (160, 120))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        frame = np.roll(base, 3 * i, axis=1)
        if rng.random() < 0.2:
            frame = np.clip(frame + rng.normal(0, 50, frame.shape), 0, 255).astype(np.uint8)
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def calibrated(tiny_model, tmp_path_factory):
    """(calibrated model path, its calibration) of the tiny model on 240 frames."""
    selector = SelectorConfig(dt=2, sigma=1.0, dt1=3)
    config = PipelineConfig(batch_size=8, radius=3, region=16)
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as pipeline:
        calibration = calibrate(
            pipeline, [frames(120, 0), frames(120, 1)], selector, [0.01, 0.05], source="synthetic"
        )
    out = write_calibration(tiny_model, calibration, tmp_path_factory.mktemp("cal") / "c.onnx")
    return out, calibration


def test_calibrate_scores_every_frame_and_writes_the_metadata(calibrated, tiny_model):
    path, calibration = calibrated
    assert calibration.frames == 240 and calibration.candidates > 12
    assert calibration.rates == (0.01, 0.05)
    assert calibration.threshold_for(0.01) > calibration.threshold_for(0.05)
    settings = calibration.settings_dict()
    assert settings["acquisition"] == "divergence" and settings["dt1"] == 3
    assert settings["input_size"] == [96, 128] and settings["quality"] is None
    with open_backend(path, "onnxruntime-cpu") as backend:
        assert backend.model_info.calibration == calibration
    with open_backend(tiny_model, "onnxruntime-cpu") as backend:  # the source is untouched
        assert backend.model_info.calibration is None


def test_a_malformed_calibration_names_the_key(tiny_model):
    with open_backend(tiny_model, "onnxruntime-cpu") as backend:
        metadata = backend.model_info.to_metadata()
    with pytest.raises(ModelError, match=r"alscout\.calibration"):
        ModelInfo.from_metadata({**metadata, "alscout.calibration": "{bad"}, source="m.onnx")


def test_the_server_choice_uses_the_shipped_threshold_only_when_it_holds(calibrated, tiny_model):
    path, calibration = calibrated
    config = PipelineConfig(batch_size=8, radius=3, region=16)
    adaptive = SelectorConfig(dt=2, sigma=1.0, dt1=3, threshold="adaptive", target_rate=0.01)
    with ScoringPipeline(open_backend(path, "onnxruntime-cpu"), config) as pipeline:
        used = with_shipped_threshold(adaptive, pipeline)
        assert used.used and used.selector.initial_threshold == calibration.threshold_for(0.01)
        assert "1%" in used.message
        other_rate = with_shipped_threshold(
            dataclasses.replace(adaptive, target_rate=0.02), pipeline
        )
        assert not other_rate.used and "not for 2%" in other_rate.message
        other_dt1 = with_shipped_threshold(dataclasses.replace(adaptive, dt1=15), pipeline)
        assert not other_dt1.used and "dt1: 3 vs 15" in other_dt1.message
        fixed = with_shipped_threshold(SelectorConfig(threshold=0.3), pipeline)
        assert not fixed.used and fixed.selector == SelectorConfig(threshold=0.3)
    other = PipelineConfig(batch_size=8, radius=3, region=16, method="entropy")
    with ScoringPipeline(open_backend(path, "onnxruntime-cpu"), other) as pipeline:
        changed = with_shipped_threshold(adaptive, pipeline)
        assert not changed.used and "acquisition: 'divergence' vs 'entropy'" in changed.message
    # calibrated by a decoder before 2026-12-03 (no NMS containment rule recorded)
    older = dict(calibration.settings_dict())
    del older["nms_overlap"], older["nms_contained"]
    before = write_calibration(
        path,
        dataclasses.replace(calibration, settings=json.dumps(older, sort_keys=True)),
        path.parent / "older.onnx",
    )
    with ScoringPipeline(open_backend(before, "onnxruntime-cpu"), config) as pipeline:
        stale = with_shipped_threshold(adaptive, pipeline)
        assert not stale.used and "nms_overlap" in stale.message
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as pipeline:
        bare = with_shipped_threshold(adaptive, pipeline)
        assert not bare.used and "no calibrated thresholds" in bare.message
        assert "alscout calibrate" in bare.message and bare.selector == adaptive


def test_shipped_threshold_flags_new_frames_from_the_start(calibrated):
    path, _ = calibrated
    config = PipelineConfig(batch_size=8, radius=3, region=16)
    adaptive = SelectorConfig(dt=2, sigma=1.0, dt1=3, threshold="adaptive", target_rate=0.05)
    with ScoringPipeline(open_backend(path, "onnxruntime-cpu"), config) as pipeline:
        z = [s.z for s in pipeline.score(frames(200, 7))]  # frames not calibrated on
        selector = with_shipped_threshold(adaptive, pipeline).selector
    decisions = flag_recording(z, selector)
    assert not any(d.reason is Reason.WARMING_UP for d in decisions)
    rate = sum(d.flagged for d in decisions) / len(decisions)
    assert 0.02 <= rate <= 0.1
    assert not any(d.flagged for d in flag_recording(z, adaptive))  # warming up


def test_selection_settings_read_the_servers_tables(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text(
        'port = 1\n[pipeline]\nmethod = "entropy"\ninput_size = [96, 128]\n[selector]\ndt1 = 7\n',
        encoding="utf-8",
    )
    pipeline, selector = selection_settings(path, quality=True, method=None)
    assert pipeline.method == "entropy" and pipeline.input_size == (96, 128)
    assert pipeline.quality is not None and selector.dt1 == 7
    assert selection_settings() == (PipelineConfig(), SelectorConfig())
