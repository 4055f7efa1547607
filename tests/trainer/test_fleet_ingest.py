from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from scenes import scene

from alscout.errors import ConfigError, DataError
from alscout.trainer.fleet.ingest import IngestConfig, find_uploads, ingest, read_upload
from alscout.trainer.fleet.pool import LabelPool


def upload(
    sink: Path,
    recording: str,
    frame: int,
    image: np.ndarray,
    fmt: str = "jpeg",
    camera: str = "front",
    quality: int = 90,
    **extra,
) -> Path:
    """Write one upload as the vehicle side does: image, then its sidecar."""
    folder = sink / recording / camera
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"jpeg": ".jpg", "png": ".png", "raw": ".raw"}[fmt]
    path = folder / f"{frame:012d}{suffix}"
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if fmt == "raw":
        path.write_bytes(image.tobytes())
        extra = {"width": image.shape[1], "height": image.shape[0], "pixel_format": "rgb8", **extra}
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
        path.write_bytes(cv2.imencode(suffix, bgr, params)[1].tobytes())
    sidecar = {
        "recording_id": recording,
        "camera_id": camera,
        "frame_index": frame,
        "image_format": fmt,
        "z": 1.5,
        "smoothed": 1.25,
        "threshold": 1.0,
        "model_version": "v1",
        "model_hash": "abc",
        "metadata": {},
        **extra,
    }
    side = path.with_name(path.name + ".json")
    side.write_text(json.dumps(sidecar))
    return side


def test_ingest_adds_frames_and_drops_cross_vehicle_duplicates(tmp_path):
    car_a, car_b = tmp_path / "car-a", tmp_path / "car-b"
    for i in range(4):
        upload(car_a, "rec-a", 10 * i, scene(i))
    # car b saw scenes 1 and 2 too (other compression), plus a new one, as PNG and raw
    upload(car_b, "rec-b", 5, scene(1), quality=60)
    upload(car_b, "rec-b", 40, scene(2), fmt="png")
    upload(car_b, "rec-b", 80, scene(9), fmt="raw")
    pool = LabelPool(tmp_path / "pool")
    report = ingest(pool, [car_a, car_b])
    assert len(report.added) == 5
    assert len(report.duplicates) == 2
    assert report.rejected == []
    dup_of = {d.frame_index: d.duplicate_of for d in report.duplicates}
    by_frame = {(item.recording_id, item.frame_index): item.item_id for item in pool.items}
    assert dup_of == {5: by_frame[("rec-a", 10)], 40: by_frame[("rec-a", 20)]}
    assert all(d.vehicle == "car-b" for d in report.duplicates)
    raw_item = next(item for item in pool.items if item.frame_index == 80)
    assert raw_item.file.endswith(".png") and raw_item.vehicle == "car-b"
    stored = cv2.imread(str(pool.image_path(raw_item)))[:, :, ::-1]
    np.testing.assert_array_equal(stored, scene(9))  # raw frames are kept lossless
    assert (raw_item.width, raw_item.height) == (128, 96)
    assert [item.item_id for item in pool.items] == [1, 2, 3, 4, 5]
    assert pool.unlabeled() == pool.items and pool.labeled() == []

    # ingesting again is a no-op; a reopened pool sees the same manifest
    again = ingest(pool, [car_a, car_b])
    assert (len(again.added), len(again.duplicates), again.already) == (0, 0, 7)
    reopened = LabelPool(tmp_path / "pool")
    assert reopened.items == pool.items
    assert reopened.duplicates == pool.duplicates


