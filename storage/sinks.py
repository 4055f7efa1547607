"""Where the uploader sends flagged frames: a folder (local or mounted) or S3-compatible storage.

A :class:`Sink` stores an object under a key and returns only once the far side has
confirmed it whole; storing the same key with the same bytes again is harmless, so the
uploader may repeat any upload after a crash. :func:`open_sink` builds one from a URL:
``/path`` or ``file:///path`` (a folder) or ``s3://bucket/prefix?endpoint_url=...&region=...``
(plain boto3; credentials from boto3's usual chain: environment, profile, instance role).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlparse

from alscout.errors import ConfigError, SinkError
from alscout.files import fsync_dir, write_atomic

__all__ = [
    "Sink",
    "SinkError",
    "SinkRefusedError",
    "DirectorySink",
    "S3Sink",
    "open_sink",
    "check_key",
]

log = logging.getLogger(__name__)

#: object keys: slash-separated safe names, no "." or ".." segments
_KEY_PATTERN = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
#: S3's smallest part (except the last one)
MIN_PART_BYTES = 5 * 1024 * 1024


class SinkRefusedError(SinkError):
    """The sink refuses this object for good (a key it does not allow, bytes that do not
    match the hash given): repeating the upload cannot help, so the uploader parks the
    frame instead of retrying it. Any other :class:`SinkError` is transient."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise :class:`SinkRefusedError`."""
    if not _KEY_PATTERN.fullmatch(key) or any(p in (".", "..") for p in key.split("/")):
        raise SinkRefusedError(f"object key {key!r} is not allowed")
    return key


@runtime_checkable
class Sink(Protocol):
    """Object storage the uploader writes to."""

    def put(self, key: str, data: bytes, sha256: str) -> None:
        """Store ``data`` (whose hex SHA-256 is ``sha256``) under ``key``; returns once
        confirmed, else raises :class:`SinkError` (or an OSError / network error), or
        :class:`SinkRefusedError` when no retry can succeed."""
        ...

    def has(self, key: str, sha256: str) -> bool:
        """Whether ``key`` already holds the bytes whose hex SHA-256 is ``sha256``."""
        ...


class DirectorySink:
    """Objects as files under ``root`` (key = relative path), written atomically and fsynced."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The file of ``key``."""
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, sha256: str) -> None:
        path = self.path_for(key)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SinkRefusedError(f"{key}: the bytes do not match the sha256 given")
        created = []
        folder = path.parent
        while not folder.exists():
            created.append(folder)
            folder = folder.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, sync_dir=True)
        for folder in created:  # new folders' names must be durable too
            fsync_dir(folder.parent)

    def has(self, key: str, sha256: str) -> bool:
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False
        return hashlib.sha256(data).hexdigest() == sha256

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.root)!r})"


