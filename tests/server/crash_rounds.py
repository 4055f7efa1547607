"""Kill -9 the real scoring server and the uploader while recordings stream (issue #6).

A run starts ``alscout serve`` (the tests' tiny ONNX model on ONNX Runtime, a
DurableOutbox, fixed threshold 0: about one frame in five flags) and ``alscout outbox
upload`` to a folder sink as real processes, with a ``torch`` first on their path that
refuses to be imported, and streams recordings through
:class:`~alscout.server.client.ScorerClient`. Every FLAGGED final decision the client
receives is recorded with the sha256 of the bytes it sent for that frame. Each round
ends in one kill -9 at a random moment (a seeded generator draws each round's kind,
counts and pauses; every block of five rounds runs each kind once, in random order):

- ``server_mid_stream``: 1-120 results in, after a random pause of up to 30 ms (frames
  in flight, flagged frames being stored);
- ``server_after_ack``: the instant the 1st-3rd FLAGGED answer of the round arrived;
- ``server_mid_put``: a watcher thread sees a put start writing a file (it appears in
  the outbox's ``tmp/``) and kills the server 0-3 ms later, inside or just after ``put``;
- ``uploader_mid_upload``: the uploader (stopped, a backlog of 20-80 results' flags let
  build, started again) up to 10 ms after it logged its first upload;
- ``both``: server and uploader at once, 1-120 results in.

A killed server restarts at once on the same port and outbox; the client then resumes
(its own reconnect logic) or, with probability ``restart_p``, drops the call and streams
the recording again from frame 0. A killed uploader comes back 0-60 results later.
After the last round the recording finishes, the server stops (SIGTERM), the uploader
drains, and :func:`crash_sink.verify_crash` compares the sink with the acknowledgements.

    .venv/bin/python tests/server/crash_rounds.py --rounds 60 --seed 1 [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for _folder in (HERE.parent, HERE):  # tests/ for shared_inputs, this folder for crash_*
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from crash_procs import DT2, recording, vehicle_processes  # noqa: E402  # found through the line above
from crash_report import KINDS, CrashConfig, CrashReport, Round  # noqa: E402
from crash_sink import Verdict, pending_count, temp_files, torn_put, verify_crash  # noqa: E402

from alscout.server._proto import alscout_pb2 as pb  # noqa: E402
from alscout.server.client import ScorerClient, StreamFrame  # noqa: E402

log = logging.getLogger(__name__)

CAMERA = "front"


class _BusyCounter(logging.Handler):
    """Counts the client's retries of a fresh call refused ALREADY_EXISTS."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "code=ALREADY_EXISTS" in record.getMessage():
            self.count += 1


