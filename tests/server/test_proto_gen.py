"""The committed stubs are what the one generation command produces."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("grpc_tools", reason="stub generation needs grpcio-tools (dev extra)")

from alscout.server import proto_gen  # after the skip: needs grpc_tools


def test_committed_stubs_are_up_to_date():
    assert proto_gen.stale_stubs() == [], "run: python -m alscout.server.proto_gen"


def test_check_command_reports_a_stale_stub(tmp_path):
    for name, data in proto_gen.generate().items():
        (tmp_path / name).write_bytes(data)
    assert proto_gen.stale_stubs(tmp_path) == []
    (tmp_path / "alscout_pb2_grpc.py").write_text("# edited by hand\n")
    assert proto_gen.stale_stubs(tmp_path) == ["alscout_pb2_grpc.py"]


def test_generated_stubs_import_through_the_package_not_protoc_paths():
    stubs = proto_gen.generate()
    assert b"from alscout.server._proto import alscout_pb2" in stubs["alscout_pb2_grpc.py"]
    assert b"from alscout.v1" not in stubs["alscout_pb2_grpc.py"]


def test_module_runs_as_one_command():
    done = subprocess.run(
        [sys.executable, "-m", "alscout.server.proto_gen", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
