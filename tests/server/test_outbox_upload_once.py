"""``alscout outbox upload --once`` ends with a one-line summary of what it did."""

from __future__ import annotations

from alscout.apps.cli import main
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.outbox import FlaggedFrame


def flagged(index: int) -> FlaggedFrame:
    return FlaggedFrame(
        recording_id="rec-1", camera_id="front", frame_index=index,
        image=b"frame %06d" % index + b"x" * 100, image_format="jpeg", z=0.5, smoothed=0.5,
        threshold=0.1, model_version="v1", model_hash="ab" * 32,
    )  # fmt: skip


def test_upload_once_prints_what_it_sent_and_what_is_left(tmp_path, capsys):
    with DurableOutbox(tmp_path / "outbox") as outbox:
        for index in (3, 9, 27):
            outbox.put(flagged(index))
    sink = tmp_path / "sink"
    args = ["--outbox", str(tmp_path / "outbox"), "--sink", str(sink), "--once"]
    assert main(["outbox", "upload", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    sent = sum(p.stat().st_size for p in sink.rglob("*") if p.is_file())
    assert len(lines) == 1
    assert lines[0].startswith(f"uploaded 3 frames ({sent} bytes) to DirectorySink(")
    assert "left: 0 pending (0 bytes), 0 parked, 0 corrupt; 0 failed attempts" in lines[0]

    assert main(["outbox", "upload", *args]) == 0
    assert capsys.readouterr().out.startswith("uploaded 0 frames (0 bytes)")
