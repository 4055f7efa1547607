"""The client across a server restart (every frame decided once) and a busy fresh call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter

import grpc
import pytest
from server_harness import SELECTOR, Feeder, Proxy, jpeg_frame, make_config, video_frames

from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.client import AsyncScorerClient, ScorerClient, StreamFrame
from alscout.server.client_progress import StreamProgress
from alscout.server.outbox import MemoryOutbox

CLIENTS = ["blocking", "asyncio"]


def frames_of(n: int, seed: int) -> list[StreamFrame]:
    return [StreamFrame(i, d) for i, d in enumerate(video_frames(n, seed=seed))]


def run_stream(kind: str, target: str, rec: str, frames, on_result=None, **kw) -> list:
    """Every result of ``client.stream(rec, "front", frames)``; ``on_result(results)``
    is called after each one."""
    out: list = []
    if kind == "blocking":
        with ScorerClient(target, **kw) as client:
            for result in client.stream(rec, "front", frames):
                out.append(result)
                if on_result is not None:
                    on_result(out)
        return out

    async def main() -> None:
        async with AsyncScorerClient(target, **kw) as client:

            async def source():
                for frame in frames:
                    yield frame

            async for result in client.stream(rec, "front", source()):
                out.append(result)
                if on_result is not None:
                    on_result(out)

    asyncio.run(main())
    return out


def final_decisions(results) -> dict[int, tuple[int, str, float]]:
    """Each frame's final decision; asserts that none came twice."""
    counts = Counter(d.frame_index for r in results for d in r.final_decisions)
    assert counts and max(counts.values()) == 1, counts.most_common(3)
    assert results[-1].end_of_stream
    return {
        d.frame_index: (d.decision, d.reason, round(d.smoothed, 9))
        for r in results
        for d in r.final_decisions
    }


def watch_resumes(monkeypatch) -> tuple[list[int], list[tuple[bool, int, int]]]:
    """(frame indices sent, (found, last_decided, len(sent)) at each resume answer)."""
    sent: list[int] = []
    resumes: list[tuple[bool, int, int]] = []
    message, accept = StreamProgress.message, StreamProgress.accept

    def record_message(self, frame):
        sent.append(frame.frame_index)
        return message(self, frame)

    def record_accept(self, result):
        if result.HasField("resume"):
            resumes.append((result.resume.found, self.last_decided, len(sent)))
        return accept(self, result)

    monkeypatch.setattr(StreamProgress, "message", record_message)
    monkeypatch.setattr(StreamProgress, "accept", record_accept)
    return sent, resumes


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_restarted_server_decides_every_frame_once(harness, tiny_model, monkeypatch, kind):
    """The server dies mid-stream (its state lost, its outbox kept) and a new one takes
    the port: frames answered PENDING but undecided are sent again and decided."""
    n, cut_at = 45, 16
    frames = frames_of(n, seed=60)
    config = make_config(tiny_model, resume_window_s=30.0)
    outbox1 = MemoryOutbox()
    first, port1 = harness.start(config, outbox1)
    proxy = Proxy(port1)
    target = f"127.0.0.1:{proxy.port}"
    servers = [first]
    try:
        uncut = final_decisions(run_stream(kind, target, f"r-{kind}-ref", frames, window=8))
        sent, resumes = watch_resumes(monkeypatch)
        seen: dict[str, int] = {}
        outbox2 = MemoryOutbox()

        def crash(results) -> None:
            if len(results) != cut_at:
                return
            own = [r.frame_index for r in results if not r.end_of_stream]
            decided = [d.frame_index for r in results for d in r.final_decisions]
            seen.update(answered=max(own), decided=max(decided, default=-1))
            for stored in outbox1.frames:  # the durable outbox survives the crash
                outbox2.put(stored)
            second, port2 = harness.start(config, outbox2)
            servers.append(second)
            proxy.target = port2  # "restarted on the same port", with a fresh state
            proxy.cut()

        rec = f"r-{kind}"
        results = run_stream(kind, target, rec, frames, crash, window=8, backoff_s=0.02)
        cut = final_decisions(results)
    finally:
        proxy.close()
        for scoring in servers:
            harness.stop(scoring)
    # frames had been answered PENDING but not decided when the server died
    assert seen["answered"] > seen["decided"]
    assert sorted(cut) == list(range(n))  # every frame exactly one final decision
    found, last_decided, at = resumes[0]
    assert not found and last_decided >= seen["decided"]
    boundary = last_decided + 1
    # the new server got every undecided frame, oldest first, then the rest, once each
    assert sent[at:] == list(range(boundary, n))
    taken = servers[1].metrics.value("alscout_frames_total", rpc="ScoreStream")
    assert taken == n - boundary
    # decisions equal the uninterrupted run's wherever the new stream's missing history
    # (smoothing dt, local maximum dt1, earlier uploads dt2) cannot reach
    reach = SELECTOR.dt + SELECTOR.dt1 + SELECTOR.dt2 + 1
    same = [i for i in range(n) if i < boundary or i >= boundary + reach]
    assert len(same) > n // 2
    assert {i: cut[i] for i in same} == {i: uncut[i] for i in same}
    # every frame the client was told is FLAGGED is stored in one of the outboxes
    stored = {f.frame_index for f in outbox1.frames + outbox2.frames if f.recording_id == rec}
    flagged = {i for i, d in cut.items() if d[0] == pb.DECISION_FLAGGED}
    assert flagged and flagged <= stored


