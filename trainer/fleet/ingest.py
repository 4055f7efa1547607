"""Gather the uploads of many vehicles into the labeling pool, dropping near-duplicates.

Sinks are folders or S3 buckets (``s3://bucket/prefix``), read through
:mod:`alscout.trainer.fleet.sources`; after reading, every upload takes the same path.
An upload sink holds what the vehicles' uploaders wrote (``server/uploader.py``
into a ``DirectorySink``): a JSON record per flagged frame at
``frames/<recording>/<camera>/<frame:012d>.json`` (the fields of
``FlaggedFrame.sidecar()``: ``recording_id``, ``camera_id``, ``frame_index``,
``image_format``, raw ``width``/``height``/``pixel_format``, ``z``, ``smoothed``,
``model_version``, ``metadata``; plus ``keys``: file role -> object key), and the
files themselves content-addressed at ``blobs/<sha256><suffix>``. The record is
written last, so a record names files that are all there. A plain folder of images
with a ``.json`` sidecar next to each (``DirectoryOutbox``'s layout) is read too.
Heat maps and context frames are not the labeling pool's business.

For each upload, in sorted path order: the record is checked (a frame already in
the pool, same recording, camera and frame index, is skipped here, its image not
read again), the image's bytes
checked against the SHA-256 in its blob name, and the image decoded (a bad one is
*rejected*: logged, recorded in the pool with a message naming the file, and
skipped; the rest go on); a frame whose perceptual hash lies within ``max_distance``
bits of a pool item's *from another recording* (another vehicle, or the same place
driven again) is recorded as a duplicate of that item; the rest become new items.
Frames of one recording are never duplicates of each other: the selector already
keeps its flags more than dt1 frames apart, and a fixed camera's frames share their
background, which dominates a whole-image hash. One manifest write commits the whole
ingest, after every new image is on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from alscout.errors import AlscoutError, ConfigError, DataError
from alscout.runtime.decode import decode_frame
from alscout.storage.layout import SUFFIXES
from alscout.trainer.fleet.dedup import NearDuplicateIndex, perceptual_hash
from alscout.trainer.fleet.pool import Duplicate, LabelPool, PoolItem, Rejection, now_iso
from alscout.trainer.fleet.sources import FolderSource, UploadSource, open_source

__all__ = ["IngestConfig", "Upload", "IngestReport", "find_uploads", "read_upload", "ingest"]

log = logging.getLogger(__name__)

_REQUIRED = ("recording_id", "camera_id", "frame_index", "image_format")
#: ids become folder names in the pool, as on the vehicle: a safe alphabet, no "..".
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SAFE_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


@dataclass(frozen=True)
class IngestConfig:
    """``max_distance``: Hamming distance (of 64 bits) at which two frames are
    near-duplicates; ``dedup=False`` keeps every frame."""

    max_distance: int = 8
    dedup: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_distance, int) or not 0 <= self.max_distance <= 31:
            raise ConfigError(f"max_distance must be 0..31 bits, got {self.max_distance!r}")


@dataclass(frozen=True)
class Upload:
    """One upload, read and checked: ``sidecar`` its record's locator (a path or an
    ``s3://`` URL); ``image`` RGB uint8 ``[H, W, 3]``; ``data`` the bytes the pool
    stores (raw frames re-encoded as PNG) with suffix ``suffix``."""

    sidecar: str
    recording_id: str
    camera_id: str
    frame_index: int
    image: np.ndarray
    data: bytes
    suffix: str
    vehicle: str
    model_version: str = ""
    z: float = 0.0
    smoothed: float = 0.0


@dataclass
class IngestReport:
    """What one ingest did."""

    added: list[PoolItem] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    already: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"added={len(self.added)} duplicates={len(self.duplicates)} "
            f"already_in_pool={self.already} rejected={len(self.rejected)}"
        )


def find_uploads(sink: str | Path) -> list[Path]:
    """The records of the uploads under the sink folder ``sink``, sorted.

    With a ``frames/`` folder (the uploader's layout): every ``.json`` under it.
    Otherwise: every ``.json`` sidecar next to an image file of the same name.
    """
    return FolderSource(sink).record_paths()


@dataclass(frozen=True)
class _Record:
    """An upload's checked record: ``image`` the locator of its image, ``sha256`` the
    hex SHA-256 its key promises ("" when the key names none)."""

    locator: str
    fields: dict[str, Any]
    recording_id: str
    camera_id: str
    frame_index: int
    image_format: str
    image: str
    sha256: str

    @property
    def key(self) -> tuple[str, str, int]:
        return self.recording_id, self.camera_id, self.frame_index


def _field(record: dict[str, Any], key: str, kind: type, sidecar: str) -> Any:
    value = record.get(key)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DataError(f"{sidecar}: field {key!r} must be an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise DataError(f"{sidecar}: field {key!r} must be a string, got {value!r}")
    return value


def _read_record(source: UploadSource, sidecar: str) -> _Record:
    """Read and check an upload's record (not its image); :class:`DataError` naming it."""
    text = source.read(sidecar)
    try:
        record = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{sidecar}: unreadable upload sidecar ({error})") from None
    if not isinstance(record, dict):
        raise DataError(f"{sidecar}: upload sidecar is not a JSON object")
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise DataError(f"{sidecar}: upload sidecar lacks {', '.join(missing)}")
    recording_id = _field(record, "recording_id", str, sidecar)
    camera_id = _field(record, "camera_id", str, sidecar)
    frame_index = _field(record, "frame_index", int, sidecar)
    image_format = _field(record, "image_format", str, sidecar)
    for name, value in (("recording_id", recording_id), ("camera_id", camera_id)):
        if not _SAFE_ID.fullmatch(value) or ".." in value:
            raise DataError(
                f"{sidecar}: {name} {value!r} is not 1-128 characters of A-Z a-z 0-9 . _ - "
                "without '..'"
            )
    if frame_index < 0:
        raise DataError(f"{sidecar}: frame_index must be >= 0, got {frame_index}")
    sha256 = ""
    keys = record.get("keys")
    if keys is None:
        image = source.image_of(sidecar, None)
    else:
        key = keys.get("image") if isinstance(keys, dict) else None
        if not isinstance(key, str) or not _SAFE_KEY.fullmatch(key) or ".." in key.split("/"):
            raise DataError(f"{sidecar}: keys.image must be a safe object key, got {key!r}")
        image = source.image_of(sidecar, key)
        stem = PurePosixPath(key).name.split(".")[0]
        sha256 = stem if re.fullmatch(r"[0-9a-f]{64}", stem) else ""
    if SUFFIXES.get(image_format) != PurePosixPath(image).suffix:
        raise DataError(f"{sidecar}: image_format {image_format!r} does not match {image}")
    return _Record(
        sidecar, record, recording_id, camera_id, frame_index, image_format, image, sha256
    )


def _read_image(source: UploadSource, record: _Record, vehicle: str) -> Upload:
    """Fetch, check (SHA-256) and decode the image of a checked record."""
    image_path, image_format, fields = record.image, record.image_format, record.fields
    try:
        data = source.read(image_path)
    except DataError as error:
        raise DataError(f"{error}: the image of {record.locator}") from None
    if record.sha256 and hashlib.sha256(data).hexdigest() != record.sha256:
        raise DataError(f"{image_path}: bytes do not match the SHA-256 in the name (corrupt)")
    try:
        image = decode_frame(
            data,
            encoding=image_format,
            width=int(fields.get("width") or 0),
            height=int(fields.get("height") or 0),
            pixel_format=str(fields.get("pixel_format") or "rgb8"),
        )
    except (AlscoutError, ValueError, TypeError) as error:
        raise DataError(f"{image_path}: not a decodable {image_format} frame ({error})") from None
    suffix = SUFFIXES[image_format]
    if image_format == "raw":
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise DataError(f"{image_path}: could not re-encode the raw frame as PNG")
        data, suffix = png.tobytes(), ".png"
    metadata = fields.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    try:
        z, smoothed = float(fields.get("z", 0.0)), float(fields.get("smoothed", 0.0))
    except (TypeError, ValueError):
        raise DataError(f"{record.locator}: z and smoothed must be numbers") from None
    return Upload(
        sidecar=record.locator,
        recording_id=record.recording_id,
        camera_id=record.camera_id,
        frame_index=record.frame_index,
        image=image,
        data=data,
        suffix=suffix,
        vehicle=str(metadata.get("vehicle_id") or vehicle),
        model_version=str(fields.get("model_version", "")),
        z=z,
        smoothed=smoothed,
    )


def read_upload(
    sidecar: str | Path,
    vehicle: str = "",
    root: str | Path | None = None,
    *,
    source: UploadSource | None = None,
) -> Upload:
    """Read and check one upload; :class:`DataError` naming the file when it is bad.

    ``sidecar``: the record's locator in ``source`` (default: a file of the sink
    folder ``root``, found from the record's place,
    ``root/frames/<recording>/<camera>/<frame>.json``, when not given).
    """
    if source is None:
        path = Path(sidecar)
        if root is None:
            root = path.parents[3] if len(path.parents) > 3 else path.parent
        source = FolderSource(root, vehicle)
    return _read_image(source, _read_record(source, str(sidecar)), vehicle or source.vehicle)


def ingest(
    pool: LabelPool,
    sinks: Sequence[str | Path | UploadSource],
    config: IngestConfig | None = None,
    progress: bool = False,
) -> IngestReport:
    """Add the uploads of every sink to ``pool``; returns what happened.

    ``sinks``: folders, ``s3://bucket/prefix?...`` URLs or :class:`UploadSource` s,
    mixed freely. A sink's folder name (an S3 prefix's last segment, else the bucket)
    is the vehicle name unless a record's metadata has ``vehicle_id``. Bad uploads are
    rejected one by one; an upload already in the pool is skipped before its image is
    read; the pool's manifest is written once, at the end, and only when the whole
    ingest succeeded (a sink that cannot be read at all ends it, writing nothing).
    """
    config = config or IngestConfig()
    report = IngestReport()
    sources = [open_source(sink) for sink in sinks]
    records = [(source, record) for source in sources for record in source.records()]
    with pool.edit() as state:
        index: NearDuplicateIndex[int] = NearDuplicateIndex(config.max_distance, seed=config.seed)
        for item in state.items:
            index.add(item.item_id, int(item.phash, 16))
        recording_of = {item.item_id: item.recording_id for item in state.items}
        keys = {item.key for item in state.items}
        keys.update((d.recording_id, d.camera_id, d.frame_index) for d in state.duplicates)
        next_id = max((item.item_id for item in state.items), default=0) + 1
        for source, sidecar in tqdm(records, desc="ingest", disable=not progress):
            try:
                record = _read_record(source, sidecar)
                if record.key in keys:
                    report.already += 1
                    continue
                upload = _read_image(source, record, source.vehicle)
            except DataError as error:
                log.warning("upload rejected %s", error)
                rejection = Rejection(source=sidecar, reason=str(error), when=now_iso())
                if not any(
                    (r.source, r.reason) == (rejection.source, rejection.reason)
                    for r in state.rejected
                ):
                    state.rejected.append(rejection)
                report.rejected.append(rejection)
                continue
            key = record.key
            keys.add(key)
            value = perceptual_hash(upload.image)
            twin = None
            if config.dedup:
                twin = next(
                    (hit for hit in index.query(value) if recording_of[hit[0]] != key[0]), None
                )
            if twin is not None:
                duplicate = Duplicate(
                    source=sidecar,
                    recording_id=upload.recording_id,
                    camera_id=upload.camera_id,
                    frame_index=upload.frame_index,
                    vehicle=upload.vehicle,
                    duplicate_of=int(twin[0]),
                    distance=int(twin[1]),
                    ingested=now_iso(),
                )
                state.duplicates.append(duplicate)
                report.duplicates.append(duplicate)
                continue
            item = _store(pool, upload, next_id, value)
            next_id += 1
            index.add(item.item_id, value)
            recording_of[item.item_id] = item.recording_id
            state.items.append(item)
            report.added.append(item)
    log.info("ingest pool=%s %s", pool.root, report.describe())
    return report


def _store(pool: LabelPool, upload: Upload, item_id: int, phash: int) -> PoolItem:
    relative = (
        f"images/{upload.recording_id}/{upload.camera_id}/{upload.frame_index:012d}{upload.suffix}"
    )
    pool.write_image(relative, upload.data)
    height, width = upload.image.shape[:2]
    return PoolItem(
        item_id=item_id,
        file=relative,
        recording_id=upload.recording_id,
        camera_id=upload.camera_id,
        frame_index=upload.frame_index,
        width=int(width),
        height=int(height),
        phash=f"{phash:016x}",
        sha256=hashlib.sha256(upload.data).hexdigest(),
        source=upload.sidecar,
        vehicle=upload.vehicle,
        ingested=now_iso(),
        model_version=upload.model_version,
        z=upload.z,
        smoothed=upload.smoothed,
    )
