"""``alscout score --engine local``: outputs, the online rule, resume, dt2, failures."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from recordings import read_outputs, write_config, write_folder, write_video

from alscout.apps.cli import main
from alscout.offline import local_engine
from alscout.runtime.temporal import SelectorConfig, flag_recording
from alscout.storage.layout import record_key
from alscout.trainer.fleet.ingest import ingest
from alscout.trainer.fleet.pool import Duplicate, LabelPool

SELECTOR = SelectorConfig(dt=2, sigma=1.0, dt1=3, dt2=1, threshold=0.0)
KEYS = [
    "recording_id", "camera_id", "frame_index", "decision", "reason", "z", "smoothed",
    "threshold", "model_version", "model_hash",
]  # fmt: skip


@pytest.fixture(scope="module")
def drives(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drives")
    return {
        "video": write_video(root / "drive-a.avi", 40, seed=1),
        "folder": write_folder(root / "drive-b", 25, seed=2),
        "config": write_config(root / "score.toml"),
    }


def score(*args: str) -> int:
    return main(["score", "--no-progress", *args])


def by_stream(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        grouped.setdefault((record["recording_id"], record["camera_id"]), []).append(record)
    return grouped


@pytest.fixture(scope="module")
def scored(drives, tiny_model, tmp_path_factory) -> Path:
    """Both drives scored once by two local workers."""
    out = tmp_path_factory.mktemp("scored") / "out"
    code = score(
        str(drives["video"]), str(drives["folder"]), "--model", str(tiny_model),
        "--out", str(out), "--config", str(drives["config"]), "--workers", "2",
    )  # fmt: skip
    assert code == 0
    return out


def test_outputs_hold_every_frame_once_in_the_stream_format(scored, tiny_model):
    outputs = read_outputs(scored)
    decisions = outputs["decisions"]
    streams = by_stream(decisions)
    assert list(streams) == [("drive-a", "cam0"), ("drive-b", "cam0")]  # sorted, not by finish
    assert [r["frame_index"] for r in streams["drive-a", "cam0"]] == list(range(40))
    assert [r["frame_index"] for r in streams["drive-b", "cam0"]] == list(range(25))
    assert all(list(r) == KEYS for r in decisions)  # the keys alscout stream writes, in order
    assert {r["model_version"] for r in decisions} == {"test-1"}
    rows = outputs["scores"]
    assert [(r["recording_id"], r["frame_index"], r["z"], r["decision"]) for r in rows] == [
        (r["recording_id"], r["frame_index"], r["z"], r["decision"]) for r in decisions
    ]
    assert set(rows[0]) == {
        "recording_id", "camera_id", "frame_index", "z", "smoothed", "decision", "reason",
        "model_hash",
    }  # fmt: skip
    assert {r["model_hash"] for r in rows} == {decisions[0]["model_hash"]}


def test_decisions_are_the_online_rule_over_the_scores(scored):
    for records in by_stream(read_outputs(scored)["decisions"]).values():
        expected = flag_recording([r["z"] for r in records], SELECTOR)
        assert [r["decision"] == "flagged" for r in records] == [d.flagged for d in expected]
        assert [r["reason"] for r in records] == [str(d.reason) for d in expected]
        assert [r["smoothed"] for r in records] == [d.smoothed for d in expected]
        assert sum(d.flagged for d in expected) >= 1


def test_flagged_frames_reach_the_sink_in_the_uploader_layout(scored, tmp_path):
    outputs = read_outputs(scored)
    flagged = [r for r in outputs["decisions"] if r["decision"] == "flagged"]
    expected = {record_key(r["recording_id"], r["camera_id"], r["frame_index"]) for r in flagged}
    assert set(outputs["records"]) == expected
    some = json.loads(outputs["records"][sorted(expected)[0]])
    assert set(some["keys"]) == {"image", "heatmap"} and some["model_version"] == "test-1"
    pool = LabelPool(tmp_path / "pool")
    report = ingest(pool, [scored / "sink"])  # fleet ingest reads it unchanged
    assert report.rejected == [] and len(report.added) + len(report.duplicates) == len(flagged)


def test_report_reads_the_decisions_and_the_sink(scored, tmp_path, capsys):
    html = tmp_path / "report.html"
    args = ["--decisions", str(scored / "decisions.jsonl"), "--sink", str(scored / "sink")]
    assert main(["report", *args, "--out", str(html)]) == 0
    assert "65 frames" in capsys.readouterr().out and html.stat().st_size > 0


def test_a_rerun_skips_what_is_done_and_changes_nothing(scored, drives, tiny_model, capsys):
    before = read_outputs(scored)
    code = score(
        str(drives["video"]), str(drives["folder"]), "--model", str(tiny_model),
        "--out", str(scored), "--config", str(drives["config"]), "--workers", "1",
    )  # fmt: skip
    assert code == 0
    assert "scored 0 recordings (2 already done, 0 failed)" in capsys.readouterr().out
    assert read_outputs(scored) == before


def test_a_folder_scored_with_other_settings_is_refused(scored, drives, tiny_model, capsys):
    code = score(
        str(drives["video"]), "--model", str(tiny_model), "--out", str(scored),
        "--config", str(drives["config"]), "--threshold", "0.5",
    )  # fmt: skip
    assert code == 2
    assert "another model or settings (differs in selector)" in capsys.readouterr().err


def test_dt2_against_the_fleet_pool(scored, drives, tiny_model, tmp_path):
    """A frame the pool already holds keeps frames within dt2 = 1 from being flagged."""
    first = [r for r in read_outputs(scored)["decisions"] if r["recording_id"] == "drive-a"]
    flagged = [r["frame_index"] for r in first if r["decision"] == "flagged"]
    pool = LabelPool(tmp_path / "pool")
    with pool.edit() as state:  # an upload of drive-a, one frame after its first flag
        state.duplicates.append(Duplicate("sink", "drive-a", "cam0", flagged[0] + 1, "car", 1, 0))
    out = tmp_path / "out"
    code = score(
        str(drives["video"]), "--model", str(tiny_model), "--out", str(out),
        "--config", str(drives["config"]), "--earlier", str(pool.root),
    )  # fmt: skip
    assert code == 0
    again = read_outputs(out)["decisions"]
    assert [r["z"] for r in again] == [r["z"] for r in first]
    assert again[flagged[0]]["reason"] == "near_earlier_upload"
    expected = flag_recording([r["z"] for r in first], SELECTOR, earlier=[flagged[0] + 1])
    assert [r["reason"] for r in again] == [str(d.reason) for d in expected]


def test_a_bad_recording_fails_alone_and_is_retried(drives, tiny_model, tmp_path, capsys):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video at all")
    out = tmp_path / "out"
    common = ["--model", str(tiny_model), "--out", str(out), "--config", str(drives["config"])]
    assert score(str(drives["video"]), str(broken), *common) == 1
    captured = capsys.readouterr()
    assert f"failed: {broken}" in captured.err
    assert "scored 1 recordings (0 already done, 1 failed)" in captured.out
    assert {r["recording_id"] for r in read_outputs(out)["decisions"]} == {"drive-a"}
    shutil.copy(drives["video"], broken)  # repaired: the next run scores it
    assert score(str(drives["video"]), str(broken), *common) == 0
    assert "scored 1 recordings (1 already done, 0 failed)" in capsys.readouterr().out
    assert len(read_outputs(out)["decisions"]) == 80


def test_two_sources_of_one_stream_are_refused_before_anything_is_written(
    drives, tiny_model, tmp_path, capsys
):
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = shutil.copy(drives["video"], other / "drive-a.avi")
    out = tmp_path / "out"
    assert (
        score(str(drives["video"]), str(twin), "--model", str(tiny_model), "--out", str(out)) == 2
    )
    assert "would both write stream drive-a/cam0" in capsys.readouterr().err
    assert not out.exists()


class PoolThatBreaksOnItsSecondSubmit(ProcessPoolExecutor):
    """The first pool dies between a finished recording and the next submit."""

    pools = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        type(self).pools += 1
        self.first = type(self).pools == 1
        self.submits = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submits += 1
        if self.first and self.submits == 2:
            raise BrokenProcessPool("a child process terminated abruptly")
        return super().submit(fn, *args, **kwargs)


def test_a_pool_that_breaks_at_submit_is_replaced(
    scored, drives, tiny_model, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(local_engine, "ProcessPoolExecutor", PoolThatBreaksOnItsSecondSubmit)
    out = tmp_path / "out"
    code = score(
        str(drives["video"]), str(drives["folder"]), "--model", str(tiny_model),
        "--out", str(out), "--config", str(drives["config"]), "--workers", "1",
    )  # fmt: skip
    assert code == 0
    assert PoolThatBreaksOnItsSecondSubmit.pools == 2
    assert "a worker process died" in caplog.text
    assert read_outputs(out) == read_outputs(scored)