def test_dedup_can_be_turned_off(tmp_path):
    upload(tmp_path / "a", "r1", 0, scene(3))
    upload(tmp_path / "b", "r2", 0, scene(3))
    pool = LabelPool(tmp_path / "pool")
    report = ingest(pool, [tmp_path / "a", tmp_path / "b"], IngestConfig(dedup=False))
    assert len(report.added) == 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda side: side.write_text("{oops"), "unreadable upload sidecar"),
        (lambda side: side.write_text(json.dumps({"camera_id": "c"})), "lacks recording_id"),
        (
            lambda side: side.write_text(
                json.dumps({**json.loads(side.read_text()), "frame_index": "7"})
            ),
            "must be an integer",
        ),
        (
            lambda side: side.write_text(
                json.dumps({**json.loads(side.read_text()), "recording_id": "../x"})
            ),
            "recording_id",
        ),
        (
            lambda side: side.with_name(side.name.removesuffix(".json")).write_bytes(b"not jpeg"),
            "not a decodable jpeg",
        ),
    ],
)
def test_malformed_upload_is_rejected_by_name_and_the_rest_kept(tmp_path, damage, message):
    sink = tmp_path / "car"
    upload(sink, "rec", 0, scene(0))
    pool = LabelPool(tmp_path / "pool")
    assert len(ingest(pool, [sink]).added) == 1
    bad = upload(sink, "rec", 30, scene(5))
    upload(sink, "rec", 60, scene(6))
    damage(bad)
    report = ingest(pool, [sink])
    assert len(report.added) == 1
    assert [r.source for r in report.rejected] == [str(bad)]
    assert message in report.rejected[0].reason
    assert str(bad.parent) in report.rejected[0].reason  # the message names the file
    reopened = LabelPool(tmp_path / "pool")
    assert sorted(i.frame_index for i in reopened.items) == [0, 60]  # nothing lost
    assert [r.source for r in reopened.rejected] == [str(bad)]
    ingest(pool, [sink])  # rejected again, recorded once
    assert len(LabelPool(tmp_path / "pool").rejected) == 1


def test_read_upload_checks_format_against_suffix(tmp_path):
    side = upload(tmp_path, "rec", 0, scene(0), fmt="png")
    side.write_text(json.dumps({**json.loads(side.read_text()), "image_format": "jpeg"}))
    with pytest.raises(DataError, match="does not match"):
        read_upload(side)


def test_find_uploads_skips_incomplete_and_temporary_files(tmp_path):
    side = upload(tmp_path, "rec", 0, scene(0))
    (side.parent / ".000000000001.jpg.json.tmp").write_text("{}")
    (side.parent / ".hidden.jpg.json").write_text("{}")
    (side.parent / "heatmap.npy.json").write_text("{}")
    assert find_uploads(tmp_path) == [side]
    with pytest.raises(DataError, match="not found"):
        find_uploads(tmp_path / "missing")
    with pytest.raises(ConfigError, match="max_distance"):
        IngestConfig(max_distance=40)


def test_failed_ingest_writes_nothing(tmp_path, monkeypatch):
    sink = tmp_path / "car"
    upload(sink, "rec", 0, scene(0))
    pool = LabelPool(tmp_path / "pool")
    ingest(pool, [sink])
    before = pool.manifest_path.read_bytes()
    upload(sink, "rec", 40, scene(4))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(LabelPool, "write_image", crash)
    with pytest.raises(OSError, match="disk full"):
        ingest(pool, [sink])
    assert pool.manifest_path.read_bytes() == before
    assert len(LabelPool(tmp_path / "pool").items) == 1


def _ingest_in_process(pool_root: str, sink: str) -> None:
    ingest(LabelPool(pool_root), [sink], IngestConfig(dedup=False))


def test_concurrent_ingests_lose_nothing(tmp_path):
    sinks = []
    for v in range(3):
        sink = tmp_path / f"car{v}"
        for i in range(3):
            upload(sink, f"rec{v}", i * 20, scene(100 + 10 * v + i))
        sinks.append(sink)
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=_ingest_in_process, args=(str(tmp_path / "pool"), str(s)))
        for s in sinks
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    pool = LabelPool(tmp_path / "pool")
    assert len(pool.items) == 9
    assert len({item.item_id for item in pool.items}) == 9


