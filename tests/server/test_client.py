"""The Python client: streams equal the offline rule; a cut connection resumes exactly."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections import Counter

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from server_harness import SELECTOR, Proxy, make_config, split, video_frames

from alscout.errors import InvalidInputError
from alscout.runtime.temporal import flag_recording
from alscout.server._proto import alscout_pb2 as pb
from alscout.server.client import AsyncScorerClient, ScorerClient, StreamFrame
from alscout.server.client_progress import StreamProgress
from alscout.server.outbox import MemoryOutbox
from alscout.server.security import channel_credentials


@pytest.fixture(scope="module")
def resumable(harness, tiny_model):
    """A server that keeps a cut call's streams 30 s for resuming, behind a cuttable proxy."""
    outbox = MemoryOutbox()
    scoring, port = harness.start(make_config(tiny_model, resume_window_s=30.0), outbox)
    proxy = Proxy(port)
    yield proxy, outbox, scoring
    proxy.close()
    harness.stop(scoring)


def frames_of(n: int, seed: int) -> list[StreamFrame]:
    return [StreamFrame(i, d) for i, d in enumerate(video_frames(n, seed=seed))]


def decisions(results) -> dict[int, tuple[int, str, float]]:
    _, closing, finals, by_key = split(results)
    assert len(closing) == 1 and closing[-1] is results[-1]  # the closing result comes last
    assert set(finals.values()) == {1}  # each frame's final decision exactly once
    return {k[2]: (d.decision, d.reason, round(d.smoothed, 9)) for k, d in by_key.items()}


def offline(z) -> dict[int, tuple[int, str, float]]:
    out = flag_recording(z, SELECTOR)
    flag = {True: pb.DECISION_FLAGGED, False: pb.DECISION_NOT_FLAGGED}
    return {d.frame: (flag[d.flagged], str(d.reason), round(d.smoothed, 9)) for d in out}


def test_stream_equals_the_offline_rule_and_unary_calls_work(resumable):
    proxy, _, _ = resumable
    frames = frames_of(30, seed=50)
    with ScorerClient(f"127.0.0.1:{proxy.port}") as client:
        results = list(client.stream("c-plain", "front", frames))
        info = client.model_info()
        single = client.score(frames[0], "c-plain", "front", want_heatmap=True)
    own = [r for r in results if not r.end_of_stream]
    assert [r.frame_index for r in own] == list(range(30))
    assert decisions(results) == offline([r.z for r in own])
    assert info.version == "test-1" and single.z == pytest.approx(own[0].z, rel=1e-6)
    assert single.heatmap.width == 8


def watch_client(monkeypatch):
    """Record the frames the client sends and the resume answers it gets."""
    sent: list[int] = []
    resumes: list[tuple[int, list[int]]] = []
    message, accept = StreamProgress.message, StreamProgress.accept

    def record_message(self, frame):
        sent.append(frame.frame_index)
        return message(self, frame)

    def record_accept(self, result):
        if result.HasField("resume"):
            resumes.append((result.resume.last_received_frame, len(sent)))
        return accept(self, result)

    monkeypatch.setattr(StreamProgress, "message", record_message)
    monkeypatch.setattr(StreamProgress, "accept", record_accept)
    return sent, resumes


