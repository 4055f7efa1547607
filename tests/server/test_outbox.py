"""Outboxes store flagged frames whole, under safe ids only; the durable one survives crashes."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from outbox_frames import flagged

from alscout.errors import InvalidInputError
from alscout.server.outbox import (
    DirectoryOutbox,
    FlaggedFrame,
    FramePayload,
    MemoryOutbox,
    Outbox,
)
from alscout.storage.layout import check_id


@pytest.mark.parametrize(
    "bad", ["", "a/b", ".", "..", "a..b", "../x", "x\\y", "é", "a b", "x" * 129]
)
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(InvalidInputError, match="not allowed"):
        check_id("recording_id", bad)
    with pytest.raises(InvalidInputError):
        flagged(0, camera_id=bad)


def test_safe_ids_pass():
    for good in ("rec-1", "2024.06.01_cam0", "A", "x" * 128):
        assert check_id("camera_id", good) == good


def test_frame_validation():
    with pytest.raises(InvalidInputError, match="image format"):
        flagged(0, image_format="gif")
    with pytest.raises(InvalidInputError, match="frame_index"):
        flagged(-1)
    with pytest.raises(InvalidInputError, match="heatmap"):
        flagged(0, heatmap=np.zeros(3, np.float32))
    with pytest.raises(InvalidInputError, match="heatmap"):
        flagged(0, heatmap=np.full((2, 2), np.nan))
    with pytest.raises(InvalidInputError, match="ContextFrame"):
        flagged(0, context=(b"bytes",))


def test_flagged_frame_is_payload_plus_decision():
    payload = FramePayload(image=b"i", image_format="png", model_version="v", model_hash="h",
                           metadata={"a": "1"}, heatmap=np.ones((2, 3)))  # fmt: skip
    frame = FlaggedFrame(recording_id="r", camera_id="c", frame_index=3, z=1.0, smoothed=0.5,
                         threshold=0.1, **payload.as_fields())  # fmt: skip
    assert isinstance(frame, FramePayload)
    assert frame.heatmap.dtype == np.float32 and frame.heatmap.shape == (2, 3)
    assert frame.metadata == {"a": "1"} and frame.metadata is not payload.metadata
    sidecar = frame.sidecar()
    assert sidecar["heatmap_shape"] == [2, 3] and "image" not in sidecar
    json.dumps(sidecar)  # JSON-ready


def test_directory_outbox_writes_image_and_sidecar(tmp_path):
    outbox = DirectoryOutbox(tmp_path / "out")
    assert isinstance(outbox, Outbox) and isinstance(MemoryOutbox(), Outbox)
    frame = flagged(42, metadata={"speed": "12.5"}, capture_time_ns=123)
    outbox.put(frame)
    path = tmp_path / "out" / "rec-1" / "front" / "000000000042.jpg"
    assert outbox.stored() == [path]
    assert path.read_bytes() == frame.image
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["frame_index"] == 42 and sidecar["metadata"] == {"speed": "12.5"}
    assert "image" not in sidecar and sidecar["capture_time_ns"] == 123
    assert not list(path.parent.glob("*.tmp"))  # no temporary files left behind
    assert outbox.earlier_frames("rec-1", "front") == [42]
    assert outbox.earlier_frames("rec-1", "rear") == []


def test_directory_outbox_from_threads(tmp_path):
    outbox = DirectoryOutbox(tmp_path)
    threads = [threading.Thread(target=outbox.put, args=(flagged(i),)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [int(p.name[:12]) for p in outbox.stored()] == list(range(16))


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    outbox = DirectoryOutbox(tmp_path)

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr("alscout.files.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        outbox.put(flagged(1))
    assert outbox.stored() == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_memory_outbox_earlier_frames():
    outbox = MemoryOutbox()
    for i in (7, 3, 7):
        outbox.put(flagged(i))
    outbox.put(flagged(5, camera_id="rear"))
    assert outbox.earlier_frames("rec-1", "front") == [3, 7]
