"""Who labels the frames a cycle picks (the paper's Step 5, "annotate").

- :class:`GroundTruthOracle`: the pool's own annotations (the experiments).
- :class:`FileOracle`: a human labeling round. The first call writes the cycle's
  labeling request (``to_label.json``: one entry per frame with its source, frame
  number and size) and raises :class:`LabelingPending`; the driver has saved its
  state, so ``alscout al run`` exits and, run again once ``labels.json`` (COCO, the
  request's ``image_id`` s) exists next to the request, resumes with those labels.
  The fleet's labeling export/import (``alscout fleet export-tasks`` /
  ``import-labels``) produces and consumes exactly these two files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from alscout.errors import CapacityError, DataError
from alscout.files import write_atomic
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord

__all__ = ["Oracle", "GroundTruthOracle", "FileOracle", "LabelingPending"]

log = logging.getLogger(__name__)

REQUEST_FILE = "to_label.json"
LABELS_FILE = "labels.json"


class LabelingPending(CapacityError):  # noqa: N818 (a state the caller waits out, not a fault)
    """Labels for a cycle are not there yet; run again once the labels file exists."""


class Oracle(Protocol):
    """Labels pool frames: ``label(positions, cycle_dir) -> records`` in the same order."""

    def label(self, positions: Sequence[int], cycle_dir: Path) -> list[ImageRecord]:
        """The labeled records of pool ``positions``; may raise :class:`LabelingPending`."""
        ...


class GroundTruthOracle:
    """Answers with the pool's ground truth."""

    def __init__(self, pool: Dataset) -> None:
        self.pool = pool

    def label(self, positions: Sequence[int], cycle_dir: Path) -> list[ImageRecord]:
        """``pool[p]`` for each position."""
        return [self.pool[int(p)] for p in positions]


class FileOracle:
    """Asks a person: writes ``cycle_dir/to_label.json``, reads ``cycle_dir/labels.json``."""

    def __init__(self, pool: Dataset) -> None:
        self.pool = pool

    def label(self, positions: Sequence[int], cycle_dir: Path) -> list[ImageRecord]:
        """Labels from ``labels.json``; without it, write the request and pause."""
        labels = cycle_dir / LABELS_FILE
        records = [self.pool[int(p)] for p in positions]
        if not labels.is_file():
            self._write_request(records, cycle_dir / REQUEST_FILE)
            raise LabelingPending(
                f"{len(records)} frames wait for labels: label the frames listed in "
                f"{cycle_dir / REQUEST_FILE}, write {labels} (COCO) and run again"
            )
        return _read_labels(labels, records)

    @staticmethod
    def _write_request(records: Sequence[ImageRecord], path: Path) -> None:
        entries = [
            {
                "image_id": r.image_id,
                "source": str(r.source),
                "frame": r.frame,
                "width": r.width,
                "height": r.height,
                "sequence": r.sequence,
            }
            for r in records
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(entries, indent=1).encode("utf-8"))
        log.info("labeling request written path=%s frames=%d", path, len(entries))


def _read_labels(path: Path, records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """The records with the boxes ``path`` (COCO) gives for their ``image_id`` s."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = {int(i["id"]) for i in data["images"]}
        annotations = data.get("annotations", [])
        boxes: dict[int, list[Box]] = {}
        for n, a in enumerate(annotations):
            x, y, w, h = (float(v) for v in a["bbox"])
            if w <= 0 or h <= 0:
                raise DataError(f"{path}: annotation {n} has a box without area")
            ignore = bool(a.get("ignore", 0) or a.get("iscrowd", 0))
            boxes.setdefault(int(a["image_id"]), []).append(Box(x, y, w, h, ignore=ignore))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a COCO labels file ({error})") from error
    missing = [r.image_id for r in records if r.image_id not in images]
    if missing:
        raise DataError(f"{path}: no entry for requested images {missing[:10]}")
    return [replace(r, boxes=tuple(boxes.get(r.image_id, ()))) for r in records]
