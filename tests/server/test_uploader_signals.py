"""`alscout outbox upload` stops on SIGTERM, however often its loop polls."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from outbox_frames import flagged

from alscout.server.durable_outbox import DurableOutbox


def test_sigterm_stops_a_fast_polling_uploader_every_time(tmp_path):
    outbox, sink = tmp_path / "outbox", tmp_path / "sink"
    DurableOutbox(outbox).close()
    command = [sys.executable, "-m", "alscout.apps.cli", "outbox", "upload"]
    command += ["--outbox", str(outbox), "--sink", str(sink), "--poll", "0.0005"]
    for _ in range(6):  # the handler used to deadlock on stop.wait()'s lock now and then
        process = subprocess.Popen(command, stderr=subprocess.PIPE)
        time.sleep(1.5)  # past start-up: in the polling loop
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_sigterm_ends_a_bandwidth_pause_at_once(tmp_path):
    # a 3 MB frame at 1 kB/s: past the 1 MiB burst the token bucket waits ~17 minutes
    outbox, sink = tmp_path / "outbox", tmp_path / "sink"
    with DurableOutbox(outbox) as box:
        box.put(flagged(1, image=bytes(3_000_000)))
    command = [sys.executable, "-m", "alscout.apps.cli", "outbox", "upload"]
    command += ["--outbox", str(outbox), "--sink", str(sink), "--bandwidth", "1000"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        time.sleep(3.0)  # past start-up: waiting for tokens
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        assert time.monotonic() - sent < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with DurableOutbox(outbox) as box:
        assert len(box.pending()) <= 1  # sent whole or still pending: nothing lost
