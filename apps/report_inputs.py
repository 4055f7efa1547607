"""What a report reads: the decisions JSONL, flagged frames from the outbox or a sink,
the run facts ``alscout demo`` records, and latency quantiles from Prometheus text.

Every reader raises :class:`~alscout.errors.DataError` naming the file (and line) that
is wrong; a frame whose bytes cannot be found comes back with ``problem`` set instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import DataError, InvalidInputError

__all__ = [
    "DecisionRow",
    "FrameView",
    "load_decisions",
    "load_flagged_frames",
    "load_run_info",
    "histogram_quantile",
    "latency_quantiles",
    "LatencySummary",
    "Quantile",
]

log = logging.getLogger(__name__)

#: the JSONL values of "decision" (server/cli_stream.py writes them)
_DECISIONS = {"flagged": True, "not_flagged": False}


@dataclass(frozen=True)
class DecisionRow:
    """One line of the decisions file. Scores are floats; ``nan`` where the file has null."""

    recording_id: str
    camera_id: str
    frame_index: int
    flagged: bool
    reason: str
    z: float
    smoothed: float
    threshold: float


@dataclass(frozen=True)
class FrameView:
    """A flagged frame as the report shows it.

    ``image``: ``[H, W, 3]`` uint8 RGB as the camera sent it, or None when it could not
    be found. ``heatmap``: ``[h, w]`` float32 block maxima of the score map S (cells of
    ``heatmap_stride`` pixels at the model's input size), or None. ``location``: where
    the bytes were read from; ``problem``: why something is missing ("" if nothing).
    """

    decision: DecisionRow
    image: np.ndarray | None
    heatmap: np.ndarray | None
    location: str
    problem: str = ""


# ------------------------------------------------------------------------- inputs


def load_decisions(path: Path) -> list[DecisionRow]:
    """Read a decisions JSONL file, sorted by (recording, camera, frame).

    Raises :class:`DataError` naming the file and line when it is missing, a line is
    not a decision record, or a frame appears twice.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: decisions file missing (write it with alscout stream)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the decisions file: {error}") from error
    rows: dict[tuple[str, str, int], DecisionRow] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
            row = DecisionRow(
                recording_id=str(record["recording_id"]),
                camera_id=str(record["camera_id"]),
                frame_index=_index(record["frame_index"]),
                flagged=_DECISIONS[record["decision"]],
                reason=str(record.get("reason", "")),
                z=_number(record.get("z")),
                smoothed=_number(record.get("smoothed")),
                threshold=_number(record.get("threshold")),
            )
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not JSON: {error.msg}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{where}: not a decision record ({error!r})") from None
        key = (row.recording_id, row.camera_id, row.frame_index)
        if key in rows:
            raise DataError(f"{where}: frame {key} has a second decision")
        rows[key] = row
    if not rows:
        raise DataError(f"{path}: no decisions in the file")
    return [rows[key] for key in sorted(rows)]


def _index(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"frame_index must be an integer >= 0, got {value!r}")
    return value


def _number(value: object) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number or null, got {value!r}")
    return float(value)


def load_flagged_frames(
    flagged: list[DecisionRow], outbox: Path | None, sink: Path | None
) -> list[FrameView]:
    """Images and heat maps of ``flagged`` frames: from the outbox while they wait for
    upload, from the directory ``sink`` once uploaded (the outbox then frees them)."""
    if outbox is None:
        return [_from_sink(d, sink, None) for d in flagged]
    from alscout.server.durable_outbox import INDEX_NAME, DurableOutbox

    if not (outbox / INDEX_NAME).is_file():
        raise DataError(f"{outbox}: not an outbox folder (no {INDEX_NAME}); pass --outbox DIR")
    views = []
    with DurableOutbox(outbox) as store:
        stored = {(f.recording_id, f.camera_id, f.frame_index): f for f in store.frames()}
        for decision in flagged:
            row = stored.get((decision.recording_id, decision.camera_id, decision.frame_index))
            if row is not None and row.state == "pending":
                views.append(_from_outbox(decision, store, row))
            elif row is not None and row.state in ("evicted", "corrupt"):
                views.append(FrameView(decision, None, None, "outbox", f"{row.state} in outbox"))
            else:
                views.append(_from_sink(decision, sink, row))
    return views


def _from_outbox(decision: DecisionRow, store: Any, row: Any) -> FrameView:
    refs = {ref.role: ref for ref in row.blobs}
    try:
        image = _decode(store.read_blob(refs["image"]), row.record)
        heat = _heatmap(store.read_blob(refs["heatmap"])) if "heatmap" in refs else None
    except ValueError as error:  # DataError, or the decoder's InvalidInputError
        return FrameView(decision, None, None, "outbox", str(error))
    return FrameView(decision, image, heat, "outbox (waiting for upload)")


def _from_sink(decision: DecisionRow, sink: Path | None, row: Any) -> FrameView:
    if sink is None:
        where = "uploaded" if row is not None else "not in the outbox"
        return FrameView(decision, None, None, "-", f"{where}; pass --sink to show it")
    from alscout.errors import SinkError
    from alscout.storage.layout import record_key

    key = record_key(decision.recording_id, decision.camera_id, decision.frame_index)
    if not (sink / key).is_file():
        return FrameView(decision, None, None, "-", "in neither the outbox nor the sink")
    try:
        record = json.loads((sink / key).read_text(encoding="utf-8"))
        keys = record["keys"]
        image = _decode(_sink_blob(sink, keys["image"]), record)
        heat = _heatmap(_sink_blob(sink, keys["heatmap"])) if "heatmap" in keys else None
    except (OSError, KeyError, TypeError, ValueError, SinkError) as error:
        return FrameView(decision, None, None, f"sink {key}", f"unreadable upload: {error}")
    return FrameView(decision, image, heat, f"sink {key}")


def _sink_blob(sink: Path, key: str) -> bytes:
    from alscout.storage.sinks import check_key

    data = (sink / check_key(key)).read_bytes()  # a key may not leave the sink
    expected = Path(key).name.split(".")[0]
    if hashlib.sha256(data).hexdigest() != expected:
        raise DataError(f"{sink / key}: content does not match its sha256 name")
    return data


def _decode(data: bytes, record: dict[str, Any]) -> np.ndarray:
    from alscout.runtime.decode import decode_frame

    return decode_frame(
        data,
        encoding=str(record.get("image_format", "jpeg")),
        width=int(record.get("width") or 0),
        height=int(record.get("height") or 0),
        pixel_format=str(record.get("pixel_format") or "rgb8"),
    )


def _heatmap(data: bytes) -> np.ndarray:
    heat = np.load(io.BytesIO(data), allow_pickle=False)
    if heat.ndim != 2:
        raise DataError(f"heat map has shape {heat.shape}, expected [h, w]")
    return heat.astype(np.float32)


def load_run_info(path: Path) -> dict[str, Any]:
    """The run facts ``alscout demo`` writes (a JSON object)."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: run info file missing") from None
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable JSON file: {error}") from error
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object")
    return info


# ------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Quantile:
    """A latency quantile in milliseconds. ``beyond``: it fell in the ``+Inf`` bucket,
    so all the histogram knows is that it exceeds ``ms``, the largest finite bound."""

    ms: float
    beyond: bool = False

    def __str__(self) -> str:
        if not self.beyond:
            return f"{self.ms:.1f} ms"
        return f"> {self.ms / 1e3:g} s" if self.ms >= 1e3 else f"> {self.ms:g} ms"


@dataclass(frozen=True)
class LatencySummary:
    """Quantiles of one stage's latency histogram and its number of samples."""

    p50: Quantile
    p90: Quantile
    p99: Quantile
    count: int


def _locate(q: float, buckets: list[tuple[float, float]]) -> tuple[float, bool]:
    """(the ``q`` quantile, whether it lies in the ``+Inf`` bucket); see below."""
    if not 0.0 <= q <= 1.0:
        raise InvalidInputError(f"q must be in [0, 1], got {q}")
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan, False
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower, True
            return lower + (bound - lower) * (rank - below) / (count - below), False
        lower, below = bound, count
    return lower, False


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The ``q`` quantile of a cumulative histogram, interpolated as Prometheus does.

    ``buckets``: (upper bound, cumulative count) pairs, any order, the last bound
    ``inf``. Returns ``nan`` for an empty histogram; a quantile in the ``+Inf`` bucket
    is the largest finite bound (a lower bound of the truth: show it as "> bound").
    """
    return _locate(q, buckets)[0]


def latency_quantiles(metrics_text: str, stage: str = "total") -> LatencySummary | None:
    """p50/p90/p99 (milliseconds) and count of ``alscout_frame_latency_seconds{stage}``
    in a Prometheus text exposition; None when the histogram is absent or empty."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "alscout_frame_latency_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("stage") == stage:
                buckets.append((float(sample.labels["le"]), float(sample.value)))
    if not buckets or max(c for _, c in buckets) <= 0:
        return None

    def quantile(q: float) -> Quantile:
        seconds, beyond = _locate(q, buckets)
        return Quantile(1e3 * seconds, beyond)

    count = int(max(c for _, c in buckets))
    return LatencySummary(quantile(0.5), quantile(0.9), quantile(0.99), count)