def sink_upload(sink: Path, recording: str, frame: int, image: np.ndarray, **extra) -> Path:
    """The uploader's layout: a content-addressed blob, then the frame's record."""
    data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    name = f"{hashlib.sha256(data).hexdigest()}.jpg"
    (sink / "blobs").mkdir(parents=True, exist_ok=True)
    (sink / "blobs" / name).write_bytes(data)
    record = {
        "recording_id": recording,
        "camera_id": "cam0",
        "frame_index": frame,
        "image_format": "jpeg",
        "z": 2.0,
        "smoothed": 1.5,
        "model_version": "v7",
        "metadata": {"vehicle_id": "truck-9"},
        "files": {"image": name},
        "keys": {"image": f"blobs/{name}"},
        **extra,
    }
    path = sink / "frames" / recording / "cam0" / f"{frame:012d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_uploader_sink_layout(tmp_path):
    sink = tmp_path / "sink"
    sink_upload(sink, "rec", 0, scene(0))
    sink_upload(sink, "rec", 30, scene(1))
    corrupt = sink_upload(sink, "rec", 60, scene(2))
    blob = sink / json.loads(corrupt.read_text())["keys"]["image"]
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    escaping = sink_upload(sink, "rec", 90, scene(3), keys={"image": "../outside.jpg"})
    pool = LabelPool(tmp_path / "pool")
    report = ingest(pool, [sink])
    assert sorted(i.frame_index for i in report.added) == [0, 30]
    assert {i.vehicle for i in report.added} == {"truck-9"}  # from the record's metadata
    assert {i.model_version for i in report.added} == {"v7"}
    reasons = {r.source: r.reason for r in report.rejected}
    assert "corrupt" in reasons[str(corrupt)] and str(blob) in reasons[str(corrupt)]
    assert "safe object key" in reasons[str(escaping)]
    assert find_uploads(sink) == sorted((sink / "frames").rglob("*.json"))


def test_ingest_what_the_real_uploader_wrote(tmp_path):
    from alscout.server.durable_outbox import DurableOutbox
    from alscout.server.outbox import FlaggedFrame
    from alscout.server.uploader import Uploader
    from alscout.storage.sinks import DirectorySink

    outbox = DurableOutbox(tmp_path / "outbox")
    # rec-2's frame 70 repeats rec-1's frame 10
    for recording, frame, seed in (("rec-1", 10, 0), ("rec-1", 40, 1), ("rec-2", 70, 0)):
        data = cv2.imencode(".png", cv2.cvtColor(scene(seed), cv2.COLOR_RGB2BGR))[1].tobytes()
        outbox.put(
            FlaggedFrame(
                recording_id=recording,
                camera_id="front",
                frame_index=frame,
                image=data,
                image_format="png",
                z=1.0,
                smoothed=1.0 + frame,
                threshold=0.5,
                model_version="v000001",
                model_hash="h",
            )
        )
    sink = tmp_path / "car-7"
    uploader = Uploader(outbox, DirectorySink(sink))
    assert uploader.drain(threading.Event()) == 3
    pool = LabelPool(tmp_path / "pool")
    report = ingest(pool, [sink])
    assert report.rejected == []
    assert sorted(i.frame_index for i in report.added) == [10, 40]
    assert [(d.frame_index, d.distance) for d in report.duplicates] == [(70, 0)]
    assert {i.vehicle for i in report.added} == {"car-7"}


def test_frames_of_one_recording_are_never_duplicates(tmp_path):
    upload(tmp_path / "car", "rec", 0, scene(3))
    upload(tmp_path / "car", "rec", 40, scene(3), quality=70)  # the car stood still
    upload(tmp_path / "car", "rec-again", 0, scene(3))  # the same place, another drive
    report = ingest(LabelPool(tmp_path / "pool"), [tmp_path / "car"])
    assert sorted((i.recording_id, i.frame_index) for i in report.added) == [
        ("rec", 0),
        ("rec", 40),
    ]
    assert [(d.recording_id, d.duplicate_of) for d in report.duplicates] == [("rec-again", 1)]
