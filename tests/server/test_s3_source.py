"""Recordings in S3 (``s3://bucket/key``) read through the local readers (moto on loopback)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from moto_s3 import make_bucket
from recordings import write_folder, write_video

from alscout.errors import DataError
from alscout.server.cli_stream import default_ids
from alscout.server.sources import open_source


def frames_of(spec: str) -> list[tuple[int, bytes, str, dict]]:
    with open_source(spec) as source:
        return [(f.frame_index, f.image, f.encoding, f.metadata) for f in source]


@pytest.fixture(scope="module")
def bucket(s3_endpoint, tmp_path_factory):
    client = make_bucket(s3_endpoint, "drives")
    root = tmp_path_factory.mktemp("local")
    video = write_video(root / "drive-1.avi", 12, seed=4)
    folder = write_folder(root / "drive-2", 5, seed=5)
    client.upload_file(str(video), "drives", "2026/drive-1.avi")
    for image in sorted(folder.iterdir()):
        client.upload_file(str(image), "drives", f"2026/drive-2/{image.name}")
    client.put_object(Bucket="drives", Key="2026/drive-2/notes.txt", Body=b"not an image")
    return s3_endpoint, video, folder


def test_an_object_is_read_as_its_local_file(bucket):
    endpoint, video, _ = bucket
    url = f"s3://drives/2026/drive-1.avi?endpoint_url={endpoint}"
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("alscout-s3-*"))
    with open_source(url) as source:
        assert source.name == "s3://drives/2026/drive-1.avi" and source.total == 12
        (copy,) = set(temp.glob("alscout-s3-*")) - before
        assert (copy / "drive-1.avi").read_bytes() == video.read_bytes()
    assert not copy.exists()  # the local copy goes with the source
    assert frames_of(url) == frames_of(str(video))
    assert default_ids(url, None) == ("drive-1", "cam0")


def test_a_prefix_is_read_as_an_image_folder(bucket):
    endpoint, _, folder = bucket
    url = f"s3://drives/2026/drive-2/?endpoint_url={endpoint}"
    assert frames_of(url) == frames_of(str(folder))
    assert default_ids(url, None)[0] == "drive-2"


def test_nothing_there_is_a_data_error_naming_the_url(bucket):
    endpoint, _, _ = bucket
    with pytest.raises(DataError, match="s3://drives/2025/none: no such object"):
        open_source(f"s3://drives/2025/none?endpoint_url={endpoint}")
