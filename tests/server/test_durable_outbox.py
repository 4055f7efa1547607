"""The durable outbox: whole frames or nothing after a crash, a quota, the upload record."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import threading

import numpy as np
import pytest
from outbox_frames import flagged, sized
from prometheus_client import CollectorRegistry

from alscout.errors import ConfigError, DataError, OutboxFullError
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.outbox import ContextFrame, Outbox


def test_durable_round_trip_with_heatmap_and_context(tmp_path):
    heat = np.arange(12, dtype=np.float32).reshape(3, 4)
    context = (ContextFrame(9, b"ctx 9", "png"), ContextFrame(11, b"raw", "raw", 2, 1, "gray8"))
    frame = flagged(10, heatmap=heat, context=context, metadata={"gps": "1,2"})
    with DurableOutbox(tmp_path, 10_000) as outbox:
        assert isinstance(outbox, Outbox)
        outbox.put(frame)
        (stored,) = outbox.pending()
        roles = {ref.role: ref for ref in stored.blobs}
        assert set(roles) == {"image", "heatmap", "context:9", "context:11"}
        assert outbox.read_blob(roles["image"]) == frame.image
        assert outbox.read_blob(roles["context:11"]) == b"raw"
        loaded = np.load(io.BytesIO(outbox.read_blob(roles["heatmap"])))
        np.testing.assert_array_equal(loaded, heat)
        assert stored.record["metadata"] == {"gps": "1,2"}
        assert stored.record["files"]["image"] == hashlib.sha256(frame.image).hexdigest() + ".jpg"
        # files plus the UTF-8 bytes of the metadata's keys and values
        assert stored.nbytes == sum(ref.nbytes for ref in stored.blobs) + len("gps" + "1,2")
        assert outbox.check().ok
    with DurableOutbox(tmp_path, 10_000) as reopened:  # durable across instances
        assert [f.frame_index for f in reopened.pending()] == [10]
        assert reopened.earlier_frames("rec-1", "front") == [10]


def test_durable_put_is_idempotent_and_upload_releases_files(tmp_path):
    with DurableOutbox(tmp_path, 10_000) as outbox:
        outbox.put(flagged(1))
        outbox.put(flagged(1, image=b"another model's idea"))  # same frame: kept as it was
        (stored,) = outbox.pending()
        path = outbox.blob_path(stored.blobs[0])
        assert path.read_bytes() == flagged(1).image
        outbox.mark_uploaded(stored.id)
        assert not path.exists() and outbox.pending() == []
        # uploaded frames still count for the dt2 rule and are never stored again
        assert outbox.earlier_frames("rec-1", "front") == [1]
        outbox.put(flagged(1))
        assert outbox.pending() == [] and outbox.status().counts["uploaded"] == 1


def test_shared_content_survives_until_the_last_reference_goes(tmp_path):
    with DurableOutbox(tmp_path, 10_000) as outbox:
        outbox.put(flagged(1, image=b"same"))
        outbox.put(flagged(2, image=b"same", recording_id="rec-2"))
        first, second = outbox.pending()
        outbox.mark_uploaded(first.id)
        assert outbox.read_blob(second.blobs[0]) == b"same"
        outbox.mark_uploaded(second.id)
        assert not list((tmp_path / "objects").glob("*/*"))


def test_quota_evicts_lowest_scores_first_and_counts_them(tmp_path):
    registry = CollectorRegistry()
    with DurableOutbox(tmp_path, 1000, registry=registry) as outbox:
        for i, score in enumerate([0.5, 0.2, 0.9, 0.3]):
            outbox.put(sized(i, 250, score))
        assert outbox.status().pending_bytes == 1000
        outbox.put(sized(4, 400, 0.6))  # needs 400 bytes: evicts 0.2 then 0.3
        assert sorted(f.frame_index for f in outbox.pending()) == [0, 2, 4]
        assert sorted(f.frame_index for f in outbox.frames("evicted")) == [1, 3]
        assert registry.get_sample_value("alscout_outbox_evictions_total") == 2
        assert outbox.status().pending_bytes <= 1000
        # evicted frames may be flagged again (they never left the car)
        assert outbox.earlier_frames("rec-1", "front") == [0, 2, 4]
        with pytest.raises(OutboxFullError, match="taken by frames"):
            outbox.put(sized(5, 500, 0.1))  # lower than everything stored: refused
        with pytest.raises(OutboxFullError, match="whole quota"):
            outbox.put(sized(6, 2000, 9.0))
        assert registry.get_sample_value("alscout_outbox_evictions_total") == 2
        assert sorted(f.frame_index for f in outbox.pending()) == [0, 2, 4]
        outbox.put(sized(1, 250, 0.55))  # an evicted frame comes back, scoring higher than 0
        assert sorted(f.frame_index for f in outbox.pending()) == [1, 2, 4]
        assert registry.get_sample_value("alscout_outbox_evictions_total") == 3
        report = outbox.check()
        assert report.ok and report.orphans == 0, report


def test_eviction_of_a_frame_being_uploaded_still_records_the_upload(tmp_path):
    with DurableOutbox(tmp_path, 300) as outbox:
        outbox.put(sized(0, 200, 0.1))
        (stored,) = outbox.pending()
        outbox.put(sized(1, 200, 0.9))  # evicts frame 0 while "the uploader" holds it
        outbox.mark_uploaded(stored.id)
        assert outbox.state_of(stored.id) == "uploaded"
        assert outbox.earlier_frames("rec-1", "front") == [0, 1]


def test_crash_leftovers_are_removed_on_open(tmp_path):
    with DurableOutbox(tmp_path, 10_000) as outbox:
        outbox.put(flagged(1))
    (tmp_path / "tmp" / "half-written.tmp").write_bytes(b"half")
    orphan = tmp_path / "objects" / "ee" / ("ee" * 32 + ".jpg")
    orphan.parent.mkdir()
    orphan.write_bytes(b"written, never committed")
    with DurableOutbox(tmp_path, 10_000) as outbox:
        assert not orphan.exists() and not list((tmp_path / "tmp").iterdir())
        assert len(outbox.pending()) == 1 and outbox.check().ok


def test_check_finds_and_repairs_corrupt_files(tmp_path):
    with DurableOutbox(tmp_path, 10_000) as outbox:
        outbox.put(flagged(1))
        outbox.put(flagged(2))
        first, second = outbox.pending()
        outbox.blob_path(first.blobs[0]).write_bytes(b"bit rot")
        outbox.blob_path(second.blobs[0]).unlink()
        with pytest.raises(DataError, match="does not match"):
            outbox.read_blob(first.blobs[0])
        report = outbox.check()
        assert not report.ok and len(report.problems) == 2
        assert any("missing" in p for p in report.problems)
        outbox.check(repair=True)
        assert outbox.pending() == [] and outbox.status().counts["corrupt"] == 2
        assert outbox.check().ok


def test_failed_commit_leaves_no_row_and_no_file(tmp_path, monkeypatch):
    with DurableOutbox(tmp_path, 10_000) as outbox:
        real = outbox._db

        class FailingCommit:
            in_transaction = property(lambda self: real.in_transaction)

            def execute(self, sql, *args):
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("disk I/O error")
                return real.execute(sql, *args)

            def __getattr__(self, name):
                return getattr(real, name)

        monkeypatch.setattr(outbox, "_db", FailingCommit())
        with pytest.raises(sqlite3.OperationalError):
            outbox.put(flagged(1))
        monkeypatch.setattr(outbox, "_db", real)
        assert outbox.pending() == [] and not list((tmp_path / "objects").glob("*/*"))


def test_durable_from_threads_and_two_instances(tmp_path):
    first, second = DurableOutbox(tmp_path, 10**6), DurableOutbox(tmp_path, 10**6)
    threads = [
        threading.Thread(target=(first, second)[i % 2].put, args=(flagged(i),)) for i in range(24)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.earlier_frames("rec-1", "front") == list(range(24))
    assert first.check().ok
    first.close()
    second.close()


def test_bad_configuration_and_bad_index(tmp_path):
    with pytest.raises(ConfigError, match="quota_bytes"):
        DurableOutbox(tmp_path / "a", 0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match=r"index\.sqlite3"):
        DurableOutbox(tmp_path / "b")


def test_quota_is_remembered_for_readers(tmp_path):
    DurableOutbox(tmp_path, 12345).close()
    with DurableOutbox(tmp_path) as reader:  # e.g. the uploader process
        assert reader.quota_bytes == 12345 and reader.status().quota_bytes == 12345


def test_alscout_outbox_status_and_check(tmp_path, capsys):
    from alscout.apps.cli import main

    with DurableOutbox(tmp_path, 10_000) as outbox:
        outbox.put(flagged(1))
        outbox.put(flagged(2))
    assert main(["outbox", "status", "--outbox", str(tmp_path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["pending"] == 2 and status["quota_bytes"] == 10_000
    assert main(["outbox", "check", "--outbox", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    next((tmp_path / "objects").glob("*/*")).write_bytes(b"bit rot")
    assert main(["outbox", "check", "--outbox", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and "does not match" in report["problems"][0]
    assert main(["outbox", "check", "--outbox", str(tmp_path), "--repair"]) == 1
    capsys.readouterr()
    assert main(["outbox", "check", "--outbox", str(tmp_path)]) == 0


# ------------------------------------------------------------------ parked frames (#13, D1)


def test_a_parked_frame_keeps_its_files_its_reason_and_its_place_in_the_quota(tmp_path):
    with DurableOutbox(tmp_path, 1000) as outbox:
        outbox.put(sized(0, 250, 0.5))
        outbox.put(sized(1, 250, 0.6))
        first = outbox.pending()[1]
        outbox.mark_parked(first.id, "object key 'frames/./front/0.json' is not allowed")
        assert [f.frame_index for f in outbox.pending()] == [1]
        (parked,) = outbox.frames("parked")
        assert parked.reason == "object key 'frames/./front/0.json' is not allowed"
        status = outbox.status()
        assert status.counts["parked"] == 1
        assert (status.pending_bytes, status.parked_bytes) == (250, 250)
        # still stored: the dt2 rule sees it, the same frame is not stored twice
        assert outbox.earlier_frames("rec-1", "front") == [0, 1]
        outbox.put(sized(0, 250, 0.9))
        assert outbox.state_of(parked.id) == "parked"
        # parked bytes are on disk: the quota counts them
        with pytest.raises(OutboxFullError, match="taken by frames"):
            outbox.put(sized(2, 600, 0.1))
        outbox.mark_uploaded(first.id)  # only pending frames are uploaded
        assert outbox.state_of(parked.id) == "parked"
    with DurableOutbox(tmp_path) as reopened:  # files survive the orphan sweep of an open
        (again,) = reopened.frames("parked")
        assert again.reason == parked.reason
        assert reopened.read_blob(again.blobs[0]) == sized(0, 250, 0.5).image
        report = reopened.check()
        assert report.ok and report.orphans == 0 and report.frames_checked == 2


#: the index of a store written before parked frames existed
_OLD_SCHEMA = """
CREATE TABLE frames (
    id INTEGER PRIMARY KEY,
    recording_id TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'uploaded', 'evicted', 'corrupt')),
    smoothed REAL NOT NULL,
    nbytes INTEGER NOT NULL,
    record TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    UNIQUE (recording_id, camera_id, frame_index)
);
CREATE INDEX frames_by_state ON frames (state, smoothed);
CREATE TABLE blobs (
    frame_id INTEGER NOT NULL REFERENCES frames (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    suffix TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    PRIMARY KEY (frame_id, role)
);
CREATE INDEX blobs_by_hash ON blobs (sha256, suffix);
CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def test_an_index_from_before_parked_frames_is_migrated(tmp_path):
    frame = flagged(3)
    sha = hashlib.sha256(frame.image).hexdigest()
    (tmp_path / "objects" / sha[:2]).mkdir(parents=True)
    (tmp_path / "objects" / sha[:2] / f"{sha}.jpg").write_bytes(frame.image)
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    db.executescript(_OLD_SCHEMA)
    record = json.dumps(frame.sidecar() | {"files": {"image": f"{sha}.jpg"}})
    with db:
        db.execute(
            "INSERT INTO frames VALUES (7, 'rec-1', 'front', 3, 'pending', 0.4, ?, ?, 1, 1)",
            (len(frame.image), record),
        )
        db.execute("INSERT INTO blobs VALUES (7, 'image', ?, '.jpg', ?)", (sha, len(frame.image)))
        db.execute("INSERT INTO settings VALUES ('quota_bytes', '5000')")
    db.close()
    with DurableOutbox(tmp_path) as outbox:
        (stored,) = outbox.pending()
        assert (stored.id, stored.frame_index, outbox.quota_bytes) == (7, 3, 5000)
        assert outbox.read_blob(stored.blobs[0]) == frame.image
        outbox.mark_parked(stored.id, "refused")
        assert outbox.frames("parked")[0].reason == "refused"
        outbox.put(flagged(4))
        assert outbox.check().ok
    with DurableOutbox(tmp_path) as outbox:  # a migrated store opens as it is
        assert outbox.status().counts == {
            "pending": 1, "uploaded": 0, "evicted": 0, "corrupt": 0, "parked": 1
        }  # fmt: skip


# ------------------------------------------------------------------ metadata in the quota (D3)


def test_metadata_counts_in_the_quota_and_the_pending_bytes(tmp_path, capsys):
    from alscout.apps.cli import main

    meta = {"note": "é" * 100}  # 4 + 200 bytes of UTF-8
    with DurableOutbox(tmp_path, 1000) as outbox:
        outbox.put(sized(0, 250, 0.5, metadata=meta))
        (stored,) = outbox.pending()
        assert stored.nbytes == 250 + 204 and outbox.status().pending_bytes == 454
        with pytest.raises(OutboxFullError, match="whole quota"):
            outbox.put(sized(1, 100, 0.9, metadata={"k": "v" * 1000}))
        outbox.put(sized(2, 500, 0.9))  # 454 + 500 fit
        with pytest.raises(OutboxFullError, match="taken by frames"):
            outbox.put(sized(3, 10, 0.1, metadata={"k": "v" * 100}))
    assert main(["outbox", "status", "--outbox", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["pending_bytes"] == 954


# ------------------------------------------------------------------ permissions (D11)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_outbox_is_private_whatever_the_umask(tmp_path):
    root = tmp_path / "outbox"
    saved = os.umask(0)
    try:
        with DurableOutbox(root, 10_000) as outbox:
            outbox.put(flagged(1))
            (stored,) = outbox.pending()
            image = outbox.blob_path(stored.blobs[0])
            files = [root / n for n in ("index.sqlite3", "index.sqlite3-wal",
                                        "index.sqlite3-shm", "lock")] + [image]  # fmt: skip
            folders = [root, root / "objects", root / "tmp", image.parent]
            assert {str(p): _mode(p) for p in files} == {str(p): 0o600 for p in files}
            assert {str(p): _mode(p) for p in folders} == {str(p): 0o700 for p in folders}
        # a store made loose (by an older version) is tightened when opened
        for path in (root, root / "index.sqlite3", root / "lock"):
            path.chmod(0o755)
        with DurableOutbox(root) as outbox:
            assert _mode(root) == 0o700
            assert _mode(root / "index.sqlite3") == _mode(root / "lock") == 0o600
            assert _mode(root / "index.sqlite3-wal") == 0o600
    finally:
        os.umask(saved)
