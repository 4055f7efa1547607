"""``alscout report``: decisions file, frames from the outbox and the sink, the page, Chromium."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from alscout.apps import cli
from alscout.apps.report import (
    Quantile,
    build_report,
    histogram_quantile,
    latency_quantiles,
    load_decisions,
    overlay_heatmap,
)
from alscout.errors import DataError
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.outbox import FlaggedFrame
from alscout.server.uploader import Uploader
from alscout.storage.sinks import DirectorySink

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
GREEN = (40, 200, 60)  # RGB of the test frames: easy to find in a screenshot
N_FRAMES = 120
FLAGGED = (20, 55, 90)


def _decision_lines(flagged=FLAGGED, n=N_FRAMES):
    for t in range(n):
        z = 0.03 + 0.01 * math.sin(t / 7.0)
        yield {
            "recording_id": "rec1",
            "camera_id": "cam0",
            "frame_index": t,
            "decision": "flagged" if t in flagged else "not_flagged",
            "reason": "flagged" if t in flagged else "not_local_max",
            "z": z,
            "smoothed": z,
            "threshold": None if t < 10 else 0.0,
        }


def _write_decisions(path: Path, lines) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _frame(index: int) -> FlaggedFrame:
    image = np.zeros((96, 128, 3), np.uint8)
    image[:] = GREEN
    ok, png = cv2.imencode(".png", image[:, :, ::-1])
    assert ok
    heat = np.zeros((6, 8), np.float32)
    heat[0, 0] = 1.0  # the top-left cell is the hot one
    return FlaggedFrame(
        image=png.tobytes(),
        image_format="png",
        model_version="1",
        model_hash="abc",
        heatmap=heat,
        recording_id="rec1",
        camera_id="cam0",
        frame_index=index,
        z=0.04,
        smoothed=0.04,
        threshold=0.0,
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Decisions, an outbox holding frame 90, a sink holding frames 20 and 55."""
    _write_decisions(tmp_path / "decisions.jsonl", _decision_lines())
    with DurableOutbox(tmp_path / "outbox") as outbox:
        for index in FLAGGED[:2]:
            outbox.put(_frame(index))
        Uploader(outbox, DirectorySink(tmp_path / "uploads")).drain()
        outbox.put(_frame(FLAGGED[2]))
    return tmp_path


def test_load_decisions_sorts_and_reads_null_as_nan(tmp_path):
    lines = list(_decision_lines(n=5))[::-1]
    rows = load_decisions(_write_decisions(tmp_path / "d.jsonl", lines))
    assert [r.frame_index for r in rows] == [0, 1, 2, 3, 4]
    assert math.isnan(rows[0].threshold)
    assert not any(r.flagged for r in rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no decisions"),
        ("{not json\n", "d.jsonl:1: not JSON"),
        (json.dumps({"frame_index": 1}) + "\n", "d.jsonl:1: not a decision record"),
        ("\n".join([json.dumps(next(_decision_lines(n=1)))] * 2), "d.jsonl:2: frame"),
    ],
)
def test_bad_decisions_file_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_decisions(path)


def test_decision_value_must_be_known(tmp_path):
    line = next(_decision_lines(n=1)) | {"decision": "maybe"}
    with pytest.raises(DataError, match="not a decision record"):
        load_decisions(_write_decisions(tmp_path / "d.jsonl", [line]))


def test_missing_decisions_file(tmp_path):
    with pytest.raises(DataError, match="missing"):
        load_decisions(tmp_path / "nope.jsonl")


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.5)
    # a quantile in the +Inf bucket is the largest finite bound
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == pytest.approx(1.0)
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))


def test_latency_quantiles_from_a_real_exposition():
    registry = CollectorRegistry()
    hist = Histogram(
        "alscout_frame_latency_seconds", "x", ["stage"], buckets=(0.01, 0.1, 1.0), registry=registry
    )
    for _ in range(90):
        hist.labels(stage="total").observe(0.05)  # all in (0.01, 0.1]
    for _ in range(10):
        hist.labels(stage="total").observe(0.5)
    text = generate_latest(registry).decode()
    result = latency_quantiles(text, "total")
    assert result is not None and result.count == 100
    assert result.p50.ms == pytest.approx(10 + 90 * (50 / 90))  # ms, interpolated
    assert 100 < result.p99.ms <= 1000 and not result.p99.beyond
    assert latency_quantiles(text, "queue") is None


def _latency_exposition(seconds: list[float]) -> str:
    registry = CollectorRegistry()
    hist = Histogram(
        "alscout_frame_latency_seconds", "x", ["stage"], buckets=(0.1, 1.0, 10.0), registry=registry
    )
    for value in seconds:
        hist.labels(stage="total").observe(value)
    return generate_latest(registry).decode()


def test_a_quantile_past_the_last_bound_reads_as_more_than_the_bound():
    """The +Inf bucket says only "slower than the last bound": the report says so
    ("> 10 s"), not "10000.0 ms"."""
    result = latency_quantiles(_latency_exposition([0.05] * 90 + [30.0] * 10), "total")
    assert result is not None and result.count == 100
    assert result.p50 == Quantile(ms=pytest.approx(50 * 100 / 90), beyond=False)
    assert result.p99 == Quantile(ms=pytest.approx(10_000), beyond=True)
    assert str(result.p50) == "55.6 ms" and str(result.p99) == "> 10 s"
    assert str(Quantile(ms=250.0, beyond=True)) == "> 250 ms"
    assert str(Quantile(ms=2500.0, beyond=True)) == "> 2.5 s"