@pytest.fixture(scope="module")
def busy_server(harness, tiny_model):
    """(target, scoring) of a server that keeps a cut call's streams 30 s."""
    scoring, port = harness.start(make_config(tiny_model, resume_window_s=30.0), MemoryOutbox())
    yield f"127.0.0.1:{port}", scoring
    harness.stop(scoring)


def hold(target: str, scoring, rec: str):
    """A raw call that holds ``rec`` (attached, 3 frames sent); (channel, Feeder)."""
    channel = grpc.insecure_channel(target)
    data = video_frames(3, seed=61)
    holder = Feeder(
        alscout_pb2_grpc.ScorerStub(channel), [jpeg_frame(d, i, rec) for i, d in enumerate(data)]
    )
    holder.send(3)
    deadline = time.monotonic() + 30
    while (state := scoring.service.streams.get(rec, "front")) is None or state.owner is None:
        assert time.monotonic() < deadline, "the holding call never took the stream"
        time.sleep(0.01)
    return channel, holder


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_fresh_call_waits_for_the_call_it_replaces(busy_server, resumes, caplog, kind):
    target, scoring = busy_server
    rec = f"b-{kind}"
    channel, holder = hold(target, scoring, rec)
    release = threading.Timer(0.3, holder.finish)
    release.start()
    try:
        with caplog.at_level(logging.WARNING, logger="alscout.server.client"):
            results = run_stream(
                kind, target, rec, frames_of(20, seed=62), retries=8, backoff_s=0.05
            )
    finally:
        release.join()
        channel.close()
    assert "code=ALREADY_EXISTS" in caplog.text  # it raced the holder and was refused
    assert sorted(final_decisions(results)) == list(range(20))
    assert resumes == []  # retried as a fresh call, never as a resume
    assert holder.error is None and holder.results[-1].end_of_stream  # not taken over


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_stream_held_by_another_live_call_still_fails(busy_server, kind):
    target, scoring = busy_server
    rec = f"h-{kind}"
    channel, holder = hold(target, scoring, rec)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            run_stream(kind, target, rec, frames_of(5, seed=63), retries=2, backoff_s=0.01)
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        holder.finish()
    finally:
        channel.close()
    assert holder.error is None and holder.results[-1].end_of_stream


def test_a_fresh_call_right_after_a_cancelled_one_succeeds(busy_server):
    target, _ = busy_server
    frames = frames_of(24, seed=64)
    with ScorerClient(target, retries=8, backoff_s=0.02) as client:
        for attempt in range(3):
            with contextlib.closing(client.stream("b-again", "front", frames)) as results:
                for i, _ in enumerate(results):
                    if i == 4 + attempt:
                        break  # the call is cancelled; the server notices a little later
            results = list(client.stream("b-again", "front", frames))
            assert sorted(final_decisions(results)) == list(range(24))
