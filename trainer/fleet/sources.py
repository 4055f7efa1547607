"""Where ``alscout fleet ingest`` reads uploads from: a sink folder or an S3 sink.

A source lists the upload records of one sink and reads objects by *locator*: the
name that messages, rejections and pool items use for it (a file path, or
``s3://bucket/key``). :func:`open_source` takes what the vehicles' ``--sink`` took: a
folder, ``file:///path`` or ``s3://bucket/prefix?endpoint_url=...&region=...``, parsed
by :func:`alscout.storage.sinks.open_sink` (same endpoint and credential settings as
the uploader: boto3's usual chain, ``AWS_ENDPOINT_URL``). The checks of each upload
are :mod:`alscout.trainer.fleet.ingest`'s, the same for every source.

S3 errors fall in three kinds. An object that is not there (``NoSuchKey``) is that
upload's problem: a :class:`DataError` naming it, so ingest rejects it and goes on.
A missing bucket, refused or absent credentials, or any other client error end the
ingest: :class:`SinkUnavailableError` naming the sink's URL. Network errors, 5xx and
throttling are retried with the uploader's :class:`~alscout.storage.backoff.Backoff`
(exponential, full jitter), ``attempts`` tries in all, then end the ingest too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

import numpy as np

from alscout.errors import ConfigError, DataError, SinkUnavailableError
from alscout.storage.backoff import Backoff
from alscout.storage.layout import SUFFIXES

__all__ = [
    "UploadSource",
    "FolderSource",
    "S3Source",
    "SinkUnavailableError",
    "open_source",
]

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
}
_FATAL_BOTO = ("NoCredentialsError", "PartialCredentialsError", "ParamValidationError")


@runtime_checkable
class UploadSource(Protocol):
    """The uploads of one sink. ``vehicle``: the name of uploads without ``vehicle_id``."""

    vehicle: str

    def records(self) -> list[str]:
        """Locators of the sink's upload records, sorted."""
        ...

    def image_of(self, record: str, key: str | None) -> str:
        """Locator of an image: ``key`` relative to the sink's root (the uploader's
        layout), or with ``key`` None the record's name without ``.json``."""
        ...

    def read(self, locator: str) -> bytes:
        """An object's bytes; :class:`DataError` naming it when it cannot be read."""
        ...


class FolderSource:
    """A sink folder: the uploader's layout (``frames/`` + ``blobs/``) or a folder of
    images with a ``.json`` sidecar next to each (``DirectoryOutbox``'s layout)."""

    def __init__(self, root: str | Path, vehicle: str = "") -> None:
        self.root = Path(root)
        self.vehicle = vehicle or self.root.name

    def records(self) -> list[str]:
        return [str(path) for path in self.record_paths()]

    def record_paths(self) -> list[Path]:
        """The records as paths, sorted; :class:`DataError` when the folder is missing."""
        if not self.root.is_dir():
            raise DataError(f"{self.root}: upload sink folder not found")
        frames = self.root / "frames"
        if frames.is_dir():
            found = [p for p in frames.rglob("*.json") if not p.name.startswith(".")]
        else:
            found = [
                path
                for path in self.root.rglob("*.json")
                if not path.name.startswith(".")  # temporary files of a writer at work
                and path.with_name(path.name.removesuffix(".json")).suffix in SUFFIXES.values()
            ]
        return sorted(found)

    def image_of(self, record: str, key: str | None) -> str:
        if key is None:
            return record.removesuffix(".json")
        return str(self.root / key)

    def read(self, locator: str) -> bytes:
        try:
            return Path(locator).read_bytes()
        except OSError as error:
            raise DataError(f"{locator}: cannot read ({error.strerror or error})") from None

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r})"


