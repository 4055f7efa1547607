"""``alscout score`` from an S3 recording into an S3 sink, read back by ``fleet ingest``."""

from __future__ import annotations

import json

from moto_s3 import make_bucket
from recordings import write_config, write_video

from alscout.apps.cli import main
from alscout.storage.layout import record_key
from alscout.trainer.fleet.ingest import ingest
from alscout.trainer.fleet.pool import LabelPool


def test_s3_recording_to_s3_sink(s3_endpoint, tiny_model, tmp_path, capsys):
    client = make_bucket(s3_endpoint, "archive")
    make_bucket(s3_endpoint, "uploads")
    video = write_video(tmp_path / "drive-9.avi", 30, seed=9)
    client.upload_file(str(video), "archive", "cars/7/drive-9.avi")
    config = str(write_config(tmp_path / "score.toml"))
    sink = f"s3://uploads/rescored?endpoint_url={s3_endpoint}"
    out = tmp_path / "out"
    code = main([
        "score", f"s3://archive/cars/7/drive-9.avi?endpoint_url={s3_endpoint}", "--no-progress",
        "--model", str(tiny_model), "--out", str(out), "--config", config, "--sink", sink,
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert [r["frame_index"] for r in lines] == list(range(30))
    assert {r["recording_id"] for r in lines} == {"drive-9"}

    local = tmp_path / "local"
    args = ["--model", str(tiny_model), "--out", str(local), "--config", config]
    assert main(["score", str(video), "--no-progress", *args]) == 0
    expected = (local / "decisions.jsonl").read_text()
    assert (out / "decisions.jsonl").read_text() == expected  # the same frames, the same z

    flagged = {
        record_key("drive-9", "cam0", r["frame_index"]) for r in lines if r["decision"] == "flagged"
    }
    listed = client.list_objects_v2(Bucket="uploads", Prefix="rescored/frames/")["Contents"]
    assert {o["Key"].removeprefix("rescored/") for o in listed} == flagged
    report = ingest(LabelPool(tmp_path / "pool"), [sink])
    assert report.rejected == [] and len(report.added) == len(flagged) >= 1
