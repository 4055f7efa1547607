"""``alscout serve --model int8.onnx``: an ONNX Runtime INT8 model served like float32.

The tiny model and its INT8 twin (export/quantize.py, calibrated on other frames of
the same video) score one PETS09 stream through a real server each: every frame is
answered, z stays within a few percent of float32's and the flags agree.
"""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import onnx
from server_harness import jpeg_frame, make_config, split

from alscout.export.calibration import CalibrationBatches
from alscout.export.quantize import QUANTIZATION_KEY, QuantizeSettings, quantize_onnx
from alscout.runtime.backends import open_backend
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc


def test_a_pets_stream_is_scored_by_the_int8_model_like_float32(
    harness, tiny_model, pets_video, tmp_path
):
    from alscout.export.frames import read_frames

    with open_backend(tiny_model, "onnxruntime-cpu") as backend:
        info = backend.model_info
    calibration = CalibrationBatches(pets_video, info, batch_size=4, limit=16, stride=10)
    settings = QuantizeSettings(float_ends=False)  # the tiny model is all ends
    int8 = quantize_onnx(tiny_model, tmp_path / "int8.onnx", calibration, settings)
    frames = []
    for rgb in read_frames(pets_video, limit=40, stride=5)[8:]:  # past the calibration's
        ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1])
        assert ok
        frames.append(data.tobytes())
    results = {}
    for name, model in (("float32", tiny_model), ("int8", int8)):
        scoring, port = harness.start(make_config(model))
        try:
            info_message = scoring.service.models.pipeline.model_info
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = alscout_pb2_grpc.ScorerStub(channel)
                got = stub.GetModelInfo(pb.GetModelInfoRequest())
                requests = (jpeg_frame(d, i, "pets") for i, d in enumerate(frames))
                results[name] = split(list(stub.ScoreStream(requests)))
        finally:
            harness.stop(scoring)
        assert got.model_hash == info_message.sha256 and got.backend == "onnxruntime-cpu"
    (own_f, _, finals_f, by_f), (own_q, _, finals_q, by_q) = results["float32"], results["int8"]
    assert len(own_f) == len(own_q) == len(frames)
    assert set(finals_f) == set(finals_q) and set(finals_q.values()) == {1}
    z_float = np.array([r.z for r in own_f])
    z_int8 = np.array([r.z for r in own_q])
    assert not np.array_equal(z_int8, z_float)
    np.testing.assert_allclose(z_int8, z_float, rtol=0.05)
    flagged_f = {k for k, d in by_f.items() if d.decision == pb.DECISION_FLAGGED}
    flagged_q = {k for k, d in by_q.items() if d.decision == pb.DECISION_FLAGGED}
    agree = sum((k in flagged_f) == (k in flagged_q) for k in by_f)
    assert flagged_f and flagged_q
    # a flag is a local maximum of smoothed z: a near-tie may flip, most must not
    assert agree >= 0.9 * len(by_f), (agree, sorted(flagged_f), sorted(flagged_q))
    assert QUANTIZATION_KEY in {p.key for p in onnx.load(str(int8)).metadata_props}
