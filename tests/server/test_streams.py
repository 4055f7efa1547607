"""Per-stream state: the selector's decisions, pending bytes, and the flagged frames."""

from __future__ import annotations

import numpy as np
import pytest

from alscout.errors import CapacityError, InvalidInputError
from alscout.runtime.temporal import SelectorConfig, flag_recording
from alscout.server.streams import FramePayload, StreamState, StreamTable

CONFIG = SelectorConfig(dt=1, sigma=1.0, dt1=2, dt2=0, threshold=0.0)


def payload(i: int) -> FramePayload:
    return FramePayload(image=bytes([i]), image_format="png", model_version="v", model_hash="h")


def test_state_matches_the_offline_rule_and_keeps_only_pending_bytes():
    z = np.random.default_rng(0).random(30)
    state = StreamState("rec", "cam", CONFIG)
    decisions, flagged = [], []
    for i, v in enumerate(z):
        d, f = state.push(i, float(v), payload(i))
        decisions += d
        flagged += f
        assert state.pending_frames <= CONFIG.latency + 1
    d, f = state.finish()
    decisions += d
    flagged += f
    assert state.pending_frames == 0
    expected = flag_recording(z, CONFIG.dt, CONFIG.sigma, CONFIG.dt1, CONFIG.dt2, 0.0)
    assert decisions == expected
    assert [f.frame_index for f in flagged] == [e.frame for e in expected if e.flagged]
    assert all(f.image == bytes([f.frame_index]) for f in flagged)


def test_indices_must_increase():
    state = StreamState("rec", "cam", CONFIG)
    state.push(4, 0.1, payload(4))
    for bad in (4, 2):
        with pytest.raises(InvalidInputError, match=f"frame {bad} after frame 4"):
            state.check_next(bad)
    with pytest.raises(InvalidInputError, match=">= 0"):
        StreamState("rec", "cam", CONFIG).check_next(-1)


def test_table_keys_streams_by_recording_and_camera():
    table = StreamTable(CONFIG, max_streams=2)
    a = table.get("r", "left")
    assert table.get("r", "left") is a and table.get("r", "right") is not a
    assert len(table) == 2 and [s.camera_id for s in table] == ["left", "right"]
    with pytest.raises(CapacityError, match="at most 2"):
        table.get("r2", "left")
    with pytest.raises(InvalidInputError):
        table.get("r/..", "left")
