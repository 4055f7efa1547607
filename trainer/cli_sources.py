"""Several annotated sources in one ``alscout train`` run, each with a sampling weight.

Every ``--data`` starts a source; the ``--format``, ``--images``, ``--frames`` and
``--weight`` options after it (up to the next ``--data``) belong to it, and options
given before the first ``--data`` belong to the first::

    alscout train --data pets/gt.txt --images pets/vtest.avi --frames 1-600 \\
        --data synth/annotations.json --weight 0.5 --data city/train --images city/img ...

Any mix of formats (MOT, COCO, CityPersons, the synthetic generator's COCO file).
``--weight W`` (default 1) samples the source as if it were listed ``W`` times per
epoch (:mod:`alscout.trainer.sampling`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError
from alscout.trainer.cli_train import _FORMATS, parse_range
from alscout.trainer.data.annotations import Dataset

__all__ = ["SourceSpec", "add_source_arguments", "source_specs", "concat_sources", "described"]


@dataclass(frozen=True)
class SourceSpec:
    """One ``--data`` and its options; ``frames`` 1-based inclusive."""

    data: Path
    format: str | None = None
    images: Path | None = None
    frames: tuple[int, int] | None = None
    weight: float = 1.0


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a weight must be > 0, got {text!r}")
    return value


class _SourceOption(argparse.Action):
    """Stores into ``namespace.sources``: a list of dicts, one per ``--data``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        sources: list[dict[str, Any]] = list(getattr(namespace, "sources", None) or [])
        key = self.source_key
        if key == "data":
            if sources and "data" not in sources[-1]:
                sources[-1]["data"] = values  # options came before the first --data
            else:
                sources.append({"data": values})
        else:
            if not sources:
                sources.append({})
            if key in sources[-1]:
                where = sources[-1].get("data", "the first source")
                parser.error(f"{option_string} given twice for --data {where}")
            sources[-1][key] = values
        namespace.sources = sources

    @property
    def source_key(self) -> str:
        """The option's name without dashes: the key it sets in its source."""
        return self.option_strings[0].removeprefix("--")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data`` (repeatable) with its per-source ``--format``, ``--images``,
    ``--frames`` and ``--weight``."""
    common: dict[str, Any] = {"action": _SourceOption, "dest": "sources", "default": None}
    parser.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="annotations: COCO json, MOT gt.txt or a CityPersons folder; repeat for "
        "several sources (the options below apply to the --data before them)",
        **common,
    )
    parser.add_argument(
        "--format", choices=_FORMATS, help="annotation format (default: guessed)", **common
    )
    parser.add_argument(
        "--images",
        type=Path,
        metavar="PATH",
        help="image root (COCO, CityPersons) or the video / frame folder (MOT)",
        **common,
    )
    parser.add_argument(
        "--frames",
        type=parse_range,
        metavar="FIRST-LAST",
        help="keep images FIRST..LAST (1-based, inclusive, in file order)",
        **common,
    )
    parser.add_argument(
        "--weight",
        type=_weight,
        metavar="W",
        help="sample this source as if listed W times per epoch (default 1; 0.5: half "
        "of it each epoch)",
        **common,
    )


def source_specs(namespace: argparse.Namespace) -> list[SourceSpec]:
    """The parsed sources; ConfigError when there is no ``--data``."""
    raw = getattr(namespace, "sources", None) or []
    if not raw or "data" not in raw[-1]:
        raise ConfigError("give at least one --data (annotations to train on)")
    return [SourceSpec(**entry) for entry in raw]


def concat_sources(
    datasets: Sequence[Dataset], weights: Sequence[float]
) -> tuple[Dataset, list[float]]:
    """One dataset holding every source's images in order, and one weight per image."""
    if len(datasets) != len(weights) or not datasets:
        raise ConfigError("need one weight per source, and at least one source")
    if len(datasets) == 1:
        return datasets[0], [float(weights[0])] * len(datasets[0])
    images = [record for data in datasets for record in data]
    labels = tuple(dict.fromkeys(label for data in datasets for label in data.labels))
    merged = Dataset(images=images, name="+".join(d.name for d in datasets), labels=labels)
    per_image = [float(w) for data, w in zip(datasets, weights, strict=True) for _ in data]
    return merged, per_image


def described(spec: SourceSpec, size: int) -> str:
    """``name (N images, weight W)`` for the log."""
    return f"{spec.data} ({size} images, weight {spec.weight:g})"
