"""TLS, mutual TLS and the bearer token, with certificates these tests generate.

Each server here is the product's (``create_server``) on a loopback port, configured
with ``tls_*_file`` and ``auth_token_file``; clients without the right certificate or
token are refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import jpeg_frame, make_config, video_frames

from alscout.errors import ConfigError, InvalidInputError
from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc
from alscout.server.outbox import MemoryOutbox
from alscout.server.security import (
    BearerTokenInterceptor,
    RefusalLog,
    TLSConfig,
    channel_credentials,
    load_token,
    server_credentials,
    token_metadata,
)

TOKEN = "s3cret-token-0123456789abcdef"
SERVING = health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server identity it signed, a client identity it signed, and
    a second, untrusted CA with a client identity of its own."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool, usage=None, sans=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """Generate the test PKI into ``folder`` (EC P-256 keys, valid for one day)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for ca_name, leaf_name in (("ca", "client"), ("rogue_ca", "rogue")):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_subject = _name(f"alscout test {ca_name}")
        ca_cert = _certificate(ca_subject, ca_subject, ca_key.public_key(), ca_key, ca=True)
        files[ca_name] = _write_cert(ca_cert, folder / f"{ca_name}.pem")
        leaves = [(leaf_name, ExtendedKeyUsageOID.CLIENT_AUTH, ())]
        if ca_name == "ca":
            sans = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
            leaves.append(("server", ExtendedKeyUsageOID.SERVER_AUTH, sans))
        for name, usage, sans in leaves:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _certificate(
                _name(f"alscout test {name}"),
                ca_subject,
                key.public_key(),
                ca_key,
                ca=False,
                usage=usage,
                sans=sans,
            )
            files[f"{name}_cert"] = _write_cert(cert, folder / f"{name}.crt")
            files[f"{name}_key"] = _write_key(key, folder / f"{name}.key")
    return Pki(**files)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ---------------------------------------------------------------- servers


class SecureServer:
    """A server from ``create_server`` on 127.0.0.1:0 with the given TLS and token."""

    def __init__(self, harness, model: Path, tls: TLSConfig | None, token: str | None):
        self.harness = harness
        self.folder = Path(tempfile.mkdtemp(prefix="alscout-secure-"))
        settings: dict[str, object] = {}
        if tls is not None:
            settings.update(
                tls_cert_file=tls.cert_file,
                tls_key_file=tls.key_file,
                tls_client_ca_file=tls.client_ca_file,
            )
        if token is not None:
            token_file = self.folder / "token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            settings["auth_token_file"] = token_file
        self.outbox = MemoryOutbox()
        self.scoring, self.port = harness.start(make_config(model, **settings), self.outbox)
        self.target = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.harness.stop(self.scoring)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def secure_server(harness, tiny_model):
    servers = []

    def start(tls=None, token=None) -> SecureServer:
        servers.append(SecureServer(harness, tiny_model, tls, token))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _channel(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials)


def model_info(target, credentials=None, metadata=None) -> pb.ModelInfo:
    with _channel(target, credentials) as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        return stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=10)


def health_status(target, credentials=None) -> int:
    with _channel(target, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        return reply.status


def refused_code(fn, *args, **kw) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        fn(*args, **kw)
    return caught.value.code()


# ---------------------------------------------------------------- configuration


def test_tls_config_checks_its_files(pki, tmp_path):
    tls = TLSConfig(str(pki.server_cert), pki.server_key)
    assert tls.cert_file == pki.server_cert and not tls.mutual
    assert TLSConfig(pki.server_cert, pki.server_key, pki.ca).mutual
    with pytest.raises(ConfigError, match=r"key_file .*missing.key: no such file"):
        TLSConfig(pki.server_cert, tmp_path / "missing.key")
    not_pem = tmp_path / "cert.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a binary")
    with pytest.raises(ConfigError, match=r"cert_file .*cert.der: not a PEM file"):
        TLSConfig(not_pem, pki.server_key)
    with pytest.raises(ConfigError, match="client_ca_file"):
        TLSConfig(pki.server_cert, pki.server_key, tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="cert_file must be a path"):
        TLSConfig("", pki.server_key)


