"""``alscout stream --out`` lines name the model that scored each frame (version, hash)."""

from __future__ import annotations

import json

from server_harness import video_frames

from alscout.apps.cli import main
from alscout.runtime.model_info import file_sha256
from alscout.server._proto import alscout_pb2 as pb
from alscout.server.cli_stream import _ScoredBy


def test_lines_carry_the_model_version_and_hash(served, tiny_model, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, data in enumerate(video_frames(12, seed=3)):
        (folder / f"{i:02d}.jpg").write_bytes(data)
    out = tmp_path / "d.jsonl"
    args = ["--server", f"127.0.0.1:{served[0]}", "--out", str(out), "--no-progress"]
    assert main(["stream", str(folder), *args]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12
    assert {(r["model_version"], r["model_hash"]) for r in records} == {
        ("test-1", file_sha256(tiny_model))
    }


def test_each_frame_is_put_down_to_the_model_of_its_own_result():
    models = _ScoredBy("v1", "h1")
    models.scored(pb.FrameResult(frame_index=0, model_version="v1", model_hash="h1"))
    models.scored(pb.FrameResult(frame_index=1, model_version="v2", model_hash="h2"))  # reload
    assert models.decided(0) == ("v1", "h1")
    assert models.decided(1) == ("v2", "h2")
    # a frame whose own result was lost in a cut call: the model of the last result
    assert models.decided(2) == ("v2", "h2")