class CrashRun:
    """One run of ``config.rounds`` kills in ``folder`` with the model at ``model``."""

    def __init__(self, config: CrashConfig, folder: Path, model: Path) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.outbox, self.sink = folder / "outbox", folder / "sink"
        self.server, self.uploader, self.target = vehicle_processes(
            folder, model, self.outbox, self.sink
        )
        self.acks: dict[tuple[str, str, int], str] = {}
        self.hashes: set[str] = set()
        #: (recording, frame) whose own result / whose final decision the client received
        self.answered: set[tuple[str, int]] = set()
        self.decided: set[tuple[str, int]] = set()
        self.round = 0
        self.plan: list[str] = []
        self.trigger = Round("", 0, 0.0, 0, False)
        self.watcher = threading.Thread()
        self.watcher_error: Exception | None = None
        self.stopping = threading.Event()
        self.killed_at: float | None = None
        self.round_results = self.round_acks = 0
        self.uploader_due: int | None = None
        self.report = CrashReport(config, Verdict(0, 0, 0, 0, 0))

    # ----------------------------------------------------------------- the run

    def run(self) -> CrashReport:
        """Run every round, drain, verify; processes left are killed on the way out."""
        started = time.monotonic()
        busy = _BusyCounter()
        client_log = logging.getLogger("alscout.server.client")
        client_log.addHandler(busy)
        try:
            self._start_server()
            self.uploader.start()
            self._arm()
            index = 0
            while self.round < self.config.rounds:
                frames = recording(index, self.config.frames)
                self._check_unique(frames)
                name = f"rec{index:03d}"
                self.report.recordings += 1
                while self._stream(name, frames):
                    self.report.stream_restarts += 1
                index += 1
            self._finish()
        finally:
            client_log.removeHandler(busy)
            self.report.busy = busy.count
            self.stopping.set()
            if self.watcher.is_alive():
                self.watcher.join()
            for child in (self.server, self.uploader):
                if child.alive:
                    child.signal(signal.SIGKILL)
                    child.wait()
        self.report.verdict = verify_crash(self.outbox, self.sink, self.acks, DT2)
        self.report.undecided = len(self.answered - self.decided)
        self.report.wall_s = time.monotonic() - started
        return self.report

    def _stream(self, name: str, frames: list[bytes]) -> bool:
        """Stream a recording to its end; True when a kill made the client start it anew.

        A fresh call can find the recording still held by the call it replaces (the
        server has not yet seen that call end): the client retries it as a fresh call
        itself (ALREADY_EXISTS; counted from its warnings by :class:`_BusyCounter`).
        """
        source = (StreamFrame(i, data) for i, data in enumerate(frames))
        with (
            ScorerClient(self.target, retries=12, backoff_s=0.02) as client,
            contextlib.closing(client.stream(name, CAMERA, source)) as results,
        ):
            for result in results:
                if self.killed_at is not None:
                    self.report.back_s.append(time.monotonic() - self.killed_at)
                    self.killed_at = None
                if not result.end_of_stream and not result.HasField("resume"):
                    self.answered.add((name, result.frame_index))
                for decision in result.final_decisions:
                    self.decided.add((name, decision.frame_index))
                    if decision.decision == pb.DECISION_FLAGGED:
                        key = (name, CAMERA, decision.frame_index)
                        self.acks[key] = hashlib.sha256(frames[decision.frame_index]).hexdigest()
                        self.round_acks += 1
                if self._step():
                    return True
        return False

    def _finish(self) -> None:
        """Stop the server, let the uploader drain the outbox, stop it."""
        self.server.signal(signal.SIGTERM)
        if self.server.wait(60) != 0:
            raise RuntimeError(f"the server did not stop cleanly:\n{self.server.tail()}")
        if not self.uploader.alive:
            self.uploader.start()
        deadline = time.monotonic() + 120
        while pending_count(self.outbox) > 0:
            if not self.uploader.alive or time.monotonic() > deadline:
                raise RuntimeError(f"the uploader did not drain:\n{self.uploader.tail()}")
            time.sleep(0.05)
        self.uploader.signal(signal.SIGTERM)
        self.uploader.wait(60)

    # ----------------------------------------------------------------- rounds

    def _arm(self) -> None:
        """Draw the next round: its kind, when its kill comes and what follows it."""
        if not self.plan:
            self.plan = [KINDS[i] for i in self.rng.permutation(len(KINDS))]
        kind = self.plan.pop()
        after = int(self.rng.integers(1, 4 if kind == "server_after_ack" else 121))
        if kind == "uploader_mid_upload":
            after = int(self.rng.integers(20, 81))
        pause = float(self.rng.uniform(0.0, 0.003 if kind == "server_mid_put" else 0.03))
        uploader_delay = int(self.rng.integers(0, 61))
        restart = bool(self.rng.random() < self.config.restart_p)
        self.trigger = Round(kind, after, pause, uploader_delay, restart)
        self.round_results = self.round_acks = 0
        if kind == "uploader_mid_upload":
            if self.uploader.alive:
                self.uploader.signal(signal.SIGTERM)  # paused, not a crash: a backlog builds
                self.uploader.wait()
            self.uploader_due = None  # this round starts it
        elif kind == "both" and not self.uploader.alive:
            self.uploader.start()
            self.uploader_due = None
        elif kind == "server_mid_put":
            self.watcher = threading.Thread(target=self._kill_mid_put, args=(pause,), daemon=True)
            self.watcher.start()

    def _step(self) -> bool:
        """Book one result; kill when the round's moment has come. True: restart the stream."""
        self.report.results += 1
        self.round_results += 1
        if self.uploader_due is not None and self.report.results >= self.uploader_due:
            self.uploader.start()
            self.uploader_due = None
        if self.round >= self.config.rounds:
            return False
        kind, after, pause = self.trigger.kind, self.trigger.after, self.trigger.pause_s
        if kind == "server_mid_put":
            if self.watcher.is_alive():
                return False
            self.watcher.join()
            if self.watcher_error is not None:
                raise self.watcher_error
        elif kind == "uploader_mid_upload":
            if not self.uploader.alive:
                if self.round_results >= after:
                    self.uploader.start()
                return False
            if not self.uploader.count(b"frame uploaded"):
                return False
            time.sleep(pause / 3)
        elif (self.round_acks if kind == "server_after_ack" else self.round_results) < after:
            return False
        elif kind != "server_after_ack":
            time.sleep(pause)
        return self._kill(kind)

    def _kill_mid_put(self, pause: float) -> None:
        """Watcher thread: kill -9 the server the instant one of its puts starts writing a
        file (it appears in the outbox's tmp/), plus ``pause``; restart it."""
        tmp = self.outbox / "tmp"
        try:
            while not self.stopping.is_set():
                with contextlib.suppress(FileNotFoundError):
                    if os.listdir(tmp):
                        break
                time.sleep(0.0002)
            else:
                return
            time.sleep(pause)
            self.server.signal(signal.SIGKILL)
            self.killed_at = time.monotonic()
            self.server.wait()
            self.report.outbox_torn += torn_put(self.outbox)
            self._start_server()
        except Exception as error:  # noqa: BLE001  # handed to the main thread
            self.watcher_error = error

    def _kill(self, kind: str) -> bool:
        server = kind not in ("uploader_mid_upload", "server_mid_put")  # mid_put: killed
        uploader = kind in ("uploader_mid_upload", "both") and self.uploader.alive
        if uploader:
            self.report.backlog_at_kill.append(pending_count(self.outbox))
            torn_before = temp_files(self.sink)
        victims = [c for c, hit in ((self.server, server), (self.uploader, uploader)) if hit]
        for child in victims:  # both signals first: "at once"
            child.signal(signal.SIGKILL)
        if server:
            self.killed_at = time.monotonic()
        for child in victims:
            child.wait()
        log.info("round=%d kill=%s results=%d", self.round, kind, self.round_results)
        if uploader:
            self.report.sink_torn += temp_files(self.sink) > torn_before
            if self.uploader_due is None:
                self.uploader_due = self.report.results + self.trigger.uploader_delay
        if server:
            self.report.outbox_torn += torn_put(self.outbox)
            self._start_server()
        restart = self.trigger.restart and kind != "uploader_mid_upload"
        self.report.kills[kind] += 1
        self.round += 1
        self._arm()
        return restart

    def _start_server(self) -> None:
        began = time.monotonic()
        self.server.start()
        self.server.wait_for(b"server started")
        self.report.server_start_s.append(time.monotonic() - began)

    def _check_unique(self, frames: list[bytes]) -> None:
        digests = {hashlib.sha256(f).hexdigest() for f in frames}
        if len(digests) != len(frames) or digests & self.hashes:
            raise RuntimeError("two frames have the same bytes: 'exactly once' would be moot")
        self.hashes |= digests


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, print a JSON summary; exit 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=150, help="frames per recording")
    parser.add_argument("--workdir", type=Path, help="keep outbox, sink and logs here")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    from shared_inputs import write_tiny_detector

    with tempfile.TemporaryDirectory(prefix="alscout-crash-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = write_tiny_detector(folder / "tiny.onnx")
        config = CrashConfig(rounds=args.rounds, seed=args.seed, frames=args.frames)
        report = CrashRun(config, folder, model).run()
    summary = report.summary()
    text = json.dumps(summary, indent=2)
    sys.stdout.write(text + "\n")
    if not summary["ok"]:
        sys.stdout.write(json.dumps(asdict(report.verdict), indent=2, default=str) + "\n")
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
