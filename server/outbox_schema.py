"""The durable outbox's index on disk: its SQLite schema, its migration, its permissions.

:class:`~alscout.server.durable_outbox.DurableOutbox` opens the index with this schema,
brings an older index up to it with :func:`migrate`, and keeps its folders and files
private to the owner (:func:`make_private`).
"""

from __future__ import annotations

import logging
import sqlite3
import stat
from pathlib import Path

__all__ = [
    "STATES",
    "INDEX_NAME",
    "KEPT_STATES",
    "FOLDER_MODE",
    "FILE_MODE",
    "SCHEMA",
    "migrate",
    "make_private",
]

log = logging.getLogger(__name__)

#: pending: waiting for upload; uploaded: the sink confirmed it (files released, row kept
#: for the dt2 rule); evicted: dropped under the quota; corrupt: a file failed its hash;
#: parked: the sink refused it for good (files and reason kept, out of the upload queue)
STATES = ("pending", "uploaded", "evicted", "corrupt", "parked")
INDEX_NAME = "index.sqlite3"
#: states whose files are on disk (and count in the quota)
KEPT_STATES = "('pending', 'parked')"
#: the outbox's folders and files are the car's data: owner only, whatever the umask
FOLDER_MODE = 0o700
FILE_MODE = 0o600
_FRAMES_TABLE = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    recording_id TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'uploaded', 'evicted', 'corrupt', 'parked')),
    smoothed REAL NOT NULL,
    nbytes INTEGER NOT NULL,
    record TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    reason TEXT,
    UNIQUE (recording_id, camera_id, frame_index)
);
"""
#: the columns of an index written before parked frames existed (no ``reason``)
_OLD_COLUMNS = (
    "id, recording_id, camera_id, frame_index, state, smoothed, nbytes, record, created_ns, "
    "updated_ns"
)
_FRAMES_INDEX = "CREATE INDEX IF NOT EXISTS frames_by_state ON frames (state, smoothed);\n"
SCHEMA = (
    _FRAMES_TABLE
    + _FRAMES_INDEX
    + """
CREATE TABLE IF NOT EXISTS blobs (
    frame_id INTEGER NOT NULL REFERENCES frames (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    suffix TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    PRIMARY KEY (frame_id, role)
);
CREATE INDEX IF NOT EXISTS blobs_by_hash ON blobs (sha256, suffix);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
)


def migrate(db: sqlite3.Connection, root: Path) -> None:
    """Bring an index written before parked frames existed to this schema.

    The caller holds the outbox lock. SQLite cannot change a CHECK constraint in place,
    so the table is rebuilt in one transaction (SQLite's documented procedure), with
    foreign keys off meanwhile so
    that dropping the old table does not cascade to ``blobs``; rows keep their ids, so
    ``blobs`` still points at them.
    """
    (sql,) = db.execute(
        "SELECT sql FROM sqlite_master WHERE type='table' AND name='frames'"
    ).fetchone()
    if "'parked'" in sql:
        return
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_FRAMES_TABLE.replace("IF NOT EXISTS frames (", "frames_new (", 1))
            db.execute(f"INSERT INTO frames_new ({_OLD_COLUMNS}) SELECT {_OLD_COLUMNS} FROM frames")
            db.execute("DROP TABLE frames")
            db.execute("ALTER TABLE frames_new RENAME TO frames")
            db.execute(_FRAMES_INDEX)  # dropped with the old table
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    finally:
        db.execute("PRAGMA foreign_keys=ON")
    log.info("outbox index migrated root=%s change=parked_state", root)


def make_private(path: Path, mode: int) -> None:
    """Give ``path`` exactly ``mode`` (umask or an older version may have left it looser)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
    except FileNotFoundError:
        pass  # e.g. no -wal file yet: SQLite creates it with the index's mode
    except OSError as error:  # not ours to change (another user's store): say so, go on
        log.warning("cannot restrict permissions path=%s mode=%o error=%s", path, mode, error)
