"""The output folder of ``alscout score``, committed one recording at a time.

Layout under ``DIR``::

    decisions.jsonl          every frame's final decision, as ``alscout stream --out``
    scores.parquet           one row per frame: ids, z, smoothed, decision, reason, model
    run.json                 the model and settings the folder was scored with
    parts/<unit>.jsonl       one recording's decision lines
    parts/<unit>.parquet     one recording's rows
    parts/<unit>.done        its commit record, written last
    .lock                    held (flock) by the one run writing the folder
    .staging/                local workers' staged flagged frames (emptied by each run)

A recording counts as done only when its ``.done`` record exists and names the SHA-256
of both its parts; each file is written to a temporary name, fsynced and renamed, the
record last. A run killed at any instant therefore leaves every recording either
committed whole or not at all: a re-run skips the committed ones and scores the others
again, overwriting whatever parts they left. ``decisions.jsonl`` and ``scores.parquet``
are rebuilt from the committed parts after each run (to a temporary name, then renamed),
sorted by recording and camera, so they hold each frame exactly once whatever order the
workers finished in and however often the run was interrupted.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError, DataError
from alscout.files import fsync_dir, write_atomic
from alscout.offline.plan import RecordingUnit, StreamClaim
from alscout.offline.scorer import RecordingResult

__all__ = ["OutputDir", "Committed", "SCORE_COLUMNS", "pending_units", "require_pyarrow"]

log = logging.getLogger(__name__)

#: the columns of scores.parquet, in order
SCORE_COLUMNS = (
    "recording_id",
    "camera_id",
    "frame_index",
    "z",
    "smoothed",
    "decision",
    "reason",
    "model_hash",
)


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet  # the writer and reader below
    except ImportError:
        raise ConfigError(
            "alscout score writes scores.parquet with pyarrow: pip install 'alscout[fleet]'"
        ) from None
    return pyarrow


def _schema() -> Any:
    pa = require_pyarrow()
    return pa.schema(
        [
            ("recording_id", pa.string()),
            ("camera_id", pa.string()),
            ("frame_index", pa.int64()),
            ("z", pa.float64()),
            ("smoothed", pa.float64()),
            ("decision", pa.string()),
            ("reason", pa.string()),
            ("model_hash", pa.string()),
        ]
    )


@dataclass(frozen=True)
class Committed:
    """A recording's commit record (``parts/<unit>.done``)."""

    unit_id: str
    source: str
    recording_id: str
    camera_id: str
    frames: int
    flagged: int
    uploaded: int
    jsonl_sha256: str
    parquet_sha256: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def claim(self) -> StreamClaim:
        """The stream it wrote, for :func:`~alscout.offline.plan.check_collisions`."""
        return StreamClaim(self.unit_id, self.source, self.recording_id, self.camera_id)


class OutputDir:
    """The folder ``root`` of one score run; :meth:`lock` it before writing."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.parts = self.root / "parts"
        self.decisions = self.root / "decisions.jsonl"
        self.scores = self.root / "scores.parquet"
        #: where workers on this machine stage flagged frames (emptied by each run)
        self.staging = self.root / ".staging"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for this run; :class:`ConfigError` when another run holds it."""
        self.parts.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"{self.root}: another alscout score is writing this folder"
                ) from None
            try:
                self._remove_temporaries()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_temporaries(self) -> None:
        """Temporary files a killed run left (this run holds the lock: none is in use)."""
        for folder in (self.root, self.parts):
            for path in folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)

    def check_run(self, identity: dict[str, Any]) -> None:
        """Record the run's model and settings; refuse a folder scored with others."""
        path = self.root / "run.json"
        if path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise DataError(f"{path}: unreadable run record ({error})") from None
            if stored != identity:
                changed = sorted(k for k in set(stored) | set(identity)
                                 if stored.get(k) != identity.get(k))  # fmt: skip
                raise ConfigError(
                    f"{self.root} holds scores of another model or settings (differs in "
                    f"{', '.join(changed)}); score into a new --out folder"
                )
            return
        write_atomic(path, json.dumps(identity, indent=1, sort_keys=True).encode(), sync_dir=True)

    def committed(self) -> dict[str, Committed]:
        """The recordings committed whole, by unit id (parts checked against the record)."""
        done = {}
        for marker in sorted(self.parts.glob("*.done")):
            try:
                record = Committed(**json.loads(marker.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as error:
                log.warning("ignoring a broken commit record path=%s error=%s", marker, error)
                continue
            jsonl, parquet = self._part_paths(record.unit_id)
            if _sha256(jsonl) != record.jsonl_sha256 or _sha256(parquet) != record.parquet_sha256:
                log.warning("parts do not match their commit record unit=%s", record.unit_id)
                continue
            done[record.unit_id] = record
        return done

    def commit(self, result: RecordingResult) -> Committed:
        """Write one recording's parts, then its commit record (each atomically)."""
        unit_id = result.unit.unit_id
        jsonl, parquet = self._part_paths(unit_id)
        lines = "".join(json.dumps(record) + "\n" for record in result.records).encode("utf-8")
        write_atomic(jsonl, lines)
        write_atomic(parquet, _parquet_bytes(result.records))
        record = Committed(
            unit_id=unit_id,
            source=result.unit.source,
            recording_id=result.recording_id,
            camera_id=result.camera_id,
            frames=result.frames,
            flagged=result.flagged,
            uploaded=result.uploaded,
            jsonl_sha256=hashlib.sha256(lines).hexdigest(),
            parquet_sha256=_sha256(parquet),
        )
        data = json.dumps(record.to_json(), indent=1, sort_keys=True).encode("utf-8")
        write_atomic(self.parts / f"{unit_id}.done", data, sync_dir=True)
        return record

    def merge(self) -> tuple[int, int]:
        """Rebuild decisions.jsonl and scores.parquet from the committed parts.

        Returns (recordings, frames). Recordings in (recording, camera) order.
        """
        pq = require_pyarrow().parquet
        done = sorted(self.committed().values(), key=lambda c: (c.recording_id, c.camera_id))
        frames = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".decisions.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for record in done:
                    out.write(self._part_paths(record.unit_id)[0].read_bytes())
                    frames += record.frames
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.decisions)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".scores.", suffix=".tmp")
        os.close(fd)
        try:
            with pq.ParquetWriter(tmp, _schema()) as writer:
                for record in done:
                    writer.write_table(pq.read_table(self._part_paths(record.unit_id)[1]))
            os.replace(tmp, self.scores)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.root)
        log.info("outputs merged root=%s recordings=%d frames=%d", self.root, len(done), frames)
        return len(done), frames

    def _part_paths(self, unit_id: str) -> tuple[Path, Path]:
        return self.parts / f"{unit_id}.jsonl", self.parts / f"{unit_id}.parquet"


def pending_units(units: list[RecordingUnit], done: dict[str, Committed]) -> list[RecordingUnit]:
    """The units not committed yet, in their order."""
    return [unit for unit in units if unit.unit_id not in done]


def _parquet_bytes(records: tuple[dict[str, Any], ...]) -> bytes:
    """One recording's rows as Parquet bytes (the scores.parquet columns)."""
    pa = require_pyarrow()
    table = pa.Table.from_pylist(
        [{name: record[name] for name in SCORE_COLUMNS} for record in records], schema=_schema()
    )
    buffer = io.BytesIO()
    pa.parquet.write_table(table, buffer)
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""
