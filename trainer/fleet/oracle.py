"""An oracle labeler for synthetic recordings: ground truth answers the labeling tasks.

In the paper's experiments (and in our end-to-end test) the labels a human would
draw are the dataset's ground truth. :func:`oracle_labels` looks up each pool item's
recording and frame in the ground truth of that recording and writes the COCO
labels file a labeling tool would return for the exported tasks (same ``id`` and
``file_name``), so the round trip through :func:`~alscout.trainer.fleet.tasks.import_labels`
is the same as with human labels. Boxes are scaled when the uploaded frame's size
differs from the ground truth's (a vehicle may stream downscaled frames).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from alscout.errors import DataError
from alscout.trainer.data.annotations import Dataset, ImageRecord
from alscout.trainer.data.coco import write_coco
from alscout.trainer.fleet.pool import LabelPool, PoolItem

__all__ = ["frames_by_index", "oracle_labels"]

log = logging.getLogger(__name__)


def frames_by_index(ground_truth: Dataset) -> dict[int, ImageRecord]:
    """A recording's records by 0-based frame index (``frame``, else file order)."""
    frames: dict[int, ImageRecord] = {}
    for position, record in enumerate(ground_truth):
        index = record.frame if record.frame is not None else position
        if index in frames:
            raise DataError(f"{ground_truth.name}: frame {index} appears twice in the ground truth")
        frames[index] = record
    return frames


def oracle_labels(
    pool: LabelPool,
    ground_truth: Mapping[str, Dataset],
    out_file: str | Path,
    *,
    items: Sequence[PoolItem] | None = None,
) -> Path:
    """Write COCO labels for ``items`` (default: unlabeled ones) from ``ground_truth``.

    ``ground_truth``: recording id -> that recording's annotated frames. Items of
    recordings without ground truth are left out (logged); an item whose frame is
    missing from its recording's ground truth raises :class:`DataError`.
    """
    chosen = list(pool.unlabeled() if items is None else items)
    tables = {recording: frames_by_index(data) for recording, data in ground_truth.items()}
    records = []
    skipped = 0
    for item in chosen:
        table = tables.get(item.recording_id)
        if table is None:
            skipped += 1
            continue
        truth = table.get(item.frame_index)
        if truth is None:
            raise DataError(
                f"ground truth of {item.recording_id} has no frame {item.frame_index} "
                f"(pool image {item.file})"
            )
        sx, sy = item.width / truth.width, item.height / truth.height
        boxes = tuple(box.scaled(sx, sy) for box in truth.boxes)
        records.append(
            ImageRecord(
                image_id=item.item_id,
                source=pool.image_path(item),
                width=item.width,
                height=item.height,
                boxes=boxes,
                sequence=f"{item.recording_id}/{item.camera_id}",
            )
        )
    if skipped:
        log.warning("oracle has no ground truth for %d pool images; left unlabeled", skipped)
    path = write_coco(Dataset(records, name="alscout-oracle"), out_file, pool.root)
    log.info("oracle labels out=%s images=%d skipped=%d", path, len(records), skipped)
    return path
