"""A frame's metadata is bounded where the request becomes Python (issue #13, D3)."""

from __future__ import annotations

import grpc
import pytest
from server_harness import jpeg_frame, video_frames

from alscout.errors import ConfigError, InvalidInputError
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.config import MetadataLimits, ServerConfig
from alscout.server.messages import check_metadata, decode

LIMITS = MetadataLimits(keys=3, key_bytes=8, value_bytes=16, total_bytes=40)


def frame_with(metadata: dict[str, str]) -> pb.Frame:
    return jpeg_frame(video_frames(1)[0], 3, metadata=metadata)


@pytest.mark.parametrize(
    ("metadata", "limit"),
    [
        ({f"k{i}": "v" for i in range(4)}, "max_metadata_keys = 3"),
        ({"k" * 9: "v"}, "max_metadata_key_bytes = 8"),
        ({"é" * 5: "v"}, "max_metadata_key_bytes = 8"),  # 5 characters, 10 bytes
        ({"k": "v" * 17}, "max_metadata_value_bytes = 16"),
        ({"a": "v" * 16, "b": "v" * 16, "c": "v" * 8}, "max_metadata_bytes = 40"),
    ],
)
def test_metadata_over_a_limit_is_refused_naming_the_limit(metadata, limit):
    frame = frame_with(metadata)
    with pytest.raises(InvalidInputError, match=limit):
        check_metadata(frame, LIMITS)
    with pytest.raises(InvalidInputError, match=limit):
        decode(frame, 10**6, LIMITS)


def test_metadata_at_the_limits_passes():
    metadata = {"a" * 8: "v" * 16, "b": "v" * 14}  # 3 keys at most, 40 bytes in all
    assert check_metadata(frame_with(metadata), LIMITS) == metadata
    image, fmt, _, _ = decode(frame_with(metadata), 10**6, LIMITS)
    assert fmt == "jpeg" and image.ndim == 3


def test_metadata_limits_are_server_settings(tmp_path):
    config = ServerConfig(model_path=tmp_path / "m.onnx")
    assert config.metadata_limits == MetadataLimits()
    assert MetadataLimits() == MetadataLimits(keys=64, key_bytes=128, value_bytes=4096,
                                              total_bytes=16384)  # fmt: skip
    custom = ServerConfig(model_path=tmp_path / "m.onnx", max_metadata_keys=2,
                          max_metadata_key_bytes=10, max_metadata_value_bytes=20,
                          max_metadata_bytes=30)  # fmt: skip
    assert custom.metadata_limits == MetadataLimits(2, 10, 20, 30)
    for name in ("max_metadata_keys", "max_metadata_key_bytes", "max_metadata_value_bytes",
                 "max_metadata_bytes"):  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            ServerConfig(model_path=tmp_path / "m.onnx", **{name: 0})
    # the default limits hold without a config too
    with pytest.raises(InvalidInputError, match="max_metadata_value_bytes = 4096"):
        decode(frame_with({"k": "v" * 4097}), 10**6)


def test_the_server_answers_invalid_argument_naming_the_limit(stub):
    big = {"k": "v" * 5000}
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ScoreStream(iter([frame_with(big)])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_metadata_value_bytes" in caught.value.details()
    many = {f"key{i}": "v" for i in range(65)}
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(frame_with(many))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_metadata_keys" in caught.value.details()
    assert stub.Score(frame_with({"lane": "2"})).frame_index == 3  # within limits: scored


def test_the_server_applies_its_configured_limits(harness, tiny_model):
    from server_harness import make_config

    scoring, port = harness.start(make_config(tiny_model, max_metadata_keys=1))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = alscout_pb2_grpc.ScorerStub(channel)
            two = frame_with({"a": "1", "b": "2"})
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.ScoreStream(iter([two])))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "max_metadata_keys = 1" in caught.value.details()
            with pytest.raises(grpc.RpcError) as caught:
                stub.Score(two)
            assert "max_metadata_keys = 1" in caught.value.details()
            assert stub.Score(frame_with({"a": "1"})).frame_index == 3
    finally:
        harness.stop(scoring)
