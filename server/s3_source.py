"""Recordings kept in S3-compatible storage: ``s3://bucket/key`` read through a local copy.

A URL naming one object (a video or an ``.mcap`` file) is downloaded into a private
temporary folder and read by the local reader of its kind; a URL naming a prefix
(``s3://bucket/drives/run-7/``) is a folder of images: every JPEG, PNG or BMP object
directly under it is downloaded and read as an image folder, in natural name order.
The copy is removed when the source is closed. Endpoint, region and credentials are
the sinks' (:func:`alscout.storage.sinks.open_sink`): ``?endpoint_url=...&region=...``
in the URL, ``AWS_ENDPOINT_URL``, and boto3's usual credential chain.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from alscout.errors import DataError
from alscout.server.sources import FrameSource, SourceFrame

__all__ = ["S3RecordingSource", "split_s3_url", "IMAGE_OBJECT_SUFFIXES"]

log = logging.getLogger(__name__)

#: suffixes of the objects an S3 prefix is read as images from
IMAGE_OBJECT_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def split_s3_url(url: str) -> tuple[str, str]:
    """(``s3://bucket/key`` without its query, the query with its ``?`` or "")."""
    base, sep, query = url.partition("?")
    return base, sep + query


class S3RecordingSource(FrameSource):
    """The frames of the recording at ``url``, read from a local copy (see the module).

    ``open_local(path)`` opens the copy with the local reader (a FrameSource).
    """

    def __init__(self, url: str, open_local: Callable[[Path], FrameSource]) -> None:
        from alscout.storage.sinks import S3Sink, open_sink

        base, _ = split_s3_url(url)
        sink = open_sink(url)
        assert isinstance(sink, S3Sink)  # open_sink returns one for every s3:// URL
        self.url = base
        self.name = base
        self._folder = Path(tempfile.mkdtemp(prefix="alscout-s3-"))
        try:
            local = self._download(sink.client, sink.bucket, sink.prefix)
            self._source = open_local(local)
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self.total = self._source.total
        self.topic = getattr(self._source, "topic", None)

    def _download(self, client: Any, bucket: str, key: str) -> Path:
        """The local copy: one file for an object, a folder of images for a prefix."""
        from botocore.exceptions import BotoCoreError, ClientError

        name = PurePosixPath(key).name
        try:
            if key and not key.endswith("/") and _exists(client, bucket, key):
                target = self._folder / name
                client.download_file(bucket, key, str(target))
                log.info("recording downloaded url=%s bytes=%d", self.url, target.stat().st_size)
                return target
            prefix = key.rstrip("/") + "/" if key else ""
            folder = self._folder / (PurePosixPath(prefix).name or bucket)
            folder.mkdir()
            count = 0
            for obj_key in _list_keys(client, bucket, prefix):
                rest = obj_key[len(prefix) :]
                if "/" in rest or PurePosixPath(rest).suffix.lower() not in IMAGE_OBJECT_SUFFIXES:
                    continue
                client.download_file(bucket, obj_key, str(folder / rest))
                count += 1
        except (BotoCoreError, ClientError, OSError) as error:
            raise DataError(f"{self.url}: cannot read the recording: {error}") from error
        if not count:
            raise DataError(
                f"{self.url}: no such object, and no image ({', '.join(IMAGE_OBJECT_SUFFIXES)}) "
                "under it as a prefix"
            )
        log.info("recording downloaded url=%s images=%d", self.url, count)
        return folder

    def __iter__(self) -> Iterator[SourceFrame]:
        return iter(self._source)

    def close(self) -> None:
        """Close the local reader and remove the local copy."""
        try:
            self._source.close()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


def _exists(client: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _list_keys(client: Any, bucket: str, prefix: str) -> Iterator[str]:
    token = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        for entry in page.get("Contents", []):
            yield str(entry["Key"])
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")
