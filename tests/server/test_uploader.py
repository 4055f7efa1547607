"""The uploader drains the outbox to a sink: confirmed, idempotent, capped, patient in outages."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from prometheus_client import CollectorRegistry

from alscout.errors import ConfigError, OutboxFullError, SinkError
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.outbox import ContextFrame, FlaggedFrame
from alscout.server.uploader import TokenBucket, Uploader, UploaderConfig, main
from alscout.storage.backoff import Backoff
from alscout.storage.sinks import DirectorySink, S3Sink

FAST = UploaderConfig(poll_s=0.01, backoff_base_s=0.005, backoff_cap_s=0.02)


def flagged(index: int, smoothed: float = 0.5, nbytes: int = 64, **kw) -> FlaggedFrame:
    head = b"frame %06d|" % index
    base = dict(recording_id="rec-1", camera_id="front", frame_index=index,
                image=head + b"x" * max(0, nbytes - len(head)), image_format="jpeg", z=0.5,
                smoothed=smoothed, threshold=0.1, model_version="v1",
                model_hash="ab" * 32)  # fmt: skip
    base.update(kw)
    return FlaggedFrame(**base)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


class CountingSink(DirectorySink):
    """A directory sink that counts puts per key and can be switched off."""

    def __init__(self, root):
        super().__init__(root)
        self.puts: dict[str, int] = {}
        self.down = False
        self.fail_records = False

    def put(self, key, data, sha256):
        if self.down or (self.fail_records and key.startswith("frames/")):
            raise SinkError("sink unreachable")
        self.puts[key] = self.puts.get(key, 0) + 1
        super().put(key, data, sha256)

    def has(self, key, sha256):
        if self.down:
            raise SinkError("sink unreachable")
        return super().has(key, sha256)


def test_config_validation():
    with pytest.raises(ConfigError, match="poll_s"):
        UploaderConfig(poll_s=-1)
    with pytest.raises(ConfigError, match="bandwidth"):
        UploaderConfig(bandwidth_bytes_per_s=0)
    with pytest.raises(ConfigError, match="batch"):
        UploaderConfig(batch=0)


def test_token_bucket_caps_the_average_rate():
    clock = FakeClock()
    bucket = TokenBucket(100.0, 50, clock=lambda: clock.now, sleep=clock.sleep)
    assert bucket.acquire(50) == 0.0  # a full bucket pays a burst at once
    assert bucket.acquire(1000) == pytest.approx(10.0)  # then 100 bytes/s, in 50-byte steps
    assert max(clock.slept) <= 0.5 + 1e-9
    clock.now += 100.0  # idle time refills no more than one burst
    assert bucket.acquire(50) == 0.0 and bucket.acquire(50) == pytest.approx(0.5)


def test_backoff_is_exponential_with_full_jitter():
    backoff = Backoff(0.5, 8.0, np.random.default_rng(0))
    delays = np.array([[backoff.delay(a) for a in range(8)] for _ in range(400)])
    bounds = np.minimum(8.0, 0.5 * 2.0 ** np.arange(8))
    assert np.all(delays >= 0) and np.all(delays <= bounds)
    np.testing.assert_allclose(delays.mean(axis=0), bounds / 2, rtol=0.15)  # uniform on [0, b]
    again = Backoff(0.5, 8.0, np.random.default_rng(0))
    assert again.delay(0) == delays[0, 0]  # seeded: reproducible


def test_upload_to_a_folder(tmp_path):
    registry = CollectorRegistry()
    heat = np.ones((2, 3), np.float32)
    with DurableOutbox(tmp_path / "outbox", 10**6) as outbox:
        outbox.put(flagged(5, smoothed=0.2))
        outbox.put(flagged(9, smoothed=0.9, heatmap=heat, context=(ContextFrame(8, b"c8", "png"),)))
        sink = CountingSink(tmp_path / "sink")
        uploader = Uploader(outbox, sink, FAST, registry=registry)
        assert uploader.drain() == 2
        assert outbox.pending() == [] and outbox.earlier_frames("rec-1", "front") == [5, 9]
        assert not list((tmp_path / "outbox" / "objects").glob("*/*"))  # files released
    # highest score first
    order = [k for k in sink.puts if k.startswith("frames/")]
    assert order == ["frames/rec-1/front/000000000009.json", "frames/rec-1/front/000000000005.json"]
    record = json.loads((tmp_path / "sink" / order[0]).read_text())
    assert record["frame_index"] == 9 and set(record["keys"]) == {"image", "heatmap", "context:8"}
    image = (tmp_path / "sink" / record["keys"]["image"]).read_bytes()
    assert image == flagged(9).image and record["keys"]["image"] == f"blobs/{sha(image)}.jpg"
    assert (tmp_path / "sink" / record["keys"]["context:8"]).read_bytes() == b"c8"
    sent = sum(p.stat().st_size for p in (tmp_path / "sink").rglob("*") if p.is_file())
    assert registry.get_sample_value("alscout_upload_frames_total") == 2
    assert registry.get_sample_value("alscout_upload_bytes_total") == sent
    assert registry.get_sample_value("alscout_upload_backlog_frames") == 0
    assert registry.get_sample_value("alscout_upload_failures_total") == 0


def test_crash_between_sink_and_index_repeats_onto_the_same_keys(tmp_path):
    with DurableOutbox(tmp_path / "outbox", 10**6) as outbox:
        outbox.put(flagged(1))
        outbox.put(flagged(2, image=flagged(1).image))  # same bytes, second frame
        sink = CountingSink(tmp_path / "sink")
        sink.fail_records = True  # files arrive, the record does not: frame stays pending
        uploader = Uploader(outbox, sink, FAST)
        with pytest.raises(SinkError):
            uploader.upload_frame(outbox.pending()[0])
        assert len(outbox.pending()) == 2
        sink.fail_records = False
        assert uploader.drain() == 2
    blobs = [k for k in sink.puts if k.startswith("blobs/")]
    assert len(blobs) == 1 and sink.puts[blobs[0]] == 1  # shared bytes travelled once
    assert sorted(k for k in sink.puts if k.startswith("frames/")) == [
        "frames/rec-1/front/000000000001.json",
        "frames/rec-1/front/000000000002.json",
    ]


def test_corrupt_file_is_not_uploaded(tmp_path):
    with DurableOutbox(tmp_path / "outbox", 10**6) as outbox:
        outbox.put(flagged(1))
        outbox.put(flagged(2))
        bad = outbox.pending()[0]
        outbox.blob_path(bad.blobs[0]).write_bytes(b"bit rot")
        sink = CountingSink(tmp_path / "sink")
        assert Uploader(outbox, sink, FAST).drain() == 1
        assert outbox.state_of(bad.id) == "corrupt"
    assert f"frames/rec-1/front/{bad.frame_index:012d}.json" not in sink.puts


def test_bandwidth_cap_paces_the_bytes(tmp_path):
    with DurableOutbox(tmp_path / "outbox", 10**6) as outbox:
        for i in range(4):
            outbox.put(flagged(i, nbytes=1000))
        sink = CountingSink(tmp_path / "sink")
        uploader = Uploader(
            outbox, sink, UploaderConfig(bandwidth_bytes_per_s=1000, burst_bytes=500)
        )
        clock = FakeClock()
        uploader.bucket = TokenBucket(1000, 500, clock=lambda: clock.now, sleep=clock.sleep)
        assert uploader.drain() == 4
    sent = sum(p.stat().st_size for p in (tmp_path / "sink").rglob("*") if p.is_file())
    assert sum(clock.slept) == pytest.approx((sent - 500) / 1000)


def test_outage_within_quota_then_drain(tmp_path):
    """The sink is down while frames keep coming: the quota holds, then everything arrives."""
    registry = CollectorRegistry()
    quota = 10 * 200
    with DurableOutbox(tmp_path / "outbox", quota, registry=registry) as outbox:
        sink = CountingSink(tmp_path / "sink")
        sink.down = True
        uploader = Uploader(outbox, sink, FAST, registry=registry, rng=np.random.default_rng(1))
        uploader.start()
        rng = np.random.default_rng(0)
        scores = {}
        for i in range(30):
            scores[i] = float(rng.random())
            try:
                outbox.put(flagged(i, smoothed=scores[i], nbytes=200))
            except OutboxFullError:
                scores.pop(i)  # refused: lower than all ten it would have to replace
            assert outbox.status().pending_bytes <= quota
            time.sleep(0.005)
        kept = {f.frame_index for f in outbox.pending()}
        assert len(kept) == 10
        # the ten best of those offered survive the outage
        assert kept == set(sorted(scores, key=scores.get)[-10:])
        evicted = registry.get_sample_value("alscout_outbox_evictions_total")
        assert evicted == len(scores) - 10 == outbox.status().counts["evicted"]
        assert registry.get_sample_value("alscout_upload_failures_total") > 0
        assert registry.get_sample_value("alscout_upload_retries_total") > 0
        sink.down = False
        deadline = time.monotonic() + 20
        while outbox.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        uploader.stop()
        assert outbox.pending() == []
        assert registry.get_sample_value("alscout_upload_frames_total") == 10
        assert registry.get_sample_value("alscout_outbox_evicted_frames") == evicted
    names = sorted(int(k[-17:-5]) for k in sink.puts if k.startswith("frames/"))
    assert names == sorted(kept)


@pytest.fixture
def moto_port():
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.slow
def test_s3_endpoint_outage_then_drain(tmp_path, moto_port):
    """A real S3 endpoint goes away and comes back on the same address; nothing is lost."""
    endpoint = f"http://127.0.0.1:{moto_port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="fleet-frames")
    registry = CollectorRegistry()
    with DurableOutbox(tmp_path / "outbox", 10**6) as outbox:
        sink = S3Sink("fleet-frames", "car7", endpoint_url=endpoint, region="us-east-1",
                      timeout_s=2.0)  # fmt: skip
        uploader = Uploader(outbox, sink, FAST, registry=registry)
        outbox.put(flagged(0))
        assert uploader.drain() == 1
        server.stop()  # outage
        for i in range(1, 6):
            outbox.put(flagged(i, smoothed=i / 10))
        stop = threading.Event()
        worker = threading.Thread(target=uploader.run, args=(stop,))
        worker.start()
        deadline = time.monotonic() + 10
        while registry.get_sample_value("alscout_upload_failures_total") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert len(outbox.pending()) == 5
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        server.start()  # back, with the bucket as it was
        deadline = time.monotonic() + 20
        while outbox.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        worker.join(10)
        assert outbox.pending() == []
    listed = client.list_objects_v2(Bucket="fleet-frames", Prefix="car7/frames/")["Contents"]
    assert sorted(o["Key"][-17:-5] for o in listed) == [f"{i:012d}" for i in range(6)]
    images = client.list_objects_v2(Bucket="fleet-frames", Prefix="car7/blobs/")["Contents"]
    assert len(images) == 6
    server.stop()


def test_uploader_process_entry_point(tmp_path):
    with DurableOutbox(tmp_path / "outbox", 10**6) as outbox:
        for i in range(3):
            outbox.put(flagged(i))
    assert (
        main(["--outbox", str(tmp_path / "outbox"), "--sink", str(tmp_path / "s"), "--once"]) == 0
    )
    assert len(list((tmp_path / "s" / "frames").rglob("*.json"))) == 3
    assert main(["--outbox", str(tmp_path / "outbox"), "--sink", "ftp://x", "--once"]) == 2


def test_alscout_outbox_upload(tmp_path):
    from alscout.apps.cli import main as alscout

    with DurableOutbox(tmp_path / "outbox", 10**6) as outbox:
        outbox.put(flagged(4))
    args = ["outbox", "upload", "--outbox", str(tmp_path / "outbox"), "--sink"]
    assert alscout([*args, f"file://{tmp_path}/s", "--once"]) == 0
    assert (tmp_path / "s" / "frames" / "rec-1" / "front" / "000000000004.json").exists()


# ------------------------------------------------------------------ parked frames (#13, D1)


def drain_within(uploader: Uploader, seconds: float = 10.0) -> tuple[int, bool]:
    """(frames uploaded, whether the drain had to be stopped) of a drain cut at ``seconds``."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        return uploader.drain(stop), stop.is_set()
    finally:
        timer.cancel()