@pytest.mark.parametrize("cuts_at", [(12,), (5, 20, 33)])
def test_a_cut_connection_resumes_with_the_uncut_decisions(resumable, monkeypatch, cuts_at):
    proxy, _, scoring = resumable
    frames = frames_of(45, seed=51)
    rec = f"c-cut{len(cuts_at)}"
    with ScorerClient(f"127.0.0.1:{proxy.port}", window=8) as client:
        uncut = list(client.stream(f"{rec}-ref", "front", frames))
        taken_before = scoring.metrics.value("alscout_frames_total", rpc="ScoreStream")
        sent, resumes = watch_client(monkeypatch)
        cut = []
        for result in client.stream(rec, "front", frames):
            cut.append(result)
            if len(cut) in cuts_at:
                proxy.cut()
    assert resumes  # it reconnected (a late cut may find every answer already sent)
    assert decisions(cut) == decisions(uncut)  # same final decisions, each once
    # the server took every frame exactly once ...
    taken = scoring.metrics.value("alscout_frames_total", rpc="ScoreStream") - taken_before
    assert taken == len(frames)
    # ... and after each resume the client sent only frames after the last one the
    # server had taken, so never a frame already decided
    for last, at in resumes:
        assert all(i > last for i in sent[at:])
    assert max(Counter(sent).values()) <= 2
    own = [r for r in cut if not r.end_of_stream and not r.HasField("resume")]
    assert all(r.model_version == "test-1" for r in own)


def test_the_async_client_streams_and_resumes(resumable):
    proxy, _, _ = resumable
    frames = frames_of(30, seed=52)

    async def run(rec: str, cut_at: int | None):
        out = []
        async with AsyncScorerClient(f"127.0.0.1:{proxy.port}", window=8) as client:

            async def source():
                for frame in frames:
                    yield frame

            async for result in client.stream(rec, "front", source()):
                out.append(result)
                if len(out) == cut_at:
                    proxy.cut()
            info = await client.model_info()
        return out, info

    uncut, info = asyncio.run(run("c-async-ref", None))
    cut, _ = asyncio.run(run("c-async", 10))
    own = [r for r in uncut if not r.end_of_stream]
    assert decisions(uncut) == offline([r.z for r in own])
    assert decisions(cut) == decisions(uncut)
    assert info.num_heads == 5


def test_a_resume_carries_the_streams_token():
    progress = StreamProgress("rec", "cam", want_heatmap=False)
    assert not progress.can_resume  # no result yet: no token, so no resume
    progress.book(StreamFrame(0, b"x"))
    progress.accept(pb.FrameResult(recording_id="rec", camera_id="cam", frame_index=0,
                                   resume_token="first-stream-token"))  # fmt: skip
    assert progress.can_resume
    assert progress.resume_message().resume.resume_token == "first-stream-token"
    # the server lost the stream: the new one has a new token
    progress.accept(pb.FrameResult(resume=pb.ResumeResult(found=False, last_received_frame=-1),
                                   resume_token="second-stream-token"))  # fmt: skip
    assert progress.resume_message().resume.resume_token == "second-stream-token"


@pytest.fixture(scope="module")
def slow_first_answer(harness, tiny_model):
    """A server whose batches wait 600 ms for company, behind a cuttable proxy."""
    config = make_config(tiny_model, resume_window_s=30.0, max_batch=64, max_queue=64,
                         max_delay_ms=600)  # fmt: skip
    scoring, port = harness.start(config, MemoryOutbox())
    proxy = Proxy(port)
    yield proxy
    proxy.close()
    harness.stop(scoring)


@pytest.mark.parametrize("kind", ["blocking", "async"])
def test_a_call_cut_before_any_result_is_retried_as_a_fresh_call(slow_first_answer, resumes, kind):
    proxy = slow_first_answer
    frames = frames_of(12, seed=53)
    rec = f"c-early-{kind}"
    timer = threading.Timer(0.2, proxy.cut)  # the first answer is 600 ms away
    cuts = proxy.cuts

    def source():
        for frame in frames:
            if frame.frame_index == 0:
                timer.start()  # cut while the client has no result, so no token
            yield frame

    target = f"127.0.0.1:{proxy.port}"
    if kind == "blocking":
        with ScorerClient(target, retries=8, backoff_s=0.05) as client:
            results = list(client.stream(rec, "front", source()))
    else:

        async def run():
            async with AsyncScorerClient(target, retries=8, backoff_s=0.05) as client:
                return [r async for r in client.stream(rec, "front", source())]

        results = asyncio.run(run())
    timer.join()
    assert proxy.cuts == cuts + 1 and resumes == []  # no token to resume with: a fresh call instead
    _, closing, finals, _ = split(results)
    assert sorted(k[2] for k in finals) == list(range(12)) and set(finals.values()) == {1}
    assert closing[-1] is results[-1]


