"""Per-stream state: decisions, pending bytes, context, the resume log and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from alscout.errors import (
    CapacityError,
    InvalidInputError,
    ResumeDeniedError,
    StreamBusyError,
)
from alscout.runtime.temporal import SelectorConfig, flag_recording
from alscout.server.metrics import ServerMetrics
from alscout.server.outbox import FramePayload
from alscout.server.streams import StreamRegistry, StreamState

CONFIG = SelectorConfig(dt=1, sigma=1.0, dt1=2, dt2=0, threshold=0.0)


def payload(i: int) -> FramePayload:
    heat = np.full((2, 3), float(i), dtype=np.float32)
    return FramePayload(
        image=bytes([i]), image_format="png", model_version="v", model_hash="h", heatmap=heat
    )


def run(state: StreamState, z) -> tuple[list, list]:
    decisions, flagged = [], []
    for i, v in enumerate(z):
        d, f = state.push(i, float(v), payload(i))
        decisions += d
        flagged += f
        state.record(d)
        assert state.pending_frames <= CONFIG.latency + 1
    d, f = state.finish()
    state.record(d)
    return decisions + d, flagged + f


def test_state_matches_the_offline_rule_and_keeps_only_pending_bytes():
    z = np.random.default_rng(0).random(30)
    state = StreamState("rec", "cam", CONFIG)
    decisions, flagged = run(state, z)
    assert state.pending_frames == 0
    expected = flag_recording(z, CONFIG)
    assert decisions == expected
    assert [f.frame_index for f in flagged] == [e.frame for e in expected if e.flagged]
    assert all(f.image == bytes([f.frame_index]) for f in flagged)
    # the heat map travels with the flagged frame; no context unless asked for
    assert all(f.heatmap[0, 0] == f.frame_index and f.context == () for f in flagged)


def test_earlier_uploads_block_their_neighbours():
    z = np.random.default_rng(0).random(30)
    first = [f.frame_index for f in run(StreamState("rec", "cam", CONFIG), z)[1]]
    config = SelectorConfig(dt=1, sigma=1.0, dt1=2, dt2=1, threshold=0.0)
    again = run(StreamState("rec", "cam", config, earlier=first), z)[0]
    assert not any(d.flagged for d in again if d.frame in first)
    assert {d.reason for d in again if d.frame in first} == {"near_earlier_upload"}


def test_flagged_frames_carry_context_before_and_after():
    z = np.random.default_rng(3).random(40)
    state = StreamState("rec", "cam", CONFIG, context_frames=2)
    _, flagged = run(state, z)
    assert flagged
    for f in flagged:
        t = f.frame_index
        got = [c.frame_index for c in f.context]
        before = [i for i in (t - 2, t - 1) if i >= 0]
        after = [i for i in range(t + 1, min(t + 1 + CONFIG.latency, 40))][:2]
        assert got == before + after
        assert all(c.image == bytes([c.frame_index]) for c in f.context)


def test_decision_log_replays_what_a_client_missed_and_knows_its_limit():
    z = np.random.default_rng(1).random(20)
    state = StreamState("rec", "cam", CONFIG, log_size=5)
    decisions, _ = run(state, z)
    assert state.decisions_after(16) == [d for d in decisions if d.frame > 16]
    assert state.decisions_after(14) == decisions[-5:]
    with pytest.raises(CapacityError, match="no longer held"):
        state.decisions_after(13)


def test_indices_must_increase():
    state = StreamState("rec", "cam", CONFIG)
    state.push(4, 0.1, payload(4))
    for bad in (4, 2):
        with pytest.raises(InvalidInputError, match=f"frame {bad} after frame 4"):
            state.check_next(bad)
    with pytest.raises(InvalidInputError, match="frame 5 after frame 7"):
        state.check_next(5, after=7)  # a call with frames in flight checks its own order
    with pytest.raises(InvalidInputError, match=">= 0"):
        StreamState("rec", "cam", CONFIG).check_next(-1)
    with pytest.raises(InvalidInputError):
        StreamState("r/..", "left", CONFIG)


def test_registry_attaches_detaches_expires_and_counts():
    metrics = ServerMetrics()
    registry = StreamRegistry(metrics)
    call_a, call_b = object(), object()
    a = StreamState("r", "left", CONFIG)
    registry.add(a, call_a)
    assert registry.get("r", "left") is a and registry.get("r", "right") is None
    with pytest.raises(StreamBusyError):
        registry.add(StreamState("r", "left", CONFIG), call_b)
    assert metrics.value("alscout_active_streams") == 1
    assert not registry.detach(a, call_b)  # only its owner detaches it
    assert registry.detach(a, call_a)
    assert metrics.value("alscout_active_streams") == 0
    assert metrics.value("alscout_detached_streams") == 1
    assert registry.expired(10.0) == []
    assert registry.expired(10.0, now=a.detached_at + 10.0) == [a]
    registry.attach(a, call_b)  # a resume
    assert a.owner is call_b and registry.expired(0.0) == []
    registry.remove(a, "finished")
    assert len(registry) == 0
    assert metrics.value("alscout_streams_freed_total", reason="finished") == 1
    assert metrics.value("alscout_active_streams") == 0


def test_each_stream_has_a_random_resume_token_that_a_resume_must_match():
    a, b = StreamState("r", "left", CONFIG), StreamState("r", "left", CONFIG)
    assert len(a.resume_token) >= 16 and a.resume_token != b.resume_token
    a.check_resume_token(a.resume_token)
    for wrong in ("", b.resume_token, a.resume_token[:-1], a.resume_token + "x"):
        with pytest.raises(ResumeDeniedError, match="resume_token"):
            a.check_resume_token(wrong)