def test_a_frame_whose_key_the_sink_refuses_is_parked_and_the_queue_moves_on(tmp_path, capsys):
    """A store holding a "." id (written before the door refused it) blocks nothing."""
    import sqlite3

    from alscout.apps.cli import main as alscout

    root = tmp_path / "outbox"
    with DurableOutbox(root, 10**6) as outbox:
        for i in range(4):
            outbox.put(flagged(i, smoothed=0.1 * (i + 1)))
        outbox.put(flagged(9, smoothed=0.99))  # first in line
    with sqlite3.connect(root / "index.sqlite3") as db:
        db.execute("UPDATE frames SET recording_id='.' WHERE frame_index=9")
    db.close()
    registry = CollectorRegistry()
    sink = CountingSink(tmp_path / "sink")
    with DurableOutbox(root) as outbox:
        uploader = Uploader(outbox, sink, FAST, registry=registry)
        assert drain_within(uploader) == (4, False)
        assert outbox.pending() == []
        (parked,) = outbox.frames("parked")
        assert (parked.recording_id, parked.frame_index) == (".", 9)
        assert "not allowed" in parked.reason
        assert registry.get_sample_value("alscout_upload_parked_frames_total") == 1
        assert registry.get_sample_value("alscout_outbox_parked_frames") == 1
        assert registry.get_sample_value("alscout_upload_frames_total") == 4
        assert outbox.status().counts["parked"] == 1
        assert outbox.status().parked_bytes == parked.nbytes
    assert sorted(k for k in sink.puts if k.startswith("frames/")) == [
        f"frames/rec-1/front/{i:012d}.json" for i in range(4)
    ]
    # parked frames stay on disk across a restart and are not tried again
    with DurableOutbox(root) as outbox:
        (again,) = outbox.frames("parked")
        assert again.reason == parked.reason
        assert outbox.read_blob(again.blobs[0]) == flagged(9).image
        assert outbox.check().ok and outbox.earlier_frames(".", "front") == [9]
        puts = dict(sink.puts)
        assert drain_within(Uploader(outbox, sink, FAST)) == (0, False)
        assert sink.puts == puts
    assert alscout(["outbox", "status", "--outbox", str(root)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["parked"] == 1 and status["parked_bytes"] == parked.nbytes
    assert status["parked"] == [
        {"id": parked.id, "recording_id": ".", "camera_id": "front", "frame_index": 9,
         "reason": parked.reason}
    ]  # fmt: skip


def test_a_permanent_sink_error_parks_a_transient_one_retries(tmp_path):
    from alscout.storage.sinks import SinkRefusedError

    class PickySink(CountingSink):
        """Refuses frame 2's record for good; frame 1's record fails twice, then passes."""

        def __init__(self, root):
            super().__init__(root)
            self.flaky = 2

        def put(self, key, data, sha256):
            if key.endswith("000000000002.json"):
                raise SinkRefusedError(f"{key}: object too large for this bucket")
            if key.endswith("000000000001.json") and self.flaky:
                self.flaky -= 1
                raise SinkError("connection reset")
            super().put(key, data, sha256)

    registry = CollectorRegistry()
    with DurableOutbox(tmp_path / "outbox", 10**6) as outbox:
        for i in range(4):
            outbox.put(flagged(i, smoothed=1.0 - 0.1 * i))
        sink = PickySink(tmp_path / "sink")
        uploader = Uploader(outbox, sink, FAST, registry=registry)
        assert drain_within(uploader) == (3, False)
        (parked,) = outbox.frames("parked")
        assert parked.frame_index == 2 and "too large" in parked.reason
        assert [f.frame_index for f in outbox.frames("uploaded")] == [0, 1, 3]
        assert registry.get_sample_value("alscout_upload_retries_total") == 2
        assert registry.get_sample_value("alscout_upload_parked_frames_total") == 1
