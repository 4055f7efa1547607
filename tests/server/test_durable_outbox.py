"""The durable outbox: whole frames or nothing after a crash, a quota, the upload record."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
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
        assert stored.nbytes == sum(ref.nbytes for ref in stored.blobs)
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
