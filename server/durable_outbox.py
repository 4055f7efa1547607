"""The product's outbox: :class:`DurableOutbox`, flagged frames that survive a crash.

An SQLite index (WAL, ``synchronous=FULL``) over content-addressed files, written so
that a crash at any instant leaves either the whole frame or nothing (file and folder
fsynced before the row commits), with a disk quota that evicts the lowest-score frames
not yet uploaded, and a record of uploaded frames that feeds SPEC §2b's dt2 rule
(:meth:`DurableOutbox.earlier_frames`). docs/outbox.md has the layout on disk and the
crash-safety argument; :mod:`alscout.server.outbox` holds the frame types and the
:class:`~alscout.server.outbox.Outbox` protocol.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from alscout.errors import (
    ConfigError,
    DataError,
    InvalidInputError,
    OutboxFullError,
)
from alscout.files import fsync_dir, write_atomic
from alscout.server.outbox import FlaggedFrame
from alscout.server.outbox_schema import (
    FILE_MODE,
    FOLDER_MODE,
    INDEX_NAME,
    KEPT_STATES,
    SCHEMA,
    STATES,
    make_private,
    migrate,
)
from alscout.storage.layout import SUFFIXES

__all__ = [
    "DurableOutbox",
    "DEFAULT_QUOTA_BYTES",
    "INDEX_NAME",
    "STATES",
    "BlobRef",
    "StoredFrame",
    "OutboxStatus",
    "CheckReport",
]

log = logging.getLogger(__name__)

#: default disk quota of a DurableOutbox, bytes of frames not yet uploaded
DEFAULT_QUOTA_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class BlobRef:
    """One file of a stored frame: ``role`` is "image", "heatmap" or "context:<frame>"."""

    role: str
    sha256: str
    suffix: str
    nbytes: int

    @property
    def name(self) -> str:
        """The content-addressed file name, ``<sha256><suffix>``."""
        return self.sha256 + self.suffix


@dataclass(frozen=True)
class StoredFrame:
    """A row of the index: ids, score, size in bytes, the JSON record and the files.

    ``nbytes``: its files plus the UTF-8 bytes of its metadata (what the quota counts).
    ``reason``: why it was parked or found corrupt (None otherwise).
    """

    id: int
    recording_id: str
    camera_id: str
    frame_index: int
    state: str
    smoothed: float
    nbytes: int
    record: dict[str, object]
    blobs: tuple[BlobRef, ...]
    reason: str | None = None


@dataclass(frozen=True)
class OutboxStatus:
    """Frames per state, bytes waiting for upload, bytes parked and the quota (bytes).

    The quota bounds ``pending_bytes + parked_bytes`` (files and metadata).
    """

    counts: dict[str, int]
    pending_bytes: int
    quota_bytes: int
    parked_bytes: int = 0


@dataclass(frozen=True)
class CheckReport:
    """What :meth:`DurableOutbox.check` found; ``ok`` when ``problems`` is empty.

    ``orphans``: files no waiting frame refers to (left by a crash after an upload or
    an eviction; harmless, removed when a store opens or by ``repair``).
    """

    frames_checked: int
    files_checked: int
    problems: tuple[str, ...]
    orphans: int

    @property
    def ok(self) -> bool:
        return not self.problems


class DurableOutbox:
    """The product's outbox under ``root``: crash-safe, with a quota; thread- and process-safe.

    Layout: ``index.sqlite3`` (the index, WAL mode), ``objects/<sha[:2]>/<sha><suffix>``
    (image, heat map ``.npy`` and context images, content-addressed), ``tmp/`` (files
    being written) and ``lock`` (an ``flock`` that serialises writers of all processes);
    folders are created 0700 and files 0600, whatever the umask.
    ``quota_bytes``: most bytes of frames waiting for upload or parked, files and metadata
    (None: the quota the store was last opened with, else :data:`DEFAULT_QUOTA_BYTES`);
    ``registry``: a Prometheus registry for ``alscout_outbox_evictions_total``. Opening
    recovers a store left by a crash (temporary and unreferenced files are removed) and
    brings an index written by an older version to this schema.
    """

    def __init__(
        self,
        root: str | Path,
        quota_bytes: int | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if quota_bytes is not None and (
            isinstance(quota_bytes, bool) or not isinstance(quota_bytes, int) or quota_bytes < 1
        ):
            raise ConfigError(f"quota_bytes must be a positive integer, got {quota_bytes!r}")
        self.root = Path(root)
        self.quota_bytes = DEFAULT_QUOTA_BYTES
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        for folder in (self.root, self.objects, self.tmp):
            folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            make_private(folder, FOLDER_MODE)
        self._lock = threading.RLock()
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        make_private(self.root / "lock", FILE_MODE)
        self._evictions = None
        if registry is not None:
            self._evictions = Counter(
                "alscout_outbox_evictions",
                "Flagged frames dropped under the outbox quota before upload",
                registry=registry,
            )
        index = self.root / INDEX_NAME
        # SQLite gives the -wal and -shm files the mode of the index: create it private
        os.close(os.open(index, os.O_RDWR | os.O_CREAT, FILE_MODE))
        for path in (
            index,
            index.with_name(INDEX_NAME + "-wal"),
            index.with_name(INDEX_NAME + "-shm"),
        ):
            make_private(path, FILE_MODE)
        try:
            self._db = sqlite3.connect(
                index, isolation_level=None, check_same_thread=False, timeout=60.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._exclusive():
                self._db.executescript(SCHEMA)
                migrate(self._db, self.root)
                self.quota_bytes = self._quota(quota_bytes)
                self._recover()
        except sqlite3.DatabaseError as error:
            os.close(self._lock_fd)
            raise DataError(f"{index}: not a readable outbox index: {error}") from error

    # ----------------------------------------------------------------- writing

    def put(self, frame: FlaggedFrame) -> None:
        """Store ``frame`` durably; returns once file, folder and row are on disk.

        A frame already stored, parked or uploaded (same recording, camera, frame index)
        is left as it is. The quota counts the frame's files and the UTF-8 bytes of its
        metadata. When the quota is reached, waiting or parked frames with a lower
        smoothed score are evicted, lowest first; raises :class:`OutboxFullError`
        (nothing changed) when that cannot free enough room.
        """
        blobs = _blobs_of(frame)
        refs = [ref for ref, _ in blobs]
        nbytes = sum(ref.nbytes for ref in refs) + frame.metadata_bytes
        record = frame.sidecar()
        record["files"] = {ref.role: ref.name for ref in refs}
        with self._exclusive():
            row = self._db.execute(
                "SELECT id, state FROM frames WHERE recording_id=? AND camera_id=? "
                "AND frame_index=?",
                (frame.recording_id, frame.camera_id, frame.frame_index),
            ).fetchone()
            if row is not None and row[1] in ("pending", "uploaded", "parked"):
                log.debug("frame already in the outbox id=%d state=%s", row[0], row[1])
                return
            victims = self._choose_victims(nbytes, frame.smoothed)
            new_folders = [self._write_blob(ref, data) for ref, data in blobs]
            for folder in {folder for written in new_folders for folder in written}:
                fsync_dir(folder)
            now = time.time_ns()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if row is not None:
                    self._db.execute("DELETE FROM frames WHERE id=?", (row[0],))
                victim_refs = self._refs_of([v.id for v in victims])
                self._db.executemany(
                    "UPDATE frames SET state='evicted', updated_ns=? WHERE id=?",
                    [(now, v.id) for v in victims],
                )
                cursor = self._db.execute(
                    "INSERT INTO frames (recording_id, camera_id, frame_index, state, smoothed, "
                    "nbytes, record, created_ns, updated_ns) VALUES (?, ?, ?, 'pending', ?, ?, ?, "
                    "?, ?)",
                    (
                        frame.recording_id,
                        frame.camera_id,
                        frame.frame_index,
                        float(frame.smoothed),
                        nbytes,
                        json.dumps(record, sort_keys=True),
                        now,
                        now,
                    ),
                )
                self._db.executemany(
                    "INSERT INTO blobs (frame_id, role, sha256, suffix, nbytes) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(cursor.lastrowid, r.role, r.sha256, r.suffix, r.nbytes) for r in refs],
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._release(refs)
                raise
            self._release(victim_refs)
        for victim in victims:
            log.warning(
                "outbox quota: evicted recording=%s camera=%s frame=%d smoothed=%.6g bytes=%d",
                victim.recording_id,
                victim.camera_id,
                victim.frame_index,
                victim.smoothed,
                victim.nbytes,
            )
        if self._evictions is not None and victims:
            self._evictions.inc(len(victims))
        log.info(
            "frame stored recording=%s camera=%s frame=%d bytes=%d",
            frame.recording_id,
            frame.camera_id,
            frame.frame_index,
            nbytes,
        )

    def mark_uploaded(self, frame_id: int) -> None:
        """Record that the sink confirmed frame ``frame_id``; its files are released."""
        self._set_state(frame_id, "uploaded", ("pending", "evicted"))

    def mark_corrupt(self, frame_id: int, reason: str) -> None:
        """Take a waiting frame whose files fail their hash out of the upload queue."""
        log.error("outbox frame corrupt id=%d reason=%s", frame_id, reason)
        self._set_state(frame_id, "corrupt", ("pending", "parked"), reason)

    def mark_parked(self, frame_id: int, reason: str) -> None:
        """Take a waiting frame the sink refused for good out of the upload queue.

        The frame keeps its files (and its place in the quota) and ``reason``;
        ``status()`` counts it and ``frames("parked")`` lists it, so nothing is lost
        silently while the frames behind it upload.
        """
        log.info("outbox frame parked id=%d reason=%s", frame_id, reason)
        self._set_state(frame_id, "parked", ("pending",), reason)

    # ----------------------------------------------------------------- reading

    def earlier_frames(self, recording_id: str, camera_id: str) -> list[int]:
        """Frames of this recording and camera waiting, parked or uploaded, ascending."""
        with self._lock:
            rows = self._db.execute(
                "SELECT frame_index FROM frames WHERE recording_id=? AND camera_id=? "
                "AND state IN ('pending', 'uploaded', 'parked') ORDER BY frame_index",
                (recording_id, camera_id),
            ).fetchall()
        return [r[0] for r in rows]

    def pending(self, limit: int | None = None) -> list[StoredFrame]:
        """Frames waiting for upload, highest smoothed score first (then oldest first)."""
        query = "SELECT * FROM frames WHERE state='pending' ORDER BY smoothed DESC, id ASC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return self._frames(query, ())

    def frames(self, state: str | None = None) -> list[StoredFrame]:
        """All rows (or those in ``state``), oldest first."""
        if state is None:
            return self._frames("SELECT * FROM frames ORDER BY id", ())
        if state not in STATES:
            raise InvalidInputError(f"state must be one of {STATES}, got {state!r}")
        return self._frames("SELECT * FROM frames WHERE state=? ORDER BY id", (state,))

    def state_of(self, frame_id: int) -> str | None:
        """The state of row ``frame_id`` (None when there is no such row)."""
        with self._lock:
            row = self._db.execute("SELECT state FROM frames WHERE id=?", (frame_id,)).fetchone()
        return None if row is None else row[0]

    def blob_path(self, ref: BlobRef) -> Path:
        """Where the file of ``ref`` lives."""
        return self.objects / ref.sha256[:2] / ref.name

    def read_blob(self, ref: BlobRef) -> bytes:
        """The bytes of ``ref``; raises :class:`DataError` when missing or not matching."""
        path = self.blob_path(ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: file missing") from None
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise DataError(f"{path}: content does not match its sha256")
        return data

    def status(self) -> OutboxStatus:
        """Frames per state, bytes waiting for upload and bytes parked."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM frames GROUP BY state").fetchall()
            sizes = dict(
                self._db.execute(
                    "SELECT state, SUM(nbytes) FROM frames "
                    f"WHERE state IN {KEPT_STATES} GROUP BY state"
                ).fetchall()
            )
        counts = dict.fromkeys(STATES, 0) | dict(rows)
        return OutboxStatus(
            counts, int(sizes.get("pending", 0)), self.quota_bytes, int(sizes.get("parked", 0))
        )

    def check(self, *, repair: bool = False) -> CheckReport:
        """Verify the store: index integrity, and every waiting or parked frame's files
        by hash.

        With ``repair``, frames whose files are missing or wrong become "corrupt" and
        orphan files are removed.
        """
        problems: list[str] = []
        with self._exclusive():
            (integrity,) = self._db.execute("PRAGMA integrity_check").fetchone()
            if integrity != "ok":
                problems.append(f"{self.root / INDEX_NAME}: integrity check: {integrity}")
            if self._db.execute("PRAGMA foreign_key_check").fetchall():
                problems.append(f"{self.root / INDEX_NAME}: file rows without a frame row")
            waiting = self._frames(
                f"SELECT * FROM frames WHERE state IN {KEPT_STATES} ORDER BY id", ()
            )
            n_files = 0
            for frame in waiting:
                for ref in frame.blobs:
                    n_files += 1
                    try:
                        data = self.read_blob(ref)
                    except DataError as error:
                        problems.append(f"frame id={frame.id}: {error}")
                        if repair:
                            self.mark_corrupt(frame.id, str(error))
                        break
                    if len(data) != ref.nbytes:
                        problems.append(f"frame id={frame.id}: {ref.name} has the wrong size")
            problems.extend(f"{p}: temporary file left" for p in self.tmp.iterdir())
            orphans = self._orphans()
            if repair:
                for path in orphans:
                    path.unlink(missing_ok=True)
                for path in self.tmp.iterdir():
                    path.unlink(missing_ok=True)
        return CheckReport(len(waiting), n_files, tuple(problems), len(orphans))

    def close(self) -> None:
        """Close the index; the object must not be used afterwards."""
        with self._lock:
            self._db.close()
            os.close(self._lock_fd)

    def __enter__(self) -> DurableOutbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the thread lock and the cross-process flock (writers of all processes)."""
        with self._lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _frames(self, query: str, args: tuple[object, ...]) -> list[StoredFrame]:
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
            refs = self._refs_by_frame([r[0] for r in rows])
        return [
            StoredFrame(
                id=r[0],
                recording_id=r[1],
                camera_id=r[2],
                frame_index=r[3],
                state=r[4],
                smoothed=r[5],
                nbytes=r[6],
                record=json.loads(r[7]),
                blobs=tuple(refs.get(r[0], ())),
                reason=r[10],
            )
            for r in rows
        ]

    def _refs_by_frame(self, ids: list[int]) -> dict[int, list[BlobRef]]:
        out: dict[int, list[BlobRef]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for frame_id, role, sha, suffix, nbytes in self._db.execute(
                "SELECT frame_id, role, sha256, suffix, nbytes FROM blobs "
                f"WHERE frame_id IN ({marks}) ORDER BY frame_id, role",
                chunk,
            ):
                out.setdefault(frame_id, []).append(BlobRef(role, sha, suffix, nbytes))
        return out

    def _refs_of(self, ids: list[int]) -> list[BlobRef]:
        return [ref for refs in self._refs_by_frame(ids).values() for ref in refs]

    def _quota(self, quota_bytes: int | None) -> int:
        """Store a quota given; else use the one stored (a reader such as the uploader)."""
        if quota_bytes is not None:
            self._db.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES ('quota_bytes', ?)",
                (str(quota_bytes),),
            )
            return quota_bytes
        row = self._db.execute("SELECT value FROM settings WHERE name='quota_bytes'").fetchone()
        return DEFAULT_QUOTA_BYTES if row is None else int(row[0])

    def _stored_bytes(self) -> int:
        """Bytes the quota counts: frames waiting for upload or parked."""
        (total,) = self._db.execute(
            f"SELECT COALESCE(SUM(nbytes), 0) FROM frames WHERE state IN {KEPT_STATES}"
        ).fetchone()
        return int(total)

    def _choose_victims(self, nbytes: int, smoothed: float) -> list[StoredFrame]:
        if nbytes > self.quota_bytes:
            raise OutboxFullError(
                f"{self.root}: a frame of {nbytes} bytes exceeds the whole quota "
                f"({self.quota_bytes} bytes); raise the quota"
            )
        needed = self._stored_bytes() + nbytes - self.quota_bytes
        if needed <= 0:
            return []
        victims: list[StoredFrame] = []
        candidates = self._frames(
            f"SELECT * FROM frames WHERE state IN {KEPT_STATES} AND smoothed < ? "
            "ORDER BY smoothed ASC, id ASC",
            (float(smoothed),),
        )
        for candidate in candidates:
            victims.append(candidate)
            needed -= candidate.nbytes
            if needed <= 0:
                return victims
        raise OutboxFullError(
            f"{self.root}: the quota ({self.quota_bytes} bytes) is taken by frames scoring at "
            f"least {smoothed:.6g}; the frame is not stored"
        )

    def _write_blob(self, ref: BlobRef, data: bytes) -> tuple[Path, ...]:
        """Write one file unless present; returns the folders to fsync before the commit."""
        path = self.blob_path(ref)
        # Files enter objects/ only by rename after fsync, so one with the right name and
        # size is complete (content-addressed: same name, same bytes).
        if path.exists() and path.stat().st_size == ref.nbytes:
            return (path.parent,)  # it may be an orphan of a crash whose rename never synced
        folders: tuple[Path, ...] = (path.parent,)
        if not path.parent.exists():
            path.parent.mkdir(mode=FOLDER_MODE)
            make_private(path.parent, FOLDER_MODE)
            folders += (self.objects,)  # the new shard folder's own name
        write_atomic(path, data, staging=self.tmp)
        return folders

    def _set_state(
        self, frame_id: int, state: str, allowed: tuple[str, ...], reason: str | None = None
    ) -> None:
        with self._exclusive():
            refs = self._refs_of([frame_id])
            marks = ",".join("?" * len(allowed))
            self._db.execute(
                "UPDATE frames SET state=?, reason=?, updated_ns=? WHERE id=? "
                f"AND state IN ({marks})",
                (state, reason, time.time_ns(), frame_id, *allowed),
            )
            self._release(refs)

    def _release(self, refs: list[BlobRef]) -> None:
        """Delete the files of ``refs`` that no waiting or parked frame refers to (lock held)."""
        for ref in {(r.sha256, r.suffix): r for r in refs}.values():
            used = self._db.execute(
                "SELECT 1 FROM blobs b JOIN frames f ON f.id = b.frame_id WHERE b.sha256=? "
                f"AND b.suffix=? AND f.state IN {KEPT_STATES} LIMIT 1",
                (ref.sha256, ref.suffix),
            ).fetchone()
            if used is None:
                self.blob_path(ref).unlink(missing_ok=True)

    def _orphans(self) -> list[Path]:
        referenced = {
            sha + suffix
            for sha, suffix in self._db.execute(
                "SELECT b.sha256, b.suffix FROM blobs b JOIN frames f ON f.id = b.frame_id "
                f"WHERE f.state IN {KEPT_STATES}"
            )
        }
        return [p for p in self.objects.glob("*/*") if p.name not in referenced]

    def _recover(self) -> None:
        """After a crash: drop temporary files and files no waiting frame refers to."""
        stale = list(self.tmp.iterdir())
        for path in stale:
            path.unlink(missing_ok=True)
        orphans = self._orphans()
        for path in orphans:
            path.unlink(missing_ok=True)
        if stale or orphans:
            log.info(
                "outbox recovered root=%s temporary_removed=%d orphans_removed=%d",
                self.root,
                len(stale),
                len(orphans),
            )


def _blobs_of(frame: FlaggedFrame) -> list[tuple[BlobRef, bytes]]:
    """The files of a frame with their bytes: image, heat map (.npy), context images."""
    items = [("image", frame.image, SUFFIXES[frame.image_format])]
    if frame.heatmap is not None:
        buffer = io.BytesIO()
        np.save(buffer, frame.heatmap, allow_pickle=False)
        items.append(("heatmap", buffer.getvalue(), ".npy"))
    items.extend(
        (f"context:{c.frame_index}", c.image, SUFFIXES[c.image_format]) for c in frame.context
    )
    return [
        (BlobRef(role, hashlib.sha256(data).hexdigest(), suffix, len(data)), bytes(data))
        for role, data, suffix in items
    ]
