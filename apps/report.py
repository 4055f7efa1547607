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
import html
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alscout.apps.report_inputs import (
    DecisionRow,
    FrameView,
    LatencySummary,
    Quantile,
    histogram_quantile,
    latency_quantiles,
    load_decisions,
    load_flagged_frames,
    load_run_info,
)
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
    "LatencySummary",
    "Quantile",
    "overlay_heatmap",
]

log = logging.getLogger(__name__)

_THUMB_WIDTH = 360


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


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...] = ()) -> str:
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
        quantiles = latency_quantiles(metrics_text, stage) if metrics_text else None
        if quantiles is not None:
            rows.append(
                (
                    f"server latency, {stage}",
                    f"p50 {quantiles.p50} · p90 {quantiles.p90} · "
                    f"p99 {quantiles.p99} ({quantiles.count} samples)",
                )
            )
    parts.append(_table(rows) if rows else "<p>Not measured (no run facts given).</p>")
    steps = info.get("steps") or []
    if steps:
        parts.append("<p>Steps of this run:</p>")
        step_rows = [
            (s["name"], f"{s['seconds']:.1f} s", _cpu(s.get("cpu_s")), s["command"]) for s in steps
        ]
        table = _table(step_rows, header=("step", "wall clock", "CPU", "command"))
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