def test_server_credentials_warn_about_a_key_others_can_read(pki, tmp_path, caplog):
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki.server_key.read_bytes())
    loose.chmod(0o644)
    with caplog.at_level("WARNING", logger="alscout.server.security"):
        assert isinstance(
            server_credentials(TLSConfig(pki.server_cert, pki.server_key, pki.ca)),
            grpc.ServerCredentials,
        )
        assert "readable by other users" not in caplog.text
        server_credentials(TLSConfig(pki.server_cert, loose))
    assert f"readable by other users path={loose}" in caplog.text
    assert f"chmod 600 {loose}" in caplog.text  # the same warning as a token file's


def test_a_token_file_others_can_read_is_warned_about_like_a_key_file(tmp_path, caplog):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="alscout.server.security"):
        assert load_token(token_file) == TOKEN
        assert caplog.records == []
        token_file.chmod(0o644)
        assert load_token(token_file) == TOKEN
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert f"path={token_file}" in record.getMessage()
    assert f"chmod 600 {token_file}" in record.getMessage()


def test_client_credentials_and_tokens_are_checked(pki, tmp_path):
    assert isinstance(channel_credentials(pki.ca), grpc.ChannelCredentials)
    assert isinstance(channel_credentials(None), grpc.ChannelCredentials)
    with pytest.raises(InvalidInputError, match="both cert_file and key_file"):
        channel_credentials(pki.ca, cert_file=pki.client_cert)
    with pytest.raises(ConfigError, match=r"ca_file .*no such file"):
        channel_credentials(tmp_path / "none.pem")
    assert token_metadata(TOKEN) == (("authorization", f"Bearer {TOKEN}"),)
    for bad in ("short", "has a space in the middle of it", 12345):
        with pytest.raises(ConfigError):
            BearerTokenInterceptor(bad)
        with pytest.raises(InvalidInputError):
            token_metadata(bad)
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    assert load_token(token_file) == TOKEN
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match=r"token.*at least 16 characters"):
        load_token(token_file)
    with pytest.raises(ConfigError, match="cannot read the token file"):
        load_token(tmp_path / "missing")


# ---------------------------------------------------------------- TLS


def test_tls_serves_clients_that_trust_the_ca_and_refuses_others(pki, secure_server):
    server = secure_server(tls=TLSConfig(pki.server_cert, pki.server_key))
    trusted = channel_credentials(pki.ca)
    assert health_status(server.target, trusted) == SERVING
    assert model_info(server.target, trusted).name == "tiny-detector"
    # a plaintext client and one that trusts another CA never get through the handshake
    assert refused_code(model_info, server.target) == grpc.StatusCode.UNAVAILABLE
    untrusting = channel_credentials(pki.rogue_ca)
    assert refused_code(model_info, server.target, untrusting) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(pki, secure_server):
    server = secure_server(tls=TLSConfig(pki.server_cert, pki.server_key, pki.ca))
    with_cert = channel_credentials(pki.ca, pki.client_cert, pki.client_key)
    assert model_info(server.target, with_cert).num_heads == 5
    without_cert = channel_credentials(pki.ca)
    assert refused_code(model_info, server.target, without_cert) == grpc.StatusCode.UNAVAILABLE
    assert refused_code(health_status, server.target, without_cert) == grpc.StatusCode.UNAVAILABLE
    rogue = channel_credentials(pki.ca, pki.rogue_cert, pki.rogue_key)
    assert refused_code(model_info, server.target, rogue) == grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------- token


def test_token_guards_every_rpc_but_the_health_probes(secure_server):
    server = secure_server(token=TOKEN)
    assert health_status(server.target) == SERVING  # probes need no token
    assert model_info(server.target, metadata=token_metadata(TOKEN)).name == "tiny-detector"
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert refused_code(model_info, server.target) == unauthenticated
    wrong = token_metadata("x" * len(TOKEN))
    assert refused_code(model_info, server.target, metadata=wrong) == unauthenticated
    basic = (("authorization", f"Basic {TOKEN}"),)
    assert refused_code(model_info, server.target, metadata=basic) == unauthenticated

    frames = [jpeg_frame(d, i) for i, d in enumerate(video_frames(6, seed=1))]
    with grpc.insecure_channel(server.target) as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ScoreStream(iter(frames), timeout=10))
        assert caught.value.code() == unauthenticated
        assert "bearer token" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.ReloadModel(pb.ReloadModelRequest(), timeout=10)
        assert caught.value.code() == unauthenticated
        results = list(stub.ScoreStream(iter(frames), metadata=token_metadata(TOKEN), timeout=30))
    assert len(results) == len(frames) + 1 and results[-1].end_of_stream


