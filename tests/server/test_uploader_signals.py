"""`alscout outbox upload` stops on SIGTERM, however often its loop polls."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

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
