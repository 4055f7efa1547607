"""What a crash harness checks at the end: the sink against the acknowledgements, the store.

Shared by tests/server/test_crash_harness.py and tests/server/crash_rounds.py. A folder
sink holds ``blobs/<sha256><suffix>`` and ``frames/<recording>/<camera>/<frame>.json``
(docs/outbox.md, "Upload"); files whose name starts with "." are temporary files of an
upload killed midway and never count.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from alscout.server.durable_outbox import INDEX_NAME, DurableOutbox

__all__ = ["SinkView", "Verdict", "read_sink", "verify_crash", "pending_count", "temp_files"]

#: (recording_id, camera_id, frame_index)
Key = tuple[str, str, int]


@dataclass(frozen=True)
class SinkView:
    """``records``: key -> JSON record; ``image_of``: key -> sha256 of the image its record
    names; ``bad_blobs``: blob files whose bytes do not hash to their name."""

    records: dict[Key, dict]
    image_of: dict[Key, str]
    bad_blobs: tuple[str, ...]

    def duplicates(self) -> dict[str, list[Key]]:
        """Image sha256 -> the records naming it, where more than one does."""
        by_hash: dict[str, list[Key]] = {}
        for key, digest in self.image_of.items():
            by_hash.setdefault(digest, []).append(key)
        return {digest: keys for digest, keys in by_hash.items() if len(keys) > 1}


def read_sink(sink: Path) -> SinkView:
    """Every record and blob of a folder sink (temporary files left out)."""
    records: dict[Key, dict] = {}
    image_of: dict[Key, str] = {}
    for path in sorted((sink / "frames").rglob("*.json")):
        if path.name.startswith("."):
            continue
        record = json.loads(path.read_text())
        key = (record["recording_id"], record["camera_id"], record["frame_index"])
        records[key] = record
        image_of[key] = Path(record["keys"]["image"]).name.split(".")[0]
    bad = []
    for path in sorted((sink / "blobs").glob("*")) if (sink / "blobs").exists() else []:
        if path.name.startswith("."):
            continue
        if not path.name.startswith(hashlib.sha256(path.read_bytes()).hexdigest()):
            bad.append(path.name)
    return SinkView(records, image_of, tuple(bad))


def temp_files(folder: Path) -> int:
    """Files under ``folder`` a killed writer left behind (``tmp/*`` or ``.*.tmp``)."""
    if not folder.exists():
        return 0
    return sum(
        1
        for p in folder.rglob("*")
        if p.is_file() and (p.parent.name == "tmp" or p.name.endswith(".tmp"))
    )


def torn_put(outbox_dir: Path) -> bool:
    """Whether a killed writer left a ``put`` half done: a file in ``tmp/``, or a file in
    ``objects/`` that no row of the index names (written, row not committed)."""
    if temp_files(outbox_dir / "tmp"):
        return True
    index = outbox_dir / INDEX_NAME
    if not index.exists():
        return False
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=30.0)
    try:
        named = {sha + suffix for sha, suffix in db.execute("SELECT sha256, suffix FROM blobs")}
    finally:
        db.close()
    return any(p.name not in named for p in (outbox_dir / "objects").rglob("*") if p.is_file())


def pending_count(outbox_dir: Path) -> int:
    """Frames waiting for upload, read without opening (and so recovering) the store."""
    index = outbox_dir / INDEX_NAME
    if not index.exists():
        return 0
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=30.0)
    try:
        return db.execute("SELECT COUNT(*) FROM frames WHERE state='pending'").fetchone()[0]
    finally:
        db.close()


@dataclass
class Verdict:
    """Findings of :func:`verify_crash`; ``ok`` when every list is empty."""

    acknowledged: int
    sink_records: int
    stored_rows: int
    stored_unacknowledged: int
    orphans: int
    missing: list[Key] = field(default_factory=list)
    wrong_bytes: list[Key] = field(default_factory=list)
    duplicates: dict[str, list[Key]] = field(default_factory=dict)
    not_uploaded: list[Key] = field(default_factory=list)
    unknown_in_sink: list[Key] = field(default_factory=list)
    too_close: list[tuple[Key, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.wrong_bytes
            or self.duplicates
            or self.not_uploaded
            or self.unknown_in_sink
            or self.too_close
            or self.problems
        )


def verify_crash(
    outbox_dir: Path, sink: Path, acks: dict[Key, str], dt2: int | None = None
) -> Verdict:
    """Compare a drained store and its sink with the acknowledged frames.

    ``acks``: key -> sha256 of the bytes the client sent for a frame it was told FLAGGED.
    Checks: the store checks clean (index integrity, files by hash, no temporary files);
    every acknowledged frame is in the sink once, with those bytes, and ``uploaded`` in
    the store; no image is in the sink under two records; everything in the sink is a
    frame the store uploaded; with ``dt2``, stored frames of one stream are more than
    ``dt2`` apart (SPEC §2b: a re-scored recording never re-sends a neighbour).
    """
    with DurableOutbox(outbox_dir) as outbox:
        report = outbox.check()
        rows = {(f.recording_id, f.camera_id, f.frame_index): f for f in outbox.frames()}
    view = read_sink(sink)
    stored = {k: f for k, f in rows.items() if f.state in ("pending", "uploaded")}
    verdict = Verdict(
        acknowledged=len(acks),
        sink_records=len(view.records),
        stored_rows=len(stored),
        stored_unacknowledged=len(set(stored) - set(acks)),
        orphans=report.orphans,
        problems=[
            *report.problems,
            *(f"blob {b} is not what its name says" for b in view.bad_blobs),
        ],
        duplicates=view.duplicates(),
    )
    for key, digest in sorted(acks.items()):
        if key not in view.records:
            verdict.missing.append(key)
        elif view.image_of[key] != digest:
            verdict.wrong_bytes.append(key)
        if key not in rows or rows[key].state != "uploaded":
            verdict.not_uploaded.append(key)
    verdict.unknown_in_sink = sorted(
        k for k in view.records if k not in rows or rows[k].state != "uploaded"
    )
    if dt2 is not None:
        by_stream: dict[tuple[str, str], list[int]] = {}
        for rec, cam, frame in stored:
            by_stream.setdefault((rec, cam), []).append(frame)
        for (rec, cam), frames in by_stream.items():
            frames.sort()
            verdict.too_close += [
                ((rec, cam, b), a) for a, b in itertools.pairwise(frames) if b - a <= dt2
            ]
    return verdict


def summary_counts(verdict: Verdict) -> dict[str, int]:
    """The verdict's figures by name (for a report line)."""
    return dict(
        acknowledged=verdict.acknowledged,
        sink_records=verdict.sink_records,
        stored=verdict.stored_rows,
        stored_unacknowledged=verdict.stored_unacknowledged,
        missing=len(verdict.missing),
        duplicates=sum(len(v) - 1 for v in verdict.duplicates.values()),
        wrong_bytes=len(verdict.wrong_bytes),
        too_close=len(verdict.too_close),
    )
