"""Ingest from S3 sinks: uploads written by the real uploader into a real S3 API on
loopback (moto's server mode), read back by plain boto3, mixed with folder sinks."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import boto3
import cv2
import numpy as np
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto_s3 import make_bucket
from scenes import scene

from alscout.apps.cli import main as cli_main
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.outbox import FlaggedFrame
from alscout.server.uploader import Uploader
from alscout.storage.sinks import DirectorySink, open_sink
from alscout.trainer.fleet.ingest import ingest
from alscout.trainer.fleet.pool import LabelPool
from alscout.trainer.fleet.sources import S3Source, SinkUnavailableError, open_source


def s3_url(endpoint: str, bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}?endpoint_url={endpoint}&region=us-east-1"


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def upload_frames(tmp: Path, sink, recording: str, frames: list[tuple[int, bytes]]) -> None:
    """Flag ``frames`` (index, JPEG bytes) into a fresh outbox and let the uploader drain it."""
    outbox = DurableOutbox(tmp / f"outbox-{recording}-{frames[0][0]}")
    for index, data in frames:
        outbox.put(
            FlaggedFrame(
                recording_id=recording,
                camera_id="front",
                frame_index=index,
                image=data,
                image_format="jpeg",
                z=2.0 + index,
                smoothed=1.0 + index,
                threshold=0.5,
                model_version="v000003",
                model_hash="h",
            )
        )
    assert Uploader(outbox, sink).drain(threading.Event()) == len(frames)


class Recording:
    """A boto3 client that counts calls and can fail the first ``fail`` get_object calls."""

    def __init__(self, client, fail: int = 0, error: Exception | None = None):
        self.client, self.fail, self.error = client, fail, error
        self.gets: list[str] = []

    def get_object(self, **kw):
        self.gets.append(kw["Key"])
        if self.fail > 0:
            self.fail -= 1
            raise self.error or EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return self.client.get_object(**kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_s3_and_folder_vehicles_into_one_pool(s3_endpoint, tmp_path):
    make_bucket(s3_endpoint, "fleet")
    url = s3_url(s3_endpoint, "fleet", "car-1")
    upload_frames(tmp_path, open_sink(url), "rec-1", [(10, jpeg(scene(0))), (40, jpeg(scene(1)))])
    # car-2 (a folder sink) saw scene 0 too, recompressed, and a scene of its own
    folder = tmp_path / "car-2"
    upload_frames(
        tmp_path,
        DirectorySink(folder),
        "rec-2",
        [(5, jpeg(scene(0), quality=60)), (70, jpeg(scene(2)))],
    )
    pool = LabelPool(tmp_path / "pool")
    report = ingest(pool, [url, folder])
    assert report.rejected == []
    items = {(i.recording_id, i.frame_index): i for i in pool.items}
    assert sorted(items) == [("rec-1", 10), ("rec-1", 40), ("rec-2", 70)]
    first = items[("rec-1", 10)]
    assert (first.vehicle, first.model_version, first.z, first.smoothed) == (
        "car-1",
        "v000003",
        12.0,
        11.0,
    )
    assert first.source == "s3://fleet/car-1/frames/rec-1/front/000000000010.json"
    assert pool.image_path(first).read_bytes() == jpeg(scene(0))  # stored byte for byte
    assert first.sha256 == hashlib.sha256(jpeg(scene(0))).hexdigest()
    assert (first.width, first.height) == (128, 96)
    assert items[("rec-2", 70)].vehicle == "car-2"
    # the near-duplicate across an S3 vehicle and a folder vehicle is merged
    [dup] = report.duplicates
    assert (dup.recording_id, dup.frame_index, dup.vehicle) == ("rec-2", 5, "car-2")
    assert dup.duplicate_of == first.item_id and dup.distance <= 8  # other bytes, same scene

    # again: nothing added twice, and no image downloaded again
    source = open_source(url)
    counting = Recording(source.client)
    source.client = counting
    again = ingest(pool, [source, folder])
    assert (len(again.added), len(again.duplicates), again.already) == (0, 0, 4)
    assert all(key.endswith(".json") for key in counting.gets) and len(counting.gets) == 2
    assert LabelPool(tmp_path / "pool").items == pool.items


def test_corrupt_object_and_malformed_sidecar_are_rejected_by_name(s3_endpoint, tmp_path):
    client = make_bucket(s3_endpoint, "damaged")
    url = s3_url(s3_endpoint, "damaged", "fleet/car-3")
    sink = open_sink(url)
    upload_frames(tmp_path, sink, "rec", [(0, jpeg(scene(10)))])
    pool = LabelPool(tmp_path / "pool")
    assert len(ingest(pool, [url]).added) == 1
    upload_frames(tmp_path, sink, "rec", [(i, jpeg(scene(10 + i))) for i in (30, 60, 90, 120)])
    prefix = "fleet/car-3/frames/rec/front/"
    corrupt_record = json.loads(
        client.get_object(Bucket="damaged", Key=f"{prefix}000000000030.json")["Body"].read()
    )
    blob = "fleet/car-3/" + corrupt_record["keys"]["image"]
    data = client.get_object(Bucket="damaged", Key=blob)["Body"].read()
    client.put_object(Bucket="damaged", Key=blob, Body=data[:-10] + b"0123456789")
    client.put_object(Bucket="damaged", Key=f"{prefix}000000000060.json", Body=b"{oops")
    gone = json.loads(
        client.get_object(Bucket="damaged", Key=f"{prefix}000000000090.json")["Body"].read()
    )
    client.delete_object(Bucket="damaged", Key="fleet/car-3/" + gone["keys"]["image"])

    report = ingest(pool, [url])
    assert [i.frame_index for i in report.added] == [120]
    reasons = {r.source: r.reason for r in report.rejected}
    assert sorted(reasons) == [f"s3://damaged/{prefix}{i:012d}.json" for i in (30, 60, 90)]
    corrupt = reasons[f"s3://damaged/{prefix}000000000030.json"]
    assert "corrupt" in corrupt and f"s3://damaged/{blob}" in corrupt
    assert "unreadable upload sidecar" in reasons[f"s3://damaged/{prefix}000000000060.json"]
    assert "no such object" in reasons[f"s3://damaged/{prefix}000000000090.json"]
    reopened = LabelPool(tmp_path / "pool")
    assert sorted(i.frame_index for i in reopened.items) == [0, 120]  # nothing lost
    assert len(reopened.rejected) == 3
    ingest(pool, [url])  # rejected again, recorded once
    assert len(LabelPool(tmp_path / "pool").rejected) == 3


def test_transient_errors_are_retried_with_backoff(s3_endpoint, tmp_path):
    make_bucket(s3_endpoint, "flaky")
    url = s3_url(s3_endpoint, "flaky", "car-4")
    upload_frames(tmp_path, open_sink(url), "rec", [(0, jpeg(scene(20))), (50, jpeg(scene(21)))])
    waits: list[float] = []
    base = open_source(url)
    busy = ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject"
    )
    client = Recording(base.client, fail=3, error=busy)
    source = S3Source(
        "flaky", "car-4", client, page_size=1, attempts=4, backoff_base_s=0.5, sleep=waits.append
    )
    assert source.records() == [  # one key per page: the listing follows continuation tokens
        f"s3://flaky/car-4/frames/rec/front/{i:012d}.json" for i in (0, 50)
    ]
    report = ingest(LabelPool(tmp_path / "pool"), [source])
    assert len(report.added) == 2 and report.rejected == []
    assert len(waits) == 3 and all(0 <= w <= 0.5 * 2**i for i, w in enumerate(waits))

    # a store that keeps failing ends the ingest, naming the sink, writing nothing
    client = Recording(base.client, fail=10)
    source = S3Source("flaky", "car-4", client, attempts=3, sleep=waits.append)
    pool = LabelPool(tmp_path / "other-pool")
    with pytest.raises(SinkUnavailableError, match=r"s3://flaky/car-4: .*after 3 tries"):
        ingest(pool, [source])
    assert not pool.manifest_path.exists()


def test_missing_bucket_ends_with_one_line_naming_the_url(s3_endpoint, tmp_path, capsys):
    folder = tmp_path / "car-5"
    upload_frames(tmp_path, DirectorySink(folder), "rec", [(0, jpeg(scene(30)))])
    url = s3_url(s3_endpoint, "no-such-bucket", "car-6")
    pool = tmp_path / "pool"
    assert cli_main(["fleet", "ingest", "--pool", str(pool), str(folder), url]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "werkzeug" not in line]
    assert len(err) == 1 and err[0].startswith("alscout fleet ingest: s3://no-such-bucket/car-6: ")
    assert "NoSuchBucket" in err[0]
    assert not (pool / "manifest.json").exists()  # the folder's upload waits for a good run


def test_missing_credentials_end_with_an_error_naming_the_url(s3_endpoint, tmp_path, monkeypatch):
    make_bucket(s3_endpoint, "locked")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the credentials it found
    with pytest.raises(SinkUnavailableError, match=r"s3://locked/car-7: cannot list.*credentials"):
        ingest(LabelPool(tmp_path / "pool"), [s3_url(s3_endpoint, "locked", "car-7")])


def test_refused_credentials_are_not_retried(s3_endpoint, tmp_path):
    make_bucket(s3_endpoint, "refused")
    denied = ClientError(
        {"Error": {"Code": "InvalidAccessKeyId"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "GetObject",
    )
    url = s3_url(s3_endpoint, "refused", "car-8")
    upload_frames(tmp_path, open_sink(url), "rec", [(0, jpeg(scene(40)))])
    waits: list[float] = []
    client = Recording(open_source(url).client, fail=5, error=denied)
    source = S3Source("refused", "car-8", client, sleep=waits.append)
    with pytest.raises(
        SinkUnavailableError, match=r"s3://refused/car-8: cannot read.*InvalidAccess"
    ):
        ingest(LabelPool(tmp_path / "pool"), [source])
    assert waits == [] and len(client.gets) == 1


def test_open_source_forms(tmp_path, s3_endpoint):
    assert open_source(tmp_path).root == tmp_path
    assert open_source(f"file://{tmp_path}").root == tmp_path
    source = open_source(s3_url(s3_endpoint, "b", "some/car-9/"))
    assert (source.bucket, source.prefix, source.vehicle) == ("b", "some/car-9", "car-9")
    assert open_source(s3_url(s3_endpoint, "b", "")).vehicle == "b"
    assert not (tmp_path / "missing").exists()
    open_source(tmp_path / "missing")  # opening a folder source never creates the folder
    assert not (tmp_path / "missing").exists()
