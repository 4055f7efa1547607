"""kill -9 in the middle of ``alscout score``: nothing missing, nothing duplicated.

Each test runs the real command in a subprocess over six recordings with two worker
processes and compares what it left with an uninterrupted run of the same command:
the decision lines, the Parquet rows and the sink's records and blobs, byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recordings import read_outputs, write_config, write_video

pytestmark = pytest.mark.slow

RECORDINGS = 6
FRAMES = 60


@pytest.fixture(scope="module")
def drives(tmp_path_factory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("drives")
    videos = [write_video(root / f"drive-{i}.avi", FRAMES, seed=i) for i in range(RECORDINGS)]
    return videos, write_config(root / "score.toml")


def command(drives, model: Path, out: Path) -> list[str]:
    videos, config = drives
    return [
        sys.executable, "-m", "alscout.apps.cli", "score", *map(str, videos),
        "--model", str(model), "--out", str(out), "--config", str(config),
        "--workers", "2", "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(drives, tiny_model, tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("reference") / "out"
    subprocess.run(command(drives, tiny_model, out), check=True, capture_output=True, timeout=120)
    outputs = read_outputs(out)
    assert len(outputs["decisions"]) == RECORDINGS * FRAMES and outputs["records"]
    return outputs


def wait_for_first_commit(out: Path, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    until = time.monotonic() + timeout_s
    while not any((out / "parts").glob("*.done")):
        assert process.poll() is None, "the run ended before it was killed"
        assert time.monotonic() < until, "no recording was committed in time"
        time.sleep(0.005)


def workers_of(pid: int) -> list[int]:
    """The pool's worker processes: children running multiprocessing's spawn_main."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in map(int, children):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(child)
    return found


def test_a_killed_worker_s_recording_is_scored_again(drives, tiny_model, tmp_path, reference):
    out = tmp_path / "out"
    process = subprocess.Popen(
        command(drives, tiny_model, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_first_commit(out, process)
        victim = workers_of(process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr.decode()
    assert b"a worker process died" in stderr  # and its recording was scored again:
    assert f"scored {RECORDINGS} recordings (0 already done, 0 failed)".encode() in stdout
    assert read_outputs(out) == reference


def test_a_run_killed_whole_is_finished_by_the_next(drives, tiny_model, tmp_path, reference):
    out = tmp_path / "out"
    process = subprocess.Popen(
        command(drives, tiny_model, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_first_commit(out, process)
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers at once
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    done = len(list((out / "parts").glob("*.done")))
    assert 1 <= done < RECORDINGS
    again = subprocess.run(
        command(drives, tiny_model, out), capture_output=True, timeout=120, check=True
    )
    assert f"({done} already done, 0 failed)".encode() in again.stdout
    assert read_outputs(out) == reference
    hidden = [p for p in (out / "sink").rglob(".*") if p.is_file()]
    assert all(p.name.endswith(".tmp") for p in hidden)  # only a killed writer's temporaries