def test_mutual_tls_and_token_together(pki, secure_server):
    server = secure_server(tls=TLSConfig(pki.server_cert, pki.server_key, pki.ca), token=TOKEN)
    creds = channel_credentials(pki.ca, pki.client_cert, pki.client_key)
    assert model_info(server.target, creds, token_metadata(TOKEN)).num_heads == 5
    assert refused_code(model_info, server.target, creds) == grpc.StatusCode.UNAUTHENTICATED
    assert health_status(server.target, creds) == SERVING


# ---------------------------------------------------------------- refused calls


async def _echo_server(deserialized: list[int]) -> tuple[grpc.aio.Server, int]:
    """A bare server behind the token interceptor whose methods count deserializations."""

    def deserialize(data: bytes) -> bytes:
        deserialized.append(len(data))
        return data

    async def unary(request: bytes, context) -> bytes:
        return request[:4]

    async def stream(requests, context):
        async for request in requests:
            yield request[:4]

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, deserialize, bytes),
            "Stream": grpc.stream_stream_rpc_method_handler(stream, deserialize, bytes),
        },
    )
    size = 64 * 1024 * 1024
    server = grpc.aio.server(
        interceptors=[BearerTokenInterceptor(TOKEN)],
        options=[("grpc.max_receive_message_length", size)],
    )
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def test_a_refused_call_is_never_deserialized(harness):
    deserialized: list[int] = []
    server, port = harness.call(_echo_server(deserialized))
    big = b"\x07" * (8 * 1024 * 1024)
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            unary = channel.unary_unary("/test.Echo/Unary")
            stream = channel.stream_stream("/test.Echo/Stream")
            for _ in range(3):
                assert refused_code(unary, big, timeout=30) == grpc.StatusCode.UNAUTHENTICATED
                calls = stream(iter([big, big]), timeout=30)
                assert refused_code(list, calls) == grpc.StatusCode.UNAUTHENTICATED
            assert deserialized == []  # refused from the metadata, before any message
            assert unary(big, metadata=token_metadata(TOKEN), timeout=30) == big[:4]
            assert deserialized == [len(big)]
    finally:
        harness.call(server.stop(0))


def test_refused_calls_are_logged_with_their_peer_at_most_once_per_period(secure_server, caplog):
    server = secure_server(token=TOKEN)
    with caplog.at_level(logging.WARNING, logger="alscout.server.security"):
        for _ in range(5):
            assert refused_code(model_info, server.target) == grpc.StatusCode.UNAUTHENTICATED
    lines = [r for r in caplog.records if "call refused" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    message = lines[0].getMessage()
    assert "code=UNAUTHENTICATED" in message and "peer=ipv4:127.0.0.1:" in message
    assert "method=/alscout.v1.Scorer/GetModelInfo" in message


def test_refusal_log_counts_what_it_left_out(caplog):
    now = [100.0]
    refusals = RefusalLog(10.0, clock=lambda: now[0], max_peers=2)
    with caplog.at_level(logging.WARNING, logger="alscout.server.security"):
        assert refusals.refused("ipv4:10.0.0.7:5000", "UNAUTHENTICATED", "no token")
        for port in range(5001, 5005):  # a new connection per call: same address
            assert not refusals.refused(f"ipv4:10.0.0.7:{port}", "UNAUTHENTICATED", "no token")
        assert refusals.refused("ipv6:[::1]:5000", "UNAUTHENTICATED", "no token")
        now[0] += 10.0
        assert refusals.refused("ipv4:10.0.0.7:5009", "PERMISSION_DENIED", "wrong token")
        assert refusals.refused("ipv4:10.0.0.8:1", "UNAUTHENTICATED", "no token")  # 3rd peer
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    assert "suppressed=0" in messages[0] and "peer=ipv4:10.0.0.7:5000" in messages[0]
    assert "peer=ipv6:[::1]:5000" in messages[1]
    assert "code=PERMISSION_DENIED" in messages[2] and "suppressed=4" in messages[2]
