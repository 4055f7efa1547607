"""The quality gate on the vehicle path: ``alscout serve --quality-gate`` and ``alscout
score`` (the same stream state) answer ``low_quality`` for blurred and black frames."""

from __future__ import annotations

import dataclasses

import cv2
import grpc
import numpy as np
import pytest
from recordings import read_outputs
from server_harness import SELECTOR, jpeg_frame, make_config

from alscout.apps.cli import build_parser, main
from alscout.errors import ConfigError
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.cli import load_args
from alscout.server.outbox import MemoryOutbox

N = 36
HELD_BACK = set(range(12, 18)) | {25, 26}  # black, then blurred


def frame_images() -> list[np.ndarray]:
    """Sharp block scenes that drift, 160x120 RGB, with black and blurred ones."""
    rng = np.random.default_rng(5)
    blocks = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    base = cv2.resize(blocks, (160, 120), interpolation=cv2.INTER_NEAREST)
    out = []
    for i in range(N):
        image = np.roll(base, 4 * i, axis=1)
        if i % 5 == 0:
            image = np.clip(image + rng.normal(0, 30, image.shape), 0, 255).astype(np.uint8)
        if 12 <= i < 18:
            image = np.zeros_like(image)
        if i in (25, 26):
            image = cv2.GaussianBlur(image, (0, 0), 4.0)
        out.append(image)
    return out


def jpegs() -> list[bytes]:
    return [
        cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        for image in frame_images()
    ]


def test_serve_answers_low_quality_and_never_flags_those_frames(harness, tiny_model):
    config = make_config(tiny_model)
    config = dataclasses.replace(
        config,
        pipeline=dataclasses.replace(config.pipeline, quality=True),  # type: ignore[arg-type]
    )
    scoring, port = harness.start(config, MemoryOutbox())
    try:
        requests = [jpeg_frame(data, i) for i, data in enumerate(jpegs())]
        requests.append(pb.Frame(recording_id="rec1", camera_id="front", end_of_stream=True))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            results = list(alscout_pb2_grpc.ScorerStub(channel).ScoreStream(iter(requests)))
    finally:
        harness.stop(scoring)
    finals = {d.frame_index: d for r in results for d in r.final_decisions}
    assert sorted(finals) == list(range(N))
    low = {i for i, d in finals.items() if d.reason == "low_quality"}
    assert low == HELD_BACK
    assert all(finals[i].decision == pb.DECISION_NOT_FLAGGED for i in low)
    assert any(d.decision == pb.DECISION_FLAGGED for d in finals.values())


def test_score_gives_the_same_reasons_through_the_shared_stream_state(tiny_model, tmp_path):
    folder = tmp_path / "drive"
    folder.mkdir()
    for i, image in enumerate(frame_images()):
        cv2.imwrite(str(folder / f"{i:04d}.png"), image[:, :, ::-1])
    toml = tmp_path / "score.toml"
    s = SELECTOR
    toml.write_text(
        "[pipeline]\nbatch_size = 4\nradius = 3\nregion = 16\nquality = true\n"
        f"[selector]\ndt = {s.dt}\nsigma = {s.sigma}\ndt1 = {s.dt1}\ndt2 = {s.dt2}\n"
        f"threshold = {s.threshold}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    code = main(
        ["score", "--no-progress", str(folder), "--model", str(tiny_model), "--out", str(out),
         "--config", str(toml), "--workers", "1"]
    )  # fmt: skip
    assert code == 0
    records = read_outputs(out)["decisions"]
    assert [r["frame_index"] for r in records] == list(range(N))
    assert {r["frame_index"] for r in records if r["reason"] == "low_quality"} == HELD_BACK
    assert not any(r["decision"] == "flagged" for r in records if r["frame_index"] in HELD_BACK)


def serve_args(*extra: str):
    argv = ["serve", "--model", "m.onnx", *extra]
    return load_args(build_parser("serve").parse_args(argv))


def test_serve_flags_choose_the_acquisition_the_gate_and_the_rate():
    config = serve_args(
        "--acquisition", "least_confidence", "--quality-gate", "--target-rate", "0.5%"
    )
    assert config.pipeline.method == "least_confidence"
    assert config.pipeline.quality is not None
    assert config.selector.threshold == "adaptive"
    assert config.selector.target_rate == pytest.approx(0.005)
    plain = serve_args()
    assert plain.pipeline.method == "divergence" and plain.pipeline.quality is None
    with pytest.raises(ConfigError, match="--target-rate"):
        serve_args("--threshold", "0.3", "--target-rate", "1%")
    with pytest.raises(ConfigError, match="alscout al"):
        serve_args("--acquisition", "mc_dropout")
    with pytest.raises(ConfigError, match="least_confidence"):
        serve_args("--acquisition", "margin")
    with pytest.raises(ConfigError, match="target rate"):
        serve_args("--target-rate", "2")