def test_report_page_says_a_slow_p99_is_past_the_last_bound(run_dir):
    text = _latency_exposition([0.05] * 90 + [30.0] * 10)
    (run_dir / "metrics.prom").write_text(text, encoding="utf-8")
    info = {"stream": {"frames": N_FRAMES, "wall_s": 12.0}, "metrics_file": "metrics.prom"}
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    out = run_dir / "r.html"
    build_report(run_dir / "decisions.jsonl", out, outbox=run_dir / "outbox",
                 run_info=run_dir / "run.json")  # fmt: skip
    page = out.read_text(encoding="utf-8")
    assert "p99 &gt; 10 s" in page and "10000.0 ms" not in page
    assert "p50 55.6 ms" in page and "(100 samples)" in page


def test_overlay_tints_hot_cells_only():
    image = np.full((40, 40, 3), 128, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[3, 3] = 2.0
    out = overlay_heatmap(image, heat, vmin=0.0, vmax=2.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[:5, :5], image[:5, :5])  # cold corner untouched
    assert np.abs(out[-2:, -2:].astype(int) - 128).max() > 40  # hot corner tinted


def test_report_reads_outbox_and_sink_and_embeds_everything(run_dir):
    out = run_dir / "report.html"
    counts = build_report(
        run_dir / "decisions.jsonl", out, outbox=run_dir / "outbox", sink=run_dir / "uploads"
    )
    assert counts == {"frames": N_FRAMES, "flagged": 3, "shown": 3, "with_heatmap": 3}
    page = out.read_text(encoding="utf-8")
    assert page.count("<figure class='flagged'>") == 3
    assert page.count("data:image/jpeg;base64,") == 3
    assert page.count("data:image/png;base64,") == 1  # the timeline
    assert "outbox (waiting for upload)" in page
    assert "sink frames/rec1/cam0/000000000020.json" in page
    assert str((run_dir / "uploads").resolve()) in page
    assert "src='http" not in page and 'src="http' not in page  # self-contained


def test_report_without_sink_says_where_frames_went(run_dir):
    out = run_dir / "r.html"
    counts = build_report(run_dir / "decisions.jsonl", out, outbox=run_dir / "outbox")
    assert counts["shown"] == 3 and counts["with_heatmap"] == 1  # only frame 90 still local
    assert out.read_text(encoding="utf-8").count("uploaded; pass --sink to show it") == 2


def test_report_refuses_a_folder_that_is_no_outbox(run_dir):
    with pytest.raises(DataError, match="not an outbox folder"):
        build_report(run_dir / "decisions.jsonl", run_dir / "r.html", outbox=run_dir / "uploads")


def test_report_command_prints_one_line(run_dir, capsys):
    argv = ["report", "--decisions", str(run_dir / "decisions.jsonl"), "--out"]
    assert cli.main([*argv, str(run_dir / "r.html"), "--outbox", str(run_dir / "outbox")]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    assert cli.main(["report", "--decisions", str(run_dir / "none.jsonl"), "--out", "x"]) == 2
    assert "decisions file missing" in capsys.readouterr().err


def _screenshot(page: Path, png: Path, profile: Path, height: int = 2400) -> np.ndarray:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size=1280,{height}",
        f"--screenshot={png}",
        page.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=90)
    shot = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert shot is not None, "chromium wrote no readable screenshot"
    return shot[:, :, ::-1]


def _near(shot: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 30) -> int:
    return int((np.abs(shot.astype(int) - np.array(rgb)).max(axis=2) <= tolerance).sum())


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run_dir):
    metrics = run_dir / "metrics.prom"
    metrics.write_text("", encoding="utf-8")
    info = {"stream": {"frames": N_FRAMES, "wall_s": 12.0}, "metrics_file": "metrics.prom"}
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    out = run_dir / "report.html"
    build_report(
        run_dir / "decisions.jsonl",
        out,
        outbox=run_dir / "outbox",
        sink=run_dir / "uploads",
        run_info=run_dir / "run.json",
    )
    shot = _screenshot(out, run_dir / "shot.png", run_dir / "profile")
    # the three flagged frames (green) are on screen, with the hot heat-map corner
    # (inferno's yellow end) over them, and the timeline's blue smoothed line
    assert _near(shot, GREEN) > 3 * 150 * 200
    green = np.zeros((96, 128, 3), np.uint8)
    green[:] = GREEN
    hot = overlay_heatmap(green, _frame(0).heatmap, 0.0, 1.0)[0, 0]
    assert np.abs(hot.astype(int) - GREEN).max() > 60  # the hot colour differs from green
    assert _near(shot, tuple(int(v) for v in hot), 25) > 3 * 200
    assert _near(shot, (31, 119, 180), 25) > 300  # matplotlib tab:blue
    # and the text rendered: the page is not blank beyond the pictures
    assert (shot.min(axis=2) < 60).sum() > 2000


def test_a_tampered_or_missing_upload_is_shown_as_a_problem(run_dir):
    blobs = sorted((run_dir / "uploads" / "blobs").glob("*.png"))
    blobs[0].write_bytes(b"tampered")
    (run_dir / "uploads" / "frames" / "rec1" / "cam0" / "000000000055.json").unlink()
    out = run_dir / "r.html"
    counts = build_report(
        run_dir / "decisions.jsonl", out, outbox=run_dir / "outbox", sink=run_dir / "uploads"
    )
    page = out.read_text(encoding="utf-8")
    assert counts["shown"] == 3
    assert "does not match its sha256 name" in page  # frame 20 (the two share their png)
    assert "in neither the outbox nor the sink" in page  # frame 55
    assert page.count("data:image/jpeg") == 1  # only frame 90, from the outbox
