"""Crash harness: kill -9 the writer and the uploader at random points, again and again.

Afterwards every frame whose ``put`` returned (the writer's acknowledgement file says
so) is in the sink exactly once, by content hash, and the store checks clean. A second
harness kills a real scoring server (create_server with a DurableOutbox) mid-stream.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import crash_writer  # noqa: E402  # found through the line above, like server_harness

from alscout.server.durable_outbox import DurableOutbox  # noqa: E402  # after the path set-up
from alscout.server.sinks import DirectorySink  # noqa: E402
from alscout.server.uploader import Uploader, UploaderConfig  # noqa: E402

ROUNDS = 50
#: every n-th round the uploader is a real ``python -m alscout.server.uploader`` process
PROCESS_ROUND = 25
QUICK = UploaderConfig(poll_s=0.01, backoff_base_s=0.005, backoff_cap_s=0.05)


def read_acks(path: Path) -> dict[int, str]:
    """frame -> sha256 of the acknowledged image; a torn last line never counts."""
    if not path.exists():
        return {}
    acks = {}
    for line in path.read_text().split("\n")[:-1]:
        frame, digest = line.split()
        acks[int(frame)] = digest
    return acks


def sink_contents(sink: Path) -> tuple[dict[tuple[str, str, int], dict], dict[str, int]]:
    """(records by (recording, camera, frame), blob sha256 -> number of files holding it)."""
    records = {}
    for path in (sink / "frames").rglob("*.json"):
        if path.name.startswith("."):
            continue  # a temporary file of an upload killed midway
        record = json.loads(path.read_text())
        records[(record["recording_id"], record["camera_id"], record["frame_index"])] = record
    blobs: dict[str, int] = {}
    for path in (sink / "blobs").glob("*"):
        if path.name.startswith("."):
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.name.startswith(digest), f"{path} does not hold what its name says"
        blobs[digest] = blobs.get(digest, 0) + 1
    return records, blobs


def verify(outbox_dir: Path, sink: Path, acks: dict[tuple[str, str, int], str]) -> None:
    """Drain what is left, then: each acknowledged frame in the sink once, store clean."""
    with DurableOutbox(outbox_dir) as outbox:
        report = outbox.check()
        assert report.ok and report.orphans == 0, report
        Uploader(outbox, DirectorySink(sink), QUICK).drain()
        assert outbox.pending() == []
        states = {(f.recording_id, f.camera_id, f.frame_index): f.state for f in outbox.frames()}
    records, blobs = sink_contents(sink)
    for key, digest in acks.items():
        assert key in records, f"acknowledged frame {key} never reached the sink"
        image_key = records[key]["keys"]["image"]
        assert image_key.startswith(f"blobs/{digest}"), f"{key}: the sink holds other bytes"
        assert blobs[digest] == 1, f"{key}: its image is in the sink {blobs[digest]} times"
        assert states[key] == "uploaded"


def kill(process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    if isinstance(process, subprocess.Popen):
        process.wait(10)
    else:
        process.join(10)


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_acks(path: Path, count: int, process, timeout_s: float = 30.0) -> None:
    """Wait until ``path`` holds ``count`` lines (progress, not wall time: the CI is shared)."""
    deadline = time.monotonic() + timeout_s
    while count_lines(path) < count and time.monotonic() < deadline and process.is_alive():
        time.sleep(0.002)


@pytest.mark.slow
def test_kill_writer_and_uploader_at_random_points(tmp_path):
    outbox_dir, sink, ack_file = tmp_path / "outbox", tmp_path / "sink", tmp_path / "acks"
    DurableOutbox(outbox_dir).close()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["crash_writer"])
    rng = np.random.default_rng(2024)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    killed_mid_upload = 0
    for round_index in range(ROUNDS):
        start = max(read_acks(ack_file), default=-1) + 1
        lines = count_lines(ack_file)
        if round_index % PROCESS_ROUND == PROCESS_ROUND - 1:
            command = [sys.executable, "-m", "alscout.server.uploader", "--outbox",
                       str(outbox_dir), "--sink", str(sink), "--poll", "0.01"]  # fmt: skip
            uploader = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
            uploader.is_alive = lambda p=uploader: p.poll() is None
        else:
            uploader = context.Process(
                target=crash_writer.upload_forever, args=(str(outbox_dir), str(sink))
            )
            uploader.start()
        writer = context.Process(
            target=crash_writer.write_frames, args=(str(outbox_dir), str(ack_file), start)
        )
        writer.start()
        # The writer dies a random few acknowledgements in, a random instant into its next
        # put; the uploader a random instant before or after that.
        wait_for_acks(ack_file, lines + int(rng.integers(1, 4)), writer)
        uploader_first = rng.random() < 0.3
        if uploader_first:
            time.sleep(rng.uniform(0.0, 0.05))
            uploaded = len(sink_contents(sink)[0]) if sink.exists() else 0
            kill(uploader)
        time.sleep(rng.uniform(0.0, 0.04))
        kill(writer)
        if not uploader_first:
            wait_for_acks(ack_file, count_lines(ack_file) + 1, uploader, timeout_s=0.0)
            time.sleep(rng.uniform(0.0, 0.08))
            uploaded = len(sink_contents(sink)[0]) if sink.exists() else 0
            kill(uploader)
        killed_mid_upload += uploaded > 0
    acks = read_acks(ack_file)
    assert len(acks) >= ROUNDS, "the writer hardly ran; the harness tested nothing"
    assert killed_mid_upload > ROUNDS // 2, "the uploader never got a frame out before a kill"
    key = (crash_writer.RECORDING, crash_writer.CAMERA)
    verify(outbox_dir, sink, {(*key, frame): digest for frame, digest in acks.items()})
    with DurableOutbox(outbox_dir) as outbox:  # frames uploaded stay out of the next cycle
        assert set(acks) <= set(outbox.earlier_frames(*key))


def start_server(model: Path, outbox_dir: Path, port_file: Path, env: dict) -> tuple:
    """A scoring server process (crash_writer.serve) and its port."""
    command = [sys.executable, str(HERE / "crash_writer.py"), str(model), str(outbox_dir),
               str(port_file)]  # fmt: skip
    log_file = port_file.with_suffix(".log")
    with log_file.open("wb") as log:
        server = subprocess.Popen(command, env=env, stderr=log)
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if server.poll() is not None:
            pytest.fail(f"the server process died at start:\n{log_file.read_text()[-3000:]}")
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    return server, int(port_file.read_text())


def stream_until_killed(port: int, server, recording: str, frames: list[bytes], kill_after):
    """Stream ``frames``; kill -9 the server after ``kill_after`` results (None: never).

    Returns the frames the server reported FLAGGED (what a client acknowledges).
    """
    import grpc
    from server_harness import jpeg_frame

    from alscout.server._proto import alscout_pb2 as pb
    from alscout.server._proto import alscout_pb2_grpc

    flagged = set()
    requests = (jpeg_frame(data, i, recording=recording) for i, data in enumerate(frames))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        try:
            for n, result in enumerate(stub.ScoreStream(requests), start=1):
                flagged.update(
                    d.frame_index
                    for d in result.final_decisions
                    if d.decision == pb.DECISION_FLAGGED
                )
                if n == kill_after:
                    kill(server)
        except grpc.RpcError:
            assert kill_after is not None, "the stream failed without a kill"
    if server.poll() is None:
        kill(server)
    return flagged


@pytest.mark.slow
def test_kill_the_scoring_server_mid_stream(tmp_path, tiny_model):
    """The real service with a DurableOutbox, killed -9 mid-stream: FLAGGED means stored."""
    from server_harness import video_frames

    outbox_dir, sink = tmp_path / "outbox", tmp_path / "sink"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    rng = np.random.default_rng(7)
    frames = {name: video_frames(80, seed=i) for i, name in enumerate(("srv0", "srv1"))}
    acks: dict[tuple[str, str, int], str] = {}
    for round_index, recording in enumerate(frames):
        kill_after = None if recording == "srv1" else int(rng.integers(15, 70))
        port_file = tmp_path / f"port{round_index}"
        server, port = start_server(tiny_model, outbox_dir, port_file, env)
        flagged = stream_until_killed(port, server, recording, frames[recording], kill_after)
        for frame in flagged:
            acks[(recording, "front", frame)] = hashlib.sha256(frames[recording][frame]).hexdigest()
    assert len(acks) > 10, "the server flagged too little to test anything"
    assert any(rec == "srv0" for rec, _, _ in acks), "no flag arrived before the kill"
    # The same recording again, after its flags were stored: nothing within dt2 (= 1) of
    # them is flagged again (the server reads earlier_frames when the stream opens).
    server, port = start_server(tiny_model, outbox_dir, tmp_path / "port-again", env)
    again = stream_until_killed(port, server, "srv1", frames["srv1"], None)
    before = {frame for (rec, _, frame) in acks if rec == "srv1"}
    assert not {f for f in again if {f - 1, f, f + 1} & before}
    verify(outbox_dir, sink, acks)