class S3Source:
    """An S3 sink's uploads (the uploader's layout under ``prefix``), by plain boto3.

    ``client``: a boto3 S3 client (e.g. ``S3Sink.client``). ``page_size``: keys per
    ``ListObjectsV2`` page (S3's maximum is 1000). ``attempts``: tries per
    request for transient errors; ``backoff_base_s``/``backoff_cap_s`` as the
    uploader's; ``sleep`` waits (injectable for tests).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: Any,
        *,
        vehicle: str = "",
        page_size: int = 1000,
        attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 10.0,
        seed: int = 0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if attempts < 1 or not 1 <= page_size <= 1000:
            raise ConfigError(
                f"need attempts >= 1 and page_size 1..1000, got {attempts}, {page_size}"
            )
        self.page_size = page_size
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.vehicle = vehicle or (PurePosixPath(self.prefix).name if self.prefix else bucket)
        self.attempts = attempts
        self.backoff = Backoff(backoff_base_s, backoff_cap_s, np.random.default_rng(seed))
        self._sleep = sleep

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3Source:
        """The source of ``s3://bucket/prefix?...``, configured as :func:`open_sink` does."""
        from alscout.storage.sinks import S3Sink, open_sink

        sink = open_sink(url)
        if not isinstance(sink, S3Sink):
            raise ConfigError(f"{url!r} is not an s3:// URL")
        return cls(sink.bucket, sink.prefix, sink.client, **options)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def records(self) -> list[str]:
        found: list[str] = []
        request = {"Bucket": self.bucket, "Prefix": self._key("frames/"), "MaxKeys": self.page_size}
        while True:
            page = self._call("list", self.url, self.client.list_objects_v2, **request)
            for entry in page.get("Contents", []):
                key = entry["Key"]
                if key.endswith(".json") and not PurePosixPath(key).name.startswith("."):
                    found.append(f"s3://{self.bucket}/{key}")
            if not page.get("IsTruncated"):
                break
            request["ContinuationToken"] = page["NextContinuationToken"]
        log.info("s3 sink listed url=%s records=%d", self.url, len(found))
        return sorted(found)

    def image_of(self, record: str, key: str | None) -> str:
        if key is None:
            return record.removesuffix(".json")
        return f"s3://{self.bucket}/{self._key(key)}"

    def read(self, locator: str) -> bytes:
        head = f"s3://{self.bucket}/"
        if not locator.startswith(head):
            raise DataError(f"{locator}: not an object of {self.url}")
        key = locator[len(head) :]

        def get() -> bytes:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

        return self._call("read", locator, get)

    def _call(self, what: str, name: str, request: Callable[..., Any], **kwargs: Any) -> Any:
        """``request(**kwargs)``, retried on transient errors; errors sorted by kind."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(self.attempts):
            try:
                return request(**kwargs)
            except (BotoCoreError, ClientError, OSError) as error:
                kind, detail = _classify(error)
                if kind == "missing":
                    raise DataError(f"{name}: no such object") from None
                if kind == "fatal":
                    raise SinkUnavailableError(f"{self.url}: cannot {what} ({detail})") from None
                if attempt + 1 == self.attempts:
                    raise SinkUnavailableError(
                        f"{self.url}: cannot {what} {name} after {self.attempts} tries ({detail})"
                    ) from None
                delay = self.backoff.delay(attempt)
                log.warning(
                    "s3 request failed object=%s attempt=%d retry_in_s=%.2f error=%s",
                    name,
                    attempt + 1,
                    delay,
                    detail,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def __repr__(self) -> str:
        return f"S3Source({self.url!r})"


def _classify(error: Exception) -> tuple[str, str]:
    """``("missing" | "fatal" | "transient", one-line detail)`` of a request's error
    (a botocore error or an OSError)."""
    from botocore.exceptions import BotoCoreError, ClientError

    detail = " ".join(str(error).split())
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _MISSING:
            return "missing", detail
        if code in _TRANSIENT or status >= 500:
            return "transient", detail
        return "fatal", detail
    if isinstance(error, BotoCoreError) and type(error).__name__ in _FATAL_BOTO:
        return "fatal", detail
    return "transient", detail  # connection, timeout, a broken response stream


def open_source(sink: str | Path | UploadSource) -> UploadSource:
    """The source of a sink: a source as is, ``s3://...`` through :func:`open_sink`'s
    parsing, else a folder (a path or ``file:///path``)."""
    if isinstance(sink, UploadSource):
        return sink
    if isinstance(sink, Path):
        return FolderSource(sink)
    parsed = urlparse(sink)
    if parsed.scheme == "s3":
        return S3Source.from_url(sink)
    if parsed.scheme == "file":
        return FolderSource(unquote(parsed.path))
    return FolderSource(sink)
