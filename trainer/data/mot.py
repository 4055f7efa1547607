"""MOTChallenge ground truth (``gt.txt``) with frames from a video file or an image folder.

Rows are ``frame,id,x,y,w,h,conf,...`` (comma separated, ``frame`` 1-based, ``x, y``
the top-left corner in pixels). Rows with ``conf == 0`` are ignore boxes. Two layouts
of the trailing columns exist:

- 10 columns (MOT15, PETS): ``...,conf,wx,wy,wz`` world coordinates, usually -1.
- 9 columns (MOT16/17/20): ``...,conf,class,visibility``. Class 1 (pedestrian) is a
  positive, classes 2, 7, 8, 12 (person on vehicle, static person, distractor,
  reflection) are ignore boxes, the rest (vehicles, occluders) are dropped.

Frames come from a video (frame ``f`` in the file is ``ImageRecord.frame == f - 1``)
or from a folder of images in natural name order (:func:`alscout.files.frame_files`:
``1.jpg, 2.jpg, 10.jpg``; frame ``f`` is the ``f``-th file), the order ``alscout stream``
and export read the folder in. Every
frame gets a record, with or without boxes, in frame order; ``image_id`` is the
0-based frame number.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import cv2

from alscout.errors import DataError, InvalidInputError
from alscout.files import frame_files
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord, clip_to_image
from alscout.trainer.data.images import video_info

__all__ = ["read_mot", "write_mot"]

log = logging.getLogger(__name__)

_IGNORE_CLASSES = {2, 7, 8, 12}


def _image_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: not a readable image (OpenCV could not decode it)")
    return image.shape[1], image.shape[0]


def _parse_rows(gt_path: Path) -> list[tuple[int, Box]]:
    """``(frame 1-based, box)`` for every kept row of ``gt_path``."""
    if not gt_path.is_file():
        raise DataError(f"{gt_path}: ground-truth file not found")
    lines = gt_path.read_text(encoding="utf-8").splitlines()
    rows: list[tuple[int, Box]] = []
    nonblank = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        nonblank += 1
        fields = [f.strip() for f in line.replace(";", ",").split(",")]
        if len(fields) < 6:
            raise DataError(f"{gt_path}:{number}: need at least 6 columns, got {len(fields)}")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{gt_path}:{number}: non-numeric value in {line!r}") from None
        frame = int(values[0])
        if frame != values[0] or frame < 1:
            raise DataError(f"{gt_path}:{number}: frame must be an integer >= 1, got {fields[0]}")
        conf = values[6] if len(values) > 6 else 1.0
        ignore = conf == 0
        if len(values) == 9:  # MOT16/17/20: a class column
            cls = int(values[7])
            if cls in _IGNORE_CLASSES:
                ignore = True
            elif cls not in (1, -1):
                continue
        box = Box(values[2], values[3], values[4], values[5], "person", ignore, int(values[1]))
        rows.append((frame, box))
    if nonblank == 0:
        raise DataError(f"{gt_path}: ground-truth file is empty")
    return rows


def read_mot(
    gt_path: Path | str, frames: Path | str | None = None, sequence: str | None = None
) -> Dataset:
    """Read a MOTChallenge ``gt.txt`` with its frames.

    ``frames``: a video file or a folder of frame images; None means the MOTChallenge
    layout ``SEQ/img1/`` next to ``SEQ/gt/gt.txt``. ``sequence``: a name for the
    records (default: the sequence folder's or video's name). Raises
    :class:`DataError` naming the file on a missing, empty or malformed file, a frame
    past the end, or a box outside the image (boxes partly outside are clipped).
    """
    gt_path = Path(gt_path)
    if frames is None:
        frames = gt_path.parent.parent / "img1"
        if not frames.is_dir():
            raise DataError(f"{gt_path}: no frames given and no img1/ folder at {frames}")
    frames = Path(frames)
    rows = _parse_rows(gt_path)
    files: list[Path] = []
    if frames.is_dir():
        files = frame_files(frames)
        count = len(files)
        width, height = _image_size(files[0])
        name = sequence or (frames.parent.name if frames.name == "img1" else frames.name)
    elif frames.is_file():
        count, width, height, _ = video_info(frames)
        name = sequence or frames.stem
    else:
        raise DataError(f"{frames}: frame source (video file or image folder) not found")
    by_frame: dict[int, list[Box]] = defaultdict(list)
    for frame, box in rows:
        if frame > count:
            raise DataError(
                f"{gt_path}: frame {frame} is past the last frame ({count}) of {frames}"
            )
        by_frame[frame].append(clip_to_image(box, width, height, f"{gt_path}: frame {frame}"))
    images = [
        ImageRecord(
            image_id=i,
            source=files[i] if files else frames,
            width=width,
            height=height,
            boxes=tuple(by_frame.get(i + 1, ())),
            frame=None if files else i,
            sequence=name,
        )
        for i in range(count)
    ]
    log.info("mot path=%s frames=%d boxes=%d", gt_path, count, len(rows))
    return Dataset(images=images, name=name)


def write_mot(dataset: Dataset, path: Path | str) -> Path:
    """Write ``dataset`` as a 10-column MOTChallenge ``gt.txt`` (conf 0 for ignore boxes).

    Frame numbers are ``record.frame + 1`` for video frames, else the record's position
    in the dataset plus one. All video frames must come from one video. Boxes without
    a track get fresh ids above the largest one used.
    """
    path = Path(path)
    videos = {Path(r.source) for r in dataset if r.frame is not None}
    if len(videos) > 1:
        raise InvalidInputError(
            f"a MOT file describes one sequence; the dataset holds frames of {len(videos)} videos"
        )
    next_id = 1 + max((b.track_id for r in dataset for b in r.boxes), default=0)
    next_id = max(next_id, 1)
    lines = []
    for position, record in enumerate(dataset):
        frame = (record.frame if record.frame is not None else position) + 1
        for box in record.boxes:
            track = box.track_id
            if track < 0:
                track, next_id = next_id, next_id + 1
            conf = 0 if box.ignore else 1
            lines.append(
                f"{frame},{track},{box.x:.2f},{box.y:.2f},{box.w:.2f},{box.h:.2f},{conf},-1,-1,-1"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    log.info("wrote mot path=%s rows=%d", path, len(lines))
    return path
