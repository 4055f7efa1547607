"""``alscout report``: one self-contained HTML page about one streamed recording.

Inputs: the decisions JSONL that ``alscout stream`` writes (one final decision per
frame), the flagged frames and their heat maps from the durable outbox or, once
uploaded, from a directory sink, and optionally the run facts ``alscout demo`` records
(step times, throughput, the server's Prometheus metrics). Plots come from matplotlib
and every image is a ``data:`` URI, so the page opens offline and can be mailed.
Layout and choices: docs/design.md ("Report"). Example::

    alscout report --decisions run/decisions.jsonl --outbox run/outbox --sink run/uploads \\
        --out run/report.html
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import DataError, InvalidInputError

__all__ = [
    "configure",
    "run",
    "build_report",
    "DecisionRow",
    "FrameView",
    "load_decisions",
    "load_flagged_frames",
    "histogram_quantile",
    "latency_quantiles",
    "overlay_heatmap",
]

log = logging.getLogger(__name__)

#: the JSONL values of "decision" (server/cli_stream.py writes them)
_DECISIONS = {"flagged": True, "not_flagged": False}
_THUMB_WIDTH = 360


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
    from alscout.server.uploader import record_key

    key = record_key(decision)  # reads recording_id, camera_id, frame_index only
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
    from alscout.server.sinks import check_key

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


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The ``q`` quantile of a cumulative histogram, interpolated as Prometheus does.

    ``buckets``: (upper bound, cumulative count) pairs, any order, the last bound
    ``inf``. Returns ``nan`` for an empty histogram; a quantile in the ``+Inf`` bucket
    is the largest finite bound.
    """
    if not 0.0 <= q <= 1.0:
        raise InvalidInputError(f"q must be in [0, 1], got {q}")
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def latency_quantiles(metrics_text: str, stage: str = "total") -> dict[str, float]:
    """p50/p90/p99 (milliseconds) and count of ``alscout_frame_latency_seconds{stage}``
    in a Prometheus text exposition; empty when the histogram is absent."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "alscout_frame_latency_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("stage") == stage:
                buckets.append((float(sample.labels["le"]), float(sample.value)))
    if not buckets or max(c for _, c in buckets) <= 0:
        return {}
    result = {f"p{int(q * 100)}": 1e3 * histogram_quantile(q, buckets) for q in (0.5, 0.9, 0.99)}
    result["count"] = max(c for _, c in buckets)
    return result


# ------------------------------------------------------------------------- pictures


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``image`` ``[H, W, 3]`` uint8 RGB with ``heatmap`` ``[h, w]`` stretched over it.

    Colour (inferno) and opacity grow with the score from ``vmin`` (transparent) to
    ``vmax`` (the report passes the median and maximum cell of all frames shown, so
    frames compare and only what stands out is tinted).
    """
    import cv2
    from matplotlib import colormaps

    height, width = image.shape[:2]
    span = float(vmax - vmin) if vmax > vmin else 1.0
    heat = np.clip((np.nan_to_num(heatmap.astype(np.float32)) - vmin) / span, 0.0, 1.0)
    heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    colours = colormaps["inferno"](heat)[..., :3] * 255.0
    alpha = (0.15 + 0.6 * heat)[..., None] * (heat[..., None] > 0.02)
    blended = image.astype(np.float32) * (1.0 - alpha) + colours * alpha
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _jpeg_uri(image: np.ndarray, width: int = _THUMB_WIDTH) -> str:
    import cv2

    height = max(1, round(image.shape[0] * width / image.shape[1]))
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise DataError("could not encode a thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def timeline_png(rows: list[DecisionRow]) -> bytes:
    """PNG of one stream's raw score z, smoothed score, threshold and flags over frames."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    frames = np.array([r.frame_index for r in rows])
    fig, ax = plt.subplots(figsize=(11, 3.4), dpi=100)
    ax.plot(frames, [r.z for r in rows], color="0.65", lw=0.8, label="z (image score)")
    ax.plot(frames, [r.smoothed for r in rows], color="tab:blue", lw=1.6, label="smoothed")
    threshold = [r.threshold for r in rows]
    ax.step(frames, threshold, where="mid", color="tab:red", ls="--", lw=1.0, label="threshold")
    flags = [r for r in rows if r.flagged]
    ax.scatter(
        [r.frame_index for r in flags],
        [r.smoothed for r in flags],
        marker="v",
        s=60,
        color="tab:orange",
        edgecolor="black",
        zorder=3,
        label=f"flagged ({len(flags)})",
    )
    ax.set_xlabel("frame")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncol=4)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# ------------------------------------------------------------------------- the page

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:14px}td,th{padding:3px 10px;text-align:left;
border-bottom:1px solid #eee}.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:360px;font-size:12px}figure img{width:360px;display:block}
.missing{width:360px;height:120px;background:#f3f3f3;display:flex;align-items:center;
justify-content:center;color:#a00}code,pre{background:#f6f6f6;padding:2px 4px}
pre{padding:8px;white-space:pre-wrap}.steps td:nth-child(-n+3){white-space:nowrap}
"""


def render_page(
    decisions: list[DecisionRow],
    frames: list[FrameView],
    info: dict[str, Any],
    *,
    title: str,
    outbox: Path | None,
    sink: Path | None,
    hidden: int = 0,
) -> str:
    """The report as one HTML string (images inline)."""
    esc = html.escape
    n_flagged = sum(d.flagged for d in decisions)
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>",
        _table(
            [
                ("frames decided", str(len(decisions))),
                ("flagged", f"{n_flagged} ({100.0 * n_flagged / len(decisions):.2f}%)"),
                ("model", str(info.get("model", "-"))),
                ("source", str(info.get("source", "-"))),
            ]
        ),
        "<h2 id='timeline'>Score timeline</h2>",
    ]
    streams: dict[tuple[str, str], list[DecisionRow]] = {}
    for row in decisions:
        streams.setdefault((row.recording_id, row.camera_id), []).append(row)
    for (recording, camera), rows in streams.items():
        uri = "data:image/png;base64," + base64.b64encode(timeline_png(rows)).decode("ascii")
        parts.append(f"<p>{esc(recording)}/{esc(camera)}</p><img alt='timeline' src='{uri}'>")
    parts.append(_flagged_section(frames, hidden))
    parts.append(_speed_section(info))
    parts.append(_uploads_section(outbox, sink, frames))
    parts.append(_next_section(info, sink))
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(rows: list[tuple[str, str]], header: tuple[str, ...] = ()) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _flagged_section(frames: list[FrameView], hidden: int) -> str:
    esc = html.escape
    parts = [
        "<h2 id='flagged'>Flagged frames</h2>",
        "<p>Each frame with its score map S overlaid: the brighter and more opaque, the "
        "more the detector's heads disagree there. One colour scale for all frames, from "
        "the median cell (clear) to the largest (yellow): the regions that made the "
        "frame worth labeling.</p><div class='grid'>",
    ]
    cells = [f.heatmap.ravel() for f in frames if f.heatmap is not None]
    every = np.concatenate(cells) if cells else np.zeros(1, np.float32)
    vmin, vmax = float(np.nanmedian(every)), float(np.nanmax(every))
    for view in frames:
        d = view.decision
        caption = (
            f"frame {d.frame_index} · z {d.z:.4g} · smoothed {d.smoothed:.4g} · "
            f"threshold {d.threshold:.4g}<br>{esc(view.location)}"
        )
        if view.image is None:
            picture = f"<div class='missing'>{esc(view.problem)}</div>"
        else:
            shown = view.image
            if view.heatmap is not None:
                shown = overlay_heatmap(view.image, view.heatmap, vmin, vmax)
            else:
                caption += "<br>no heat map stored"
            alt = f"flagged frame {d.frame_index}" + (" with heat map" * (view.heatmap is not None))
            picture = f"<img alt='{esc(alt)}' src='{_jpeg_uri(shown)}'>"
        parts.append(
            f"<figure class='flagged'>{picture}<figcaption>{caption}</figcaption></figure>"
        )
    if not frames:
        parts.append("<p>No frame was flagged.</p>")
    parts.append("</div>")
    if hidden:
        parts.append(f"<p>{hidden} more flagged frames not shown (--max-frames).</p>")
    return "\n".join(parts)


