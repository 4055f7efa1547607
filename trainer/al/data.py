"""The image sets of an experiment: made once (synthetic) or read (annotation files).

Synthetic sets are generated into ``<out>/data/<role>-<digest>/``, where the digest
covers the recipe; a ``.complete`` marker written after generation lets a resumed or
repeated run read them back instead of drawing them again. Real sets are read with
``alscout train``'s data loading (same formats, same 1-based frame ranges).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from alscout.errors import DataError
from alscout.trainer.al.config import DataSpec
from alscout.trainer.data.annotations import Dataset

__all__ = ["load_spec", "sequences", "is_video", "count_instances"]

log = logging.getLogger(__name__)

_MARKER = ".complete"


def _digest(spec: DataSpec) -> str:
    text = json.dumps(asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_spec(spec: DataSpec, cache: Path, role: str) -> Dataset:
    """The data set ``spec`` describes; synthetic ones are cached under ``cache``.

    Raises :class:`DataError` (naming the file) when an annotation file is missing or
    unreadable, :class:`~alscout.errors.InvalidInputError` for a frame range past the end.
    """
    if spec.synth:
        return _synthetic(spec, cache / f"{role}-{_digest(spec)}")
    from alscout.trainer.cli_train import load_data

    path = spec.annotations
    if path is None or not path.exists():
        raise DataError(f"{path}: annotations of the {role} set not found")
    data = load_data(path, None, spec.images, spec.frames)
    log.info("data role=%s source=%s images=%d boxes=%d", role, path, len(data), data.num_boxes)
    return data


def _synthetic(spec: DataSpec, folder: Path) -> Dataset:
    from alscout.trainer.data.formats import read_dataset
    from alscout.trainer.synth import domain_preset, generate_stills, generate_video

    annotations = folder / "annotations.json"
    if (folder / _MARKER).is_file():
        return read_dataset(annotations, "coco", folder)
    domain = domain_preset(spec.domain).with_(**spec.domain_changes)
    width, height = spec.size
    if spec.synth == "stills":
        data = generate_stills(folder, spec.count, domain, spec.seed, width, height)
    else:
        data = generate_video(folder, spec.count, domain, spec.seed, width, height)
    (folder / _MARKER).write_text("", encoding="utf-8")
    return data


def is_video(spec: DataSpec, data: Dataset) -> bool:
    """Whether frame order is time: ``spec.video`` if given, else synthetic video or
    records that carry a frame number."""
    if spec.video is not None:
        return spec.video
    if spec.synth:
        return spec.synth == "video"
    return bool(len(data)) and all(r.is_video_frame for r in data)


def sequences(data: Dataset) -> list[np.ndarray]:
    """Positions of each recording, in data-set order (grouped by ``sequence``, else by
    source video; stills form one group)."""
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(data):
        key = record.sequence or (str(record.source) if record.is_video_frame else "")
        groups.setdefault(key, []).append(i)
    return [np.asarray(g, np.int64) for g in groups.values()]


def count_instances(data: Dataset, positions: list[int] | np.ndarray) -> int:
    """Pedestrian instances (boxes not marked ignore) in the images at ``positions``."""
    return sum(1 for p in positions for b in data[int(p)].boxes if not b.ignore)
