"""``alscout score --engine ray`` on a local Ray (num_cpus=2): the same outputs as local.

One Ray instance for the module (starting one takes seconds); the engine finds it
initialised and leaves it running.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from recordings import read_outputs, write_config, write_folder, write_video

from alscout.apps.cli import main

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def drives(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("drives")
    return [
        str(write_video(root / "drive-a.avi", 40, seed=1)),
        str(write_video(root / "drive-b.avi", 30, seed=3)),
        str(write_folder(root / "drive-c", 20, seed=2)),
        "--config", str(write_config(root / "score.toml")),
    ]  # fmt: skip


def score(drives: list[str], model: Path, out: Path, *engine: str) -> int:
    args = ["score", "--no-progress", *drives, "--model", str(model), "--out", str(out)]
    return main([*args, *engine])


def test_ray_and_local_give_identical_outputs(local_ray, drives, tiny_model, tmp_path, capsys):
    assert score(drives, tiny_model, tmp_path / "local", "--workers", "2") == 0
    assert "local x2" in capsys.readouterr().out
    assert score(drives, tiny_model, tmp_path / "ray", "--engine", "ray", "--workers", "2") == 0
    assert "ray x2" in capsys.readouterr().out
    local, on_ray = read_outputs(tmp_path / "local"), read_outputs(tmp_path / "ray")
    assert len(local["decisions"]) == 90 and local["records"]
    assert on_ray == local
    assert (tmp_path / "ray" / "decisions.jsonl").read_bytes() == (
        tmp_path / "local" / "decisions.jsonl"
    ).read_bytes()


def test_a_ray_rerun_skips_what_is_done(local_ray, drives, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert score(drives[:1] + drives[3:], tiny_model, out, "--engine", "ray") == 0
    assert score(drives, tiny_model, out, "--engine", "ray") == 0
    assert "scored 2 recordings (1 already done, 0 failed)" in capsys.readouterr().out
    assert len(read_outputs(out)["decisions"]) == 90


def test_a_bad_recording_fails_alone_on_ray(local_ray, drives, tiny_model, tmp_path, capsys):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"no video")
    out = tmp_path / "out"
    assert score([drives[0], str(broken), *drives[3:]], tiny_model, out, "--engine", "ray") == 1
    captured = capsys.readouterr()
    assert f"failed: {broken}: " in captured.err and "OpenCV cannot open it" in captured.err
    assert len(read_outputs(out)["decisions"]) == 40


def actor_processes() -> list[int]:
    """Processes of this machine running a ScorerActor (Ray names them ray::ScorerActor)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::ScorerActor"):
                found.append(int(entry.name))
    return found


def test_a_killed_actor_s_recording_is_scored_again(local_ray, tiny_model, tmp_path):
    videos = [str(write_video(tmp_path / f"long-{i}.avi", 60, seed=20 + i)) for i in range(4)]
    config = str(write_config(tmp_path / "score.toml"))
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert score([*videos, "--config", config], tiny_model, reference, "--workers", "1") == 0
    codes: list[int] = []
    run = threading.Thread(
        target=lambda: codes.append(
            score([*videos, "--config", config], tiny_model, out, "--engine", "ray")
        )
    )
    run.start()
    until = time.monotonic() + 180  # a guard against a hang; Ray starts slowly on a busy box
    while not list((out / "parts").glob("*.done")):
        assert run.is_alive() and time.monotonic() < until
        time.sleep(0.005)
    assert len(list((out / "parts").glob("*.done"))) < len(videos)
    os.kill(actor_processes()[0], signal.SIGKILL)
    run.join(300)
    assert codes == [0]
    assert read_outputs(out) == read_outputs(reference)