def _speed_section(info: dict[str, Any]) -> str:
    parts = ["<h2 id='speed'>Throughput and latency</h2>"]
    stream = info.get("stream") or {}
    rows = []
    if stream.get("frames") and stream.get("wall_s"):
        fps = stream["frames"] / stream["wall_s"]
        rows.append(("streamed", f"{stream['frames']} frames in {stream['wall_s']:.1f} s"))
        rows.append(("throughput", f"{fps:.1f} frames/s (client wall clock, whole call)"))
    metrics_text = info.get("metrics_text", "")
    for stage in ("total", "inference", "queue"):
        quantiles = latency_quantiles(metrics_text, stage) if metrics_text else {}
        if quantiles:
            rows.append(
                (
                    f"server latency, {stage}",
                    f"p50 {quantiles['p50']:.1f} ms · p90 {quantiles['p90']:.1f} ms · "
                    f"p99 {quantiles['p99']:.1f} ms ({int(quantiles['count'])} samples)",
                )
            )
    parts.append(_table(rows) if rows else "<p>Not measured (no run facts given).</p>")
    steps = info.get("steps") or []
    if steps:
        parts.append("<p>Steps of this run:</p>")
        rows = [
            (s["name"], f"{s['seconds']:.1f} s", _cpu(s.get("cpu_s")), s["command"]) for s in steps
        ]
        table = _table(rows, header=("step", "wall clock", "CPU", "command"))
        parts.append(f"<div class='steps'>{table}</div>")
    return "\n".join(parts)


