"""Sinks store objects whole and confirmed: a folder, and S3 through a real endpoint (moto)."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
from moto_s3 import make_bucket

from alscout.errors import ConfigError, SinkError
from alscout.storage.sinks import DirectorySink, S3Sink, Sink, check_key, open_sink

MIB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a", "a b", "a/", "é"])
def test_unsafe_keys_are_refused(bad):
    with pytest.raises(SinkError, match="not allowed"):
        check_key(bad)


def test_directory_sink(tmp_path):
    sink = DirectorySink(tmp_path / "sink")
    assert isinstance(sink, Sink)
    data = b"frame bytes"
    assert not sink.has("blobs/x.jpg", sha(data))
    sink.put("blobs/x.jpg", data, sha(data))
    sink.put("blobs/x.jpg", data, sha(data))  # again: harmless
    assert (tmp_path / "sink" / "blobs" / "x.jpg").read_bytes() == data
    assert sink.has("blobs/x.jpg", sha(data)) and not sink.has("blobs/x.jpg", sha(b"other"))
    with pytest.raises(SinkError, match="do not match"):
        sink.put("blobs/y.jpg", data, sha(b"other"))
    assert [p.name for p in (tmp_path / "sink").rglob("*") if p.is_file()] == ["x.jpg"]


def test_s3_sink_put_and_has(s3_endpoint):
    client = make_bucket(s3_endpoint, "small-objects")
    sink = open_sink(f"s3://small-objects/car7/?endpoint_url={s3_endpoint}&region=us-east-1")
    assert isinstance(sink, S3Sink) and isinstance(sink, Sink)
    data = b"\xff\xd8 a jpeg"
    assert not sink.has("blobs/a.jpg", sha(data))
    sink.put("blobs/a.jpg", data, sha(data))
    sink.put("blobs/a.jpg", data, sha(data))  # idempotent
    stored = client.get_object(Bucket="small-objects", Key="car7/blobs/a.jpg")
    assert stored["Body"].read() == data and stored["Metadata"] == {"sha256": sha(data)}
    assert sink.has("blobs/a.jpg", sha(data)) and not sink.has("blobs/a.jpg", sha(b"x"))
    with pytest.raises(SinkError, match="do not match"):
        sink.put("blobs/b.jpg", data, sha(b"other"))


@pytest.mark.slow
def test_s3_multipart_upload(s3_endpoint):
    client = make_bucket(s3_endpoint, "large-objects")
    sink = S3Sink("large-objects", endpoint_url=s3_endpoint, region="us-east-1",
                  multipart_bytes=5 * MIB, part_bytes=5 * MIB)  # fmt: skip
    data = os.urandom(11 * MIB)
    sink.put("blobs/big.raw", data, sha(data))
    stored = client.get_object(Bucket="large-objects", Key="blobs/big.raw")
    assert stored["ETag"].strip('"').endswith("-3")  # three parts
    assert sha(stored["Body"].read()) == sha(data) and sink.has("blobs/big.raw", sha(data))


class Tampering:
    """A boto3 client whose answers can be altered, to play a misbehaving store."""

    def __init__(self, client, *, etag=None, fail_part=None):
        self.client, self.etag, self.fail_part = client, etag, fail_part
        self.aborted = []

    def put_object(self, **kw):
        response = self.client.put_object(**kw)
        return response | ({"ETag": self.etag} if self.etag else {})

    def upload_part(self, **kw):
        if kw["PartNumber"] == self.fail_part:
            raise ConnectionResetError("link dropped")
        return self.client.upload_part(**kw)

    def abort_multipart_upload(self, **kw):
        self.aborted.append(kw["Key"])
        return self.client.abort_multipart_upload(**kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_s3_unconfirmed_bytes_are_an_error(s3_endpoint):
    client = make_bucket(s3_endpoint, "tampered")
    sink = S3Sink("tampered", client=Tampering(client, etag='"' + "0" * 32 + '"'))
    with pytest.raises(SinkError, match="confirmed other bytes"):
        sink.put("blobs/a.jpg", b"data", sha(b"data"))


@pytest.mark.slow
def test_s3_failed_multipart_is_aborted(s3_endpoint):
    client = make_bucket(s3_endpoint, "aborted")
    tampering = Tampering(client, fail_part=2)
    sink = S3Sink("aborted", multipart_bytes=5 * MIB, part_bytes=5 * MIB, client=tampering)
    data = os.urandom(11 * MIB)
    with pytest.raises(SinkError, match="link dropped"):
        sink.put("blobs/big.raw", data, sha(data))
    assert tampering.aborted == ["blobs/big.raw"]
    assert not client.list_multipart_uploads(Bucket="aborted").get("Uploads")
    assert not sink.has("blobs/big.raw", sha(data))


def test_s3_endpoint_down_is_a_sink_error(s3_endpoint):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = S3Sink("any", endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1",
                  timeout_s=2.0)  # fmt: skip
    with pytest.raises(SinkError):
        sink.put("blobs/a.jpg", b"data", sha(b"data"))
    with pytest.raises(SinkError):
        sink.has("blobs/a.jpg", sha(b"data"))


def test_open_sink_urls(tmp_path):
    assert isinstance(open_sink(str(tmp_path / "a")), DirectorySink)
    assert open_sink(f"file://{tmp_path}/b").root == tmp_path / "b"
    s3 = open_sink("s3://bucket-x/some/prefix/?region=eu-west-1&part_bytes=6291456")
    assert (s3.bucket, s3.prefix, s3.part_bytes) == ("bucket-x", "some/prefix", 6 * MIB)
    assert s3.object_key("blobs/a.jpg") == "some/prefix/blobs/a.jpg"
    with pytest.raises(ConfigError, match="use a folder"):
        open_sink("ftp://host/x")
    with pytest.raises(ConfigError, match="unknown parameters"):
        open_sink("s3://bucket-x/?colour=red")
    with pytest.raises(ConfigError, match="bucket"):
        open_sink("s3:///prefix")
    with pytest.raises(ConfigError, match="part_bytes"):
        open_sink("s3://bucket-x/?part_bytes=1024")
