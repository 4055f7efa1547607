"""Which annotation formats exist: one explicit registry of readers and writers.

Every reader takes the annotation path and an optional image/frame source and
returns a :class:`Dataset`; every writer takes a dataset and an output path. New
formats are added to :data:`FORMATS` by hand, so ``grep`` finds them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alscout.errors import DataError
from alscout.trainer.data.annotations import Dataset
from alscout.trainer.data.citypersons import read_citypersons, write_citypersons
from alscout.trainer.data.coco import read_coco, write_coco
from alscout.trainer.data.mot import read_mot, write_mot

__all__ = ["Format", "FORMATS", "get_format", "guess_format", "read_dataset", "write_dataset"]


@dataclass(frozen=True)
class Format:
    """A reader and a writer for one annotation format.

    ``read(annotations, images)``: ``images`` is the image root (COCO, CityPersons) or
    the video file / frame folder (MOT); None takes the format's default.
    ``write(dataset, out)``: a file (COCO, MOT) or a folder (CityPersons).
    """

    name: str
    description: str
    read: Callable[[Path, Path | None], Dataset]
    write: Callable[[Dataset, Path], Path]


def _write_citypersons(dataset: Dataset, out: Path) -> Path:
    write_citypersons(dataset, out)
    return out


FORMATS: dict[str, Format] = {
    "coco": Format(
        "coco",
        "COCO JSON instances file (person category; iscrowd/ignore are ignore boxes)",
        lambda path, images: read_coco(path, image_root=images),
        lambda dataset, out: write_coco(dataset, out),
    ),
    "mot": Format(
        "mot",
        "MOTChallenge gt.txt with frames from a video file or an image folder",
        lambda path, frames: read_mot(path, frames=frames),
        write_mot,
    ),
    "citypersons": Format(
        "citypersons",
        "CityPersons per-image JSON files (a file or a folder of them)",
        lambda path, images: read_citypersons(path, images=images),
        _write_citypersons,
    ),
}


def get_format(name: str, where: Path | str = "") -> Format:
    """The registered format ``name``; :class:`DataError` naming ``where`` otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        prefix = f"{where}: " if where else ""
        known = ", ".join(sorted(FORMATS))
        raise DataError(f"{prefix}unknown annotation format {name!r} (known: {known})") from None


def guess_format(path: Path | str) -> str:
    """Guess the format of ``path`` from its name and, for JSON, its top-level keys."""
    path = Path(path)
    if path.is_dir():
        return "citypersons"
    if path.suffix.lower() == ".txt":
        return "mot"
    if path.suffix.lower() == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "null")
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not valid JSON ({error})") from error
        if isinstance(data, dict) and "images" in data:
            return "coco"
        if isinstance(data, dict) and "objects" in data:
            return "citypersons"
    raise DataError(f"{path}: cannot tell the annotation format; name it (coco, mot, citypersons)")


def read_dataset(
    path: Path | str, fmt: str | None = None, images: Path | str | None = None
) -> Dataset:
    """Read annotations at ``path`` in format ``fmt`` (guessed when None)."""
    path = Path(path)
    name = guess_format(path) if fmt is None else fmt
    return get_format(name, path).read(path, None if images is None else Path(images))


def write_dataset(dataset: Dataset, path: Path | str, fmt: str) -> Path:
    """Write ``dataset`` to ``path`` in format ``fmt``; returns what was written."""
    path = Path(path)
    return get_format(fmt, path).write(dataset, path)
