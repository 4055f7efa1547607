"""Crash harnesses: kill -9 at random points, again and again, then check the sink.

1. The real scoring server (``alscout serve`` with its DurableOutbox) and the real
   uploader process, while recordings stream through ScorerClient
   (tests/server/crash_rounds.py): every frame the client was told FLAGGED is in the
   sink exactly once, by content hash, and the store checks clean.
2. A stand-in writer that calls ``DurableOutbox.put`` back to back (so kills often land
   inside ``put``) and the uploader: every frame whose ``put`` returned is in the sink
   exactly once and the store checks clean.
"""

from __future__ import annotations

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
from crash_report import KINDS, CrashConfig  # noqa: E402
from crash_rounds import CrashRun  # noqa: E402
from crash_sink import read_sink, verify_crash  # noqa: E402

from alscout.server.durable_outbox import DurableOutbox  # noqa: E402  # after the path set-up
from alscout.server.uploader import Uploader, UploaderConfig  # noqa: E402
from alscout.storage.sinks import DirectorySink  # noqa: E402

ROUNDS = 50
#: every n-th round the uploader is a real ``python -m alscout.server.uploader`` process
PROCESS_ROUND = 25
QUICK = UploaderConfig(poll_s=0.01, backoff_base_s=0.005, backoff_cap_s=0.05)


#: rounds of the real-server harness (``tests/server/crash_rounds.py`` runs 50+ by hand)
SERVER_ROUNDS = int(os.environ.get("ALSCOUT_CRASH_ROUNDS", "10"))
SERVER_SEED = int(os.environ.get("ALSCOUT_CRASH_SEED", "3"))


@pytest.mark.slow
def test_kill_the_real_server_and_uploader_while_streaming(tmp_path, tiny_model):
    """``alscout serve`` and ``alscout outbox upload`` killed -9 at random moments."""
    config = CrashConfig(rounds=SERVER_ROUNDS, seed=SERVER_SEED)
    report = CrashRun(config, tmp_path, tiny_model).run()
    verdict = report.verdict
    assert verdict.ok, verdict
    assert verdict.orphans == 0
    # the harness really ran: every kind of kill, flags acknowledged before kills, and
    # uploaders killed with frames still waiting (not only idle ones)
    assert sum(report.kills.values()) == SERVER_ROUNDS
    assert verdict.acknowledged >= SERVER_ROUNDS, "too few flags to test anything"
    assert verdict.sink_records >= verdict.acknowledged
    if len(KINDS) <= SERVER_ROUNDS:
        assert set(report.kills) == set(KINDS)
        assert any(backlog > 0 for backlog in report.backlog_at_kill)
    assert len(report.server_start_s) == 1 + sum(
        report.kills[k] for k in KINDS if k != "uploader_mid_upload"
    )


def read_acks(path: Path) -> dict[int, str]:
    """frame -> sha256 of the acknowledged image. A line torn by a kill never counts:
    the last one without its newline, or one a restarted writer ended (crash_writer)."""
    if not path.exists():
        return {}
    acks = {}
    for line in path.read_text().split("\n")[:-1]:
        fields = line.split()
        if len(fields) != 2 or len(fields[1]) != 64:
            continue  # torn: its write was cut, so the frame was never acknowledged
        acks[int(fields[0])] = fields[1]
    return acks


def verify(outbox_dir: Path, sink: Path, acks: dict[tuple[str, str, int], str]) -> None:
    """Drain what is left, then: each acknowledged frame in the sink once, store clean."""
    with DurableOutbox(outbox_dir) as outbox:
        report = outbox.check()
        assert report.ok and report.orphans == 0, report
        Uploader(outbox, DirectorySink(sink), QUICK).drain()
    verdict = verify_crash(outbox_dir, sink, acks)
    assert verdict.ok and verdict.orphans == 0, verdict


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
            uploaded = len(read_sink(sink).records) if sink.exists() else 0
            kill(uploader)
        time.sleep(rng.uniform(0.0, 0.04))
        kill(writer)
        if not uploader_first:
            wait_for_acks(ack_file, count_lines(ack_file) + 1, uploader, timeout_s=0.0)
            time.sleep(rng.uniform(0.0, 0.08))
            uploaded = len(read_sink(sink).records) if sink.exists() else 0
            kill(uploader)
        killed_mid_upload += uploaded > 0
    acks = read_acks(ack_file)
    assert len(acks) >= ROUNDS, "the writer hardly ran; the harness tested nothing"
    assert killed_mid_upload > ROUNDS // 2, "the uploader never got a frame out before a kill"
    key = (crash_writer.RECORDING, crash_writer.CAMERA)
    verify(outbox_dir, sink, {(*key, frame): digest for frame, digest in acks.items()})
    with DurableOutbox(outbox_dir) as outbox:  # frames uploaded stay out of the next cycle
        assert set(acks) <= set(outbox.earlier_frames(*key))


def test_the_verdict_finds_what_a_crash_could_break(tmp_path):
    """verify_crash itself: it sees missing, wrong, duplicated and too-close frames."""
    import hashlib
    import json

    from alscout.server.outbox import FlaggedFrame

    outbox_dir, sink = tmp_path / "outbox", tmp_path / "sink"
    key = (crash_writer.RECORDING, crash_writer.CAMERA)
    with DurableOutbox(outbox_dir) as outbox:
        for index in (10, 11, 20):
            image = crash_writer.image_of(index)
            outbox.put(
                FlaggedFrame(
                    recording_id=key[0],
                    camera_id=key[1],
                    frame_index=index,
                    image=image,
                    image_format="jpeg",
                    z=1.0,
                    smoothed=0.5,
                    threshold=0.0,
                    model_version="v1",
                    model_hash="ab" * 32,
                )
            )
        Uploader(outbox, DirectorySink(sink), QUICK).drain()
    acks = {(*key, i): hashlib.sha256(crash_writer.image_of(i)).hexdigest() for i in (10, 20)}
    assert verify_crash(outbox_dir, sink, acks).ok
    assert verify_crash(outbox_dir, sink, acks, dt2=1).too_close == [((*key, 11), 10)]

    wrong = verify_crash(outbox_dir, sink, {**acks, (*key, 20): acks[(*key, 10)]})
    assert wrong.wrong_bytes == [(*key, 20)] and not wrong.ok
    missing = verify_crash(outbox_dir, sink, {**acks, (*key, 30): "0" * 64})
    assert missing.missing == [(*key, 30)] == missing.not_uploaded

    # the same image under a second record: a duplicate, and not a frame the store sent
    record = json.loads((sink / "frames" / key[0] / key[1] / f"{20:012d}.json").read_text())
    record["frame_index"] = 21
    (sink / "frames" / key[0] / key[1] / f"{21:012d}.json").write_text(json.dumps(record))
    twice = verify_crash(outbox_dir, sink, acks)
    assert list(twice.duplicates.values()) == [[(*key, 20), (*key, 21)]]
    assert twice.unknown_in_sink == [(*key, 21)] and not twice.ok