def _cpu(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _uploads_section(outbox: Path | None, sink: Path | None, frames: list[FrameView]) -> str:
    parts = ["<h2 id='uploads'>Where the uploads went</h2>"]
    rows = []
    if sink is not None:
        records = sorted((sink / "frames").rglob("*.json")) if (sink / "frames").is_dir() else []
        size = sum(p.stat().st_size for p in sink.rglob("*") if p.is_file())
        rows.append(("sink", str(sink.resolve())))
        rows.append(("frames uploaded", f"{len(records)} ({size / 1e6:.2f} MB in the sink)"))
        rows.append(("layout", "frames/<recording>/<camera>/<frame>.json + blobs/<sha256>.*"))
    if outbox is not None:
        from alscout.server.durable_outbox import DurableOutbox

        with DurableOutbox(outbox) as store:
            status = store.status()
        counts = ", ".join(f"{k} {v}" for k, v in sorted(status.counts.items()))
        rows.append(("outbox", f"{outbox.resolve()}: {counts}"))
    parts.append(_table(rows) if rows else "<p>No outbox or sink given.</p>")
    return "\n".join(parts)


def _next_section(info: dict[str, Any], sink: Path | None) -> str:
    commands = info.get("next_commands") or [
        ("ingest the uploads", f"alscout fleet ingest --pool POOL {sink or 'UPLOADS'}"),
        ("label", "alscout fleet export-tasks --pool POOL --out TASKS"),
        ("import the labels", "alscout fleet import-labels --pool POOL TASKS/labels.json"),
        ("finetune", "alscout fleet finetune --pool POOL --init runs/src/last.pt --out CYCLE1"),
        ("reload the car's model", "alscout serve --model NEW.onnx  (or ReloadModel)"),
    ]
    lines = "\n".join(f"# {what}\n{command}" for what, command in commands)
    return f"<h2 id='next'>Next commands</h2><pre>{html.escape(lines)}</pre>"


# ------------------------------------------------------------------------- command


def build_report(
    decisions_path: Path,
    out: Path,
    *,
    outbox: Path | None = None,
    sink: Path | None = None,
    run_info: Path | None = None,
    title: str | None = None,
    max_frames: int = 60,
) -> dict[str, int]:
    """Write the report to ``out``; returns counts (frames, flagged, shown, with_heatmap).

    Raises :class:`DataError` naming the file when an input is missing or malformed.
    """
    if max_frames < 0:
        raise InvalidInputError(f"--max-frames must be >= 0, got {max_frames}")
    decisions = load_decisions(decisions_path)
    info = load_run_info(run_info) if run_info is not None else {}
    metrics_file = info.get("metrics_file")
    if metrics_file:
        path = (Path(run_info).parent / metrics_file) if run_info else Path(metrics_file)
        info["metrics_text"] = path.read_text(encoding="utf-8") if path.is_file() else ""
    flagged = [d for d in decisions if d.flagged]
    frames = load_flagged_frames(flagged[:max_frames], outbox, sink)
    streams = sorted({f"{d.recording_id}/{d.camera_id}" for d in decisions})
    page = render_page(
        decisions,
        frames,
        info,
        title=title or "alscout report: " + ", ".join(streams),
        outbox=outbox,
        sink=sink,
        hidden=len(flagged) - len(frames),
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as error:
        raise DataError(f"{out}: cannot write the report: {error.strerror}") from error
    return {
        "frames": len(decisions),
        "flagged": len(flagged),
        "shown": len(frames),
        "with_heatmap": sum(f.heatmap is not None for f in frames),
    }


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``alscout report``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example:\n"
        "  alscout report --decisions run/decisions.jsonl --outbox run/outbox \\\n"
        "      --sink run/uploads --out run/report.html"
    )
    parser.add_argument(
        "--decisions", type=Path, required=True, help="JSONL of final decisions (alscout stream)"
    )
    parser.add_argument("--outbox", type=Path, help="the server's outbox folder")
    parser.add_argument("--sink", type=Path, help="the folder the uploader wrote to")
    parser.add_argument("--run-info", type=Path, help="run facts JSON written by alscout demo")
    parser.add_argument("--title", help="page title (default: the streams' ids)")
    parser.add_argument("--max-frames", type=int, default=60, help="flagged frames shown (60)")
    parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")


def run(args: argparse.Namespace) -> int:
    """Write the report; prints one summary line."""
    counts = build_report(
        args.decisions,
        args.out,
        outbox=args.outbox,
        sink=args.sink,
        run_info=args.run_info,
        title=args.title,
        max_frames=args.max_frames,
    )
    sys.stdout.write(
        f"wrote {args.out}: {counts['frames']} frames, {counts['flagged']} flagged, "
        f"{counts['shown']} shown, {counts['with_heatmap']} with heat maps\n"
    )
    return 0