def test_errors_that_are_not_transient_are_raised(resumable, tiny_model):
    proxy, _, _ = resumable
    bad = [StreamFrame(0, b"not a jpeg")]
    with ScorerClient(f"127.0.0.1:{proxy.port}") as client:
        with pytest.raises(grpc.RpcError) as caught:
            list(client.stream("c-bad", "front", bad))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with ScorerClient("127.0.0.1:1", retries=1, backoff_s=0.01) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.model_info(timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(InvalidInputError, match="encoding"):
        StreamFrame(0, b"", encoding="gif")
    with pytest.raises(InvalidInputError, match="raw"):
        StreamFrame(0, b"", encoding="raw")


def test_raw_frames_and_metadata_reach_the_outbox(resumable):
    proxy, outbox, _ = resumable
    rng = np.random.default_rng(3)
    frames = [
        StreamFrame(i, rng.integers(0, 256, (96, 128, 3), dtype=np.uint8).tobytes(),
                    encoding="raw", width=128, height=96, pixel_format="rgb8",
                    capture_time_ns=1_700_000_000_123_456_789 + i, metadata={"lane": "2"})
        for i in range(12)
    ]  # fmt: skip
    with ScorerClient(f"127.0.0.1:{proxy.port}") as client:
        results = list(client.stream("c-raw", "front", frames))
    flagged = [k for k, v in decisions(results).items() if v[0] == pb.DECISION_FLAGGED]
    stored = [f for f in outbox.frames if f.recording_id == "c-raw"]
    assert [f.frame_index for f in stored] == flagged and stored
    for f in stored:
        assert (f.image_format, f.width, f.height, f.pixel_format) == ("raw", 128, 96, "rgb8")
        assert f.capture_time_ns == 1_700_000_000_123_456_789 + f.frame_index
        assert f.metadata == {"lane": "2"} and f.image == frames[f.frame_index].image


# -- TLS and a bearer token, configured through ServerConfig -------------------------


def write_identity(folder, name: str, issuer=None, *, ca: bool = False, server: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer or (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert, key, cert_path, key_path


def test_mutual_tls_and_token_from_the_config(harness, tiny_model, tmp_path):
    ca_cert, ca_key, ca_file, _ = write_identity(tmp_path, "ca", ca=True)
    issuer = (ca_cert, ca_key)
    _, _, server_crt, server_key = write_identity(tmp_path, "localhost", issuer, server=True)
    _, _, client_crt, client_key = write_identity(tmp_path, "car-7", issuer)
    token = "a-long-enough-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    config = make_config(
        tiny_model, host="localhost", tls_cert_file=server_crt, tls_key_file=server_key,
        tls_client_ca_file=ca_file, auth_token_file=tmp_path / "token",
    )  # fmt: skip
    scoring, port = harness.start(config)
    target = f"localhost:{port}"
    frames = frames_of(8, seed=53)
    try:
        good = channel_credentials(ca_file, client_crt, client_key)
        with ScorerClient(target, credentials=good, token=token) as client:
            results = list(client.stream("c-tls", "front", frames))
        assert len(decisions(results)) == 8
        with ScorerClient(target, credentials=good, token="wrong-token-0123456789abcdef") as c:
            with pytest.raises(grpc.RpcError) as caught:
                c.model_info(timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        no_cert = channel_credentials(ca_file)
        with ScorerClient(target, credentials=no_cert, token=token, retries=0) as c:
            with pytest.raises(grpc.RpcError) as caught:
                c.model_info(timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        harness.stop(scoring)
