"""Who labels the frames a cycle picks (the paper's Step 5, "annotate").

- :class:`GroundTruthOracle`: the pool's own annotations (the experiments).
- :class:`FileOracle`: a human labeling round. The first call writes the cycle's
  labeling request (``to_label.json``: one entry per frame with its source, frame
  number and size) and raises :class:`LabelingPending`; the driver has saved its
  state, so ``alscout al run`` exits and, run again once ``labels.json`` (COCO, the
  request's ``image_id`` s) exists next to the request, resumes with those labels.
  Any tool that answers COCO keyed by the request's image ids closes the loop.
- :class:`FleetOracle`: a human labeling round through the fleet's tools. The first
  call writes the cycle's frames as a fleet :class:`~alscout.trainer.fleet.pool.LabelPool`
  (``cycle_dir/label_pool/``, item id = the frame's image id) and pauses;
  ``alscout fleet export-tasks`` exports it for the labeling tool and ``alscout fleet
  import-labels`` imports the tool's COCO into it. Once every item is labeled, the
  run resumes with those labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from alscout.errors import CapacityError, DataError
from alscout.files import write_atomic
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord

__all__ = ["Oracle", "GroundTruthOracle", "FileOracle", "FleetOracle", "LabelingPending"]

log = logging.getLogger(__name__)

REQUEST_FILE = "to_label.json"
LABELS_FILE = "labels.json"
LABEL_POOL_DIR = "label_pool"


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


class FleetOracle:
    """Asks a person through the fleet's export/import: ``cycle_dir/label_pool/``."""

    def __init__(self, pool: Dataset) -> None:
        self.pool = pool

    def label(self, positions: Sequence[int], cycle_dir: Path) -> list[ImageRecord]:
        """Labels from the cycle's label pool; while any frame lacks them, pause.

        The first call stores the frames (PNG, full size, so labels are in the
        frames' own pixels) and the pool's manifest, then raises
        :class:`LabelingPending` with the commands that close the round.
        """
        from alscout.trainer.fleet.pool import LabelPool

        root = cycle_dir / LABEL_POOL_DIR
        records = [self.pool[int(p)] for p in positions]
        label_pool = LabelPool(root)
        if not label_pool.items:
            _fill_label_pool(label_pool, records, cycle_dir.name)
        items = {item.item_id: item for item in label_pool.items}
        foreign = [r.image_id for r in records if r.image_id not in items]
        if foreign or len(items) != len(records):
            raise DataError(
                f"{label_pool.manifest_path}: holds other frames than this cycle asks for "
                f"(missing image ids {foreign[:10]}); move the folder away and run again"
            )
        waiting = sum(not items[r.image_id].labeled for r in records)
        if waiting:
            raise LabelingPending(
                f"{waiting} of {len(records)} frames wait for labels: alscout fleet "
                f"export-tasks --pool {root} --out {root / 'tasks'}; label them; alscout "
                f"fleet import-labels --pool {root} LABELS.json; then run again"
            )
        return [replace(r, boxes=tuple(items[r.image_id].boxes or ())) for r in records]


def _fill_label_pool(label_pool: Any, records: Sequence[ImageRecord], round_name: str) -> None:
    """Store ``records``' pixels in ``label_pool`` and list them, unlabeled, in its manifest."""
    import cv2

    from alscout.trainer.data.images import load_image
    from alscout.trainer.fleet.pool import PoolItem, now_iso

    if len({r.image_id for r in records}) != len(records):
        raise DataError(f"{label_pool.root}: the frames to label repeat an image id")
    items = []
    for record in records:
        image = load_image(record)
        height, width = image.shape[:2]
        if (width, height) != (record.width, record.height):
            raise DataError(
                f"{record.source}: frame {record.frame} is {width}x{height}, its record says "
                f"{record.width}x{record.height}"
            )
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise DataError(f"{record.source}: frame {record.frame} could not be encoded as PNG")
        data = encoded.tobytes()
        name = record.sequence or Path(record.source).stem
        recording = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "al"
        frame = record.frame if record.frame is not None else record.image_id
        relative = f"images/{recording}/al/{record.image_id:08d}.png"
        label_pool.write_image(relative, data)
        items.append(
            PoolItem(
                item_id=record.image_id, file=relative, recording_id=recording,
                camera_id="al", frame_index=int(frame), width=width, height=height,
                phash="", sha256=hashlib.sha256(data).hexdigest(),
                source=f"alscout al {round_name}", ingested=now_iso(),
            )
        )  # fmt: skip
    with label_pool.edit() as state:
        state.items.extend(items)
    log.info("label pool written root=%s frames=%d", label_pool.root, len(items))


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
