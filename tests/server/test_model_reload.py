"""ReloadModel's refusals: bad names are INVALID_ARGUMENT, messages name files relative to
the model folder, and the vehicle never loads PyTorch files (issue #13: D8)."""

from __future__ import annotations

import shutil
import sys

import grpc
import pytest
from server_harness import PIPELINE, make_config

from alscout.errors import ConfigError
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.models import ModelHolder


@pytest.fixture
def no_torch(monkeypatch):
    """Any import of torch or of the torch backend fails, as on a vehicle."""
    for name in ("torch", "alscout.runtime.backends.torch_reference"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def reloading(harness, tiny_model, tmp_path, no_torch):
    """(stub, model folder) of a server whose model lies in a folder of its own."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "tiny.onnx")
    scoring, port = harness.start(make_config(folder / "tiny.onnx", backend="auto"))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield alscout_pb2_grpc.ScorerStub(channel), folder
    harness.stop(scoring)


def reload_error(stub, name: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ReloadModel(pb.ReloadModelRequest(model_file=name), timeout=30)
    return caught.value


@pytest.mark.parametrize(
    "name", ["x" * 300 + ".onnx", "é" * 200 + ".onnx", "nul\x00.onnx", "..", "a/b.onnx"]
)
def test_a_bad_name_is_invalid_argument(reloading, name):
    stub, _ = reloading
    error = reload_error(stub, name)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "model_file" in error.details()
    assert stub.GetModelInfo(pb.GetModelInfoRequest()).version == "test-1"


def test_a_broken_model_is_named_relative_to_the_model_folder(reloading):
    stub, folder = reloading
    (folder / "broken.onnx").write_bytes(b"not a model")
    error = reload_error(stub, "broken.onnx")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "broken.onnx" in error.details()
    assert str(folder) not in error.details()  # no server path goes to the client
    assert str(folder.resolve()) not in error.details()


def test_a_pytorch_file_is_refused_without_importing_torch(reloading):
    stub, folder = reloading
    (folder / "model.pt2").write_bytes(b"PK\x03\x04 garbage, not a program")
    error = reload_error(stub, "model.pt2")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "ONNX" in error.details() and str(folder) not in error.details()
    assert stub.GetModelInfo(pb.GetModelInfoRequest()).version == "test-1"


def test_the_server_never_opens_pytorch_files_or_the_torch_backend(tiny_model, tmp_path, no_torch):
    garbage = tmp_path / "model.pt2"
    garbage.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"model\.pt2.*ONNX"):
        ModelHolder(garbage, "auto", 1, PIPELINE)
    with pytest.raises(ConfigError, match="torch"):
        ModelHolder(tiny_model, "torch", 1, PIPELINE)
    holder = ModelHolder(tiny_model, "onnxruntime-cpu", 1, PIPELINE)
    try:
        with pytest.raises(ConfigError, match="ONNX"):  # the registry's path too
            holder.reload_path(garbage)
        assert holder.pipeline.model_info.version == "test-1"
    finally:
        holder.close()