class S3Sink:
    """Objects in an S3-compatible bucket through boto3, with checksums.

    Objects up to ``multipart_bytes`` go in one ``PutObject``; larger ones as a multipart
    upload of ``part_bytes`` parts (at least 5 MiB), aborted on failure. Every request
    carries SHA-256 checksums (S3 rejects a mismatch), the object's hex SHA-256 is kept
    in its metadata (``x-amz-meta-sha256``) for :meth:`has`, and a returned ETag that is
    an MD5 (plain or multipart form) is checked against the bytes sent, so a store that
    ignores checksums still cannot confirm a corrupted upload.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_bytes: int = 64 * 1024 * 1024,
        part_bytes: int = 16 * 1024 * 1024,
        timeout_s: float = 30.0,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ConfigError("an S3 sink needs a bucket: s3://BUCKET/prefix")
        if part_bytes < MIN_PART_BYTES or multipart_bytes < part_bytes:
            raise ConfigError(
                f"part_bytes must be >= {MIN_PART_BYTES} and multipart_bytes >= part_bytes, "
                f"got {part_bytes} and {multipart_bytes}"
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.multipart_bytes = multipart_bytes
        self.part_bytes = part_bytes
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 1},  # the uploader retries, with backoff
                request_checksum_calculation="when_required",  # we send SHA-256 ourselves
            )
            client = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        self.client = client

    def object_key(self, key: str) -> str:
        """The bucket key of ``key`` (with the prefix)."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, sha256: str) -> None:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SinkRefusedError(f"{key}: the bytes do not match the sha256 given")
        name = self.object_key(key)
        try:
            if len(data) <= self.multipart_bytes:
                response = self.client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=data,
                    ChecksumSHA256=_b64(hashlib.sha256(data).digest()),
                    ContentMD5=_b64(hashlib.md5(data).digest()),
                    Metadata={"sha256": sha256},
                )
                _check_etag(name, response.get("ETag", ""), [hashlib.md5(data).digest()], False)
            else:
                self._put_multipart(name, data, sha256)
        except SinkError:
            raise
        except Exception as error:
            if not _is_transient(error):
                raise
            raise SinkError(f"s3://{self.bucket}/{name}: {error}") from error

    def has(self, key: str, sha256: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self.object_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise SinkError(f"s3://{self.bucket}/{name}: {error}") from error
        except (BotoCoreError, OSError) as error:
            raise SinkError(f"s3://{self.bucket}/{name}: {error}") from error
        return head.get("Metadata", {}).get("sha256") == sha256

    def _put_multipart(self, name: str, data: bytes, sha256: str) -> None:
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=name, ChecksumAlgorithm="SHA256", Metadata={"sha256": sha256}
        )
        upload_id = upload["UploadId"]
        try:
            parts, digests = [], []
            for number, start in enumerate(range(0, len(data), self.part_bytes), start=1):
                chunk = data[start : start + self.part_bytes]
                checksum = _b64(hashlib.sha256(chunk).digest())
                digests.append(hashlib.md5(chunk).digest())
                response = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                    ChecksumSHA256=checksum,
                    ContentMD5=_b64(digests[-1]),
                )
                _check_etag(name, response.get("ETag", ""), digests[-1:], False)
                parts.append(
                    {"ETag": response["ETag"], "PartNumber": number, "ChecksumSHA256": checksum}
                )
            done = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            _check_etag(name, done.get("ETag", ""), digests, True)
            log.debug("multipart upload done key=%s parts=%d", name, len(parts))
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except Exception:  # the upload failed already; the bucket's lifecycle rule cleans up
                log.warning("could not abort multipart upload key=%s", name, exc_info=True)
            raise

    def __repr__(self) -> str:
        return f"S3Sink(bucket={self.bucket!r}, prefix={self.prefix!r})"


def open_sink(url: str) -> DirectorySink | S3Sink:
    """A sink from a URL: a folder path, ``file:///path`` or ``s3://bucket/prefix?...``.

    S3 query parameters: ``endpoint_url``, ``region``, ``multipart_bytes``,
    ``part_bytes``. Raises :class:`ConfigError` for other schemes or parameters.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path if parsed.scheme else url)
        if not path:
            raise ConfigError("the sink URL names no folder")
        return DirectorySink(path)
    if parsed.scheme != "s3":
        raise ConfigError(f"sink URL {url!r}: use a folder, file:///path or s3://bucket/prefix")
    params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    known = {"endpoint_url", "region", "multipart_bytes", "part_bytes"}
    if unknown := set(params) - known:
        raise ConfigError(f"sink URL {url!r}: unknown parameters {sorted(unknown)}")
    sizes = {}
    for name in ("multipart_bytes", "part_bytes"):
        if name in params:
            try:
                sizes[name] = int(params[name])
            except ValueError:
                raise ConfigError(f"sink URL: {name} must be an integer") from None
    return S3Sink(
        parsed.netloc,
        parsed.path,
        endpoint_url=params.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL"),
        region=params.get("region"),
        **sizes,
    )


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _check_etag(name: str, etag: str, digests: list[bytes], multipart: bool) -> None:
    """Compare an MD5-form ETag with the bytes sent; other forms (SSE-KMS) are not MD5s."""
    etag = etag.strip('"')
    if multipart:
        expected = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
        looks_md5 = re.fullmatch(r"[0-9a-f]{32}-\d+", etag) is not None
    else:
        expected = digests[0].hex()
        looks_md5 = re.fullmatch(r"[0-9a-f]{32}", etag) is not None
    if looks_md5 and etag != expected:
        raise SinkError(f"{name}: the store confirmed other bytes (ETag {etag}, sent {expected})")


def _is_transient(error: Exception) -> bool:
    """Network and server errors are retried; a caller's bug (TypeError, ...) is not."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(error, BotoCoreError | ClientError | OSError)
