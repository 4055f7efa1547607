"""Fuzzed frames against the real server beside a clean stream: the CI slice (issue #13).

``tests/server/fuzz_frames.py`` runs the same harness by hand for 100,000 frames; here
2,000 frames over 4 fuzz streams (``ALSCOUT_FUZZ_FRAMES`` / ``ALSCOUT_FUZZ_SEED`` change
that). The server must stay up, never answer INTERNAL or UNKNOWN (every malformed input
is the client's fault, so it gets a client error code), answer every message, and give
the clean stream the decisions it gets without the fuzzers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fuzz_frames import FuzzRun  # noqa: E402  # found through the line above
from fuzz_mutator import GROUPS, Mutator  # noqa: E402
from fuzz_report import FuzzConfig  # noqa: E402

from alscout.server._proto import alscout_pb2 as pb  # noqa: E402  # after the path set-up

FRAMES = int(os.environ.get("ALSCOUT_FUZZ_FRAMES", "2000"))
SEED = int(os.environ.get("ALSCOUT_FUZZ_SEED", "1"))


def events(seed: int, stream: int, n: int):
    mutator = Mutator(seed, stream)
    return [mutator.next() for _ in range(n)]


def test_the_mutator_replays_a_seed_and_covers_every_group():
    first = events(7, 0, 600)
    assert first == events(7, 0, 600)
    assert first != events(8, 0, 600)
    assert first != events(7, 1, 600)  # streams of one run differ
    assert {e.kind.split(".")[0] for e in first} == set(GROUPS)
    unparsable = 0
    for e in first:
        try:
            pb.Frame.FromString(e.payload)
        except Exception:  # noqa: BLE001  # protobuf's DecodeError differs by backend
            unparsable += 1
    assert unparsable > 10, "no malformed protobuf: the bytes mutations did nothing"


@pytest.mark.slow
def test_fuzzed_frames_leave_the_server_up_and_the_clean_stream_alone(tmp_path, tiny_model):
    report = FuzzRun(FuzzConfig(frames=FRAMES, streams=4, seed=SEED), tmp_path, tiny_model).run()
    tally, clean = report.tally, report.clean
    summary = report.summary()
    assert report.server_alive, report.server_log_errors
    assert report.server_exit == 0, "the server did not stop cleanly after the fuzzing"
    assert report.internal == 0, tally.bad_examples
    assert tally.hangs == 0, summary["triggers"]
    assert clean.identical, (clean.reference_offline_mismatch, clean.mismatches[:5], clean.errors)
    # the harness really fuzzed: every kind of mutation, many calls ended by refusals
    assert tally.frames_sent >= FRAMES
    assert set(tally.mutations) == set(GROUPS)
    assert tally.codes["ScoreStream INVALID_ARGUMENT"] > FRAMES // 10
    assert tally.calls["ScoreStream"] > FRAMES // 10 and tally.calls["Score"] > 0
    assert clean.passes >= 1 and clean.frames >= FuzzConfig().clean_frames
