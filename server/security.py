"""Transport security of the scoring service: TLS, mutual TLS and a bearer token.

Server side: :class:`TLSConfig` and :func:`server_credentials` for
``server.add_secure_port``, and :class:`BearerTokenInterceptor`, which refuses every
call without ``authorization: Bearer <token>`` metadata with ``UNAUTHENTICATED`` except
the ``grpc.health.v1`` probes (load balancers and orchestrators ask them without
credentials), from the metadata alone: a refused call's request is never read or
deserialized. :class:`RefusalLog` logs refused calls at WARNING, rate-limited per peer.
Client side: :func:`channel_credentials` and :func:`token_metadata`.
Operator's view: ``docs/operations.md``.
"""

from __future__ import annotations

import hmac
import logging
import stat
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from alscout.errors import ConfigError, InvalidInputError

__all__ = [
    "TLSConfig",
    "server_credentials",
    "BearerTokenInterceptor",
    "RefusalLog",
    "OPEN_METHODS",
    "channel_credentials",
    "token_metadata",
    "load_token",
    "MIN_TOKEN_LENGTH",
]

log = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")

#: methods a caller may use without a token: the standard health probes
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})

#: shortest token accepted; a guessable token is a configuration error, not a secret
MIN_TOKEN_LENGTH = 16

_PEM_MARK = b"-----BEGIN "


@dataclass(frozen=True)
class TLSConfig:
    """Files of the server's TLS identity; validated on construction.

    ``cert_file``: PEM certificate chain of the server. ``key_file``: its PEM private
    key. ``client_ca_file``: PEM certificates of the authorities whose client
    certificates are accepted; when set, every client must present one (mutual TLS).
    Raises :class:`ConfigError` naming a file that is missing, unreadable or not PEM.
    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cert_file", _pem_path("cert_file", self.cert_file))
        object.__setattr__(self, "key_file", _pem_path("key_file", self.key_file))
        if self.client_ca_file is not None:
            object.__setattr__(
                self, "client_ca_file", _pem_path("client_ca_file", self.client_ca_file)
            )

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by ``client_ca_file``."""
        return self.client_ca_file is not None


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """Credentials for ``server.add_secure_port``; mutual TLS when ``tls.mutual``."""
    key = _read(tls.key_file, "key_file")
    _warn_if_shared(tls.key_file, "TLS key file")
    client_ca = None if tls.client_ca_file is None else _read(tls.client_ca_file, "client_ca_file")
    return grpc.ssl_server_credentials(
        [(key, _read(tls.cert_file, "cert_file"))],
        root_certificates=client_ca,
        require_client_auth=tls.mutual,
    )


def channel_credentials(
    ca_file: str | Path | None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """Client credentials: trust ``ca_file`` (None: the system's roots).

    ``cert_file`` and ``key_file`` (both or neither) are the client's certificate and
    key for a server that asks for mutual TLS. Raises :class:`ConfigError` for a
    missing or non-PEM file and :class:`InvalidInputError` when only one of the pair
    is given.
    """
    if (cert_file is None) != (key_file is None):
        raise InvalidInputError(
            "a client certificate needs its key: give both cert_file and key_file, or neither"
        )
    root = None if ca_file is None else _read(_pem_path("ca_file", ca_file), "ca_file")
    key = chain = None
    if cert_file is not None and key_file is not None:
        chain = _read(_pem_path("cert_file", cert_file), "cert_file")
        key = _read(_pem_path("key_file", key_file), "key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that carries ``token``: ``(("authorization", "Bearer <token>"),)``."""
    return (("authorization", f"Bearer {_check_token(token, InvalidInputError)}"),)


def load_token(path: str | Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); :class:`ConfigError` if bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the token file: {error}") from error
    try:
        token = _check_token(text.strip(), ConfigError)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    _warn_if_shared(path, "bearer token file")
    return token


def _warn_if_shared(path: Path, what: str) -> None:
    """Log a WARNING naming ``path`` and the fix when group or others may access it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # it was just read; a vanished file fails where it is used
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s is readable by other users path=%s mode=%o: anyone on this machine can "
            "read the secret; restrict it with: chmod 600 %s",
            what,
            path,
            stat.S_IMODE(mode),
            path,
        )


class RefusalLog:
    """Logs refused calls at WARNING with their peer, at most one line per peer address
    every ``period_s`` seconds; a line counts the refusals of that address left out since
    its previous line (``suppressed``), so a flood of bad calls cannot flood the log.

    ``clock``: monotonic seconds (tests pass a fake). At most ``max_peers`` addresses are
    remembered; past that, addresses whose period is over are forgotten.
    """

    def __init__(
        self,
        period_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_peers: int = 4096,
    ) -> None:
        self.period_s = period_s
        self._clock = clock
        self._max_peers = max_peers
        self._lock = threading.Lock()
        self._peers: dict[str, list[float]] = {}  # address -> [last line at, suppressed]

    def refused(self, peer: str, code: str, reason: str) -> bool:
        """Note a refused call from ``peer`` (as ``context.peer()`` gives it); True if logged."""
        address = _peer_address(peer)
        now = self._clock()
        with self._lock:
            entry = self._peers.get(address)
            if entry is not None and now - entry[0] < self.period_s:
                entry[1] += 1
                return False
            suppressed = 0 if entry is None else int(entry[1])
            if entry is None and len(self._peers) >= self._max_peers:
                self._peers = {a: e for a, e in self._peers.items() if now - e[0] < self.period_s}
                if len(self._peers) >= self._max_peers:
                    self._peers.clear()
            self._peers[address] = [now, 0]
        log.warning(
            "call refused code=%s peer=%s suppressed=%d reason=%s", code, peer, suppressed, reason
        )
        return True


def _peer_address(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``: one key per host, whatever the port."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` with ``UNAUTHENTICATED``.

    The ``grpc.health.v1`` Check and Watch methods stay open. Tokens are compared in
    constant time. The decision is made from the call's metadata before any request
    message is read: a refused call gets a handler that reads and deserializes nothing
    (a large request costs no memory) and is logged through ``refusals``. Raises
    :class:`ConfigError` for a token shorter than :data:`MIN_TOKEN_LENGTH` or with
    characters a header value cannot carry.
    """

    def __init__(self, token: str, refusals: RefusalLog | None = None) -> None:
        self._expected = f"Bearer {_check_token(token, ConfigError)}".encode()
        self._refusals = refusals or RefusalLog()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails],
            Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None],
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in OPEN_METHODS:
            return handler
        if self._authorized(handler_call_details.invocation_metadata or ()):
            return handler
        return _refusal(method, self._refusals)

    def _authorized(self, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        found = False
        for key, value in metadata:
            if key.lower() != "authorization":
                continue
            given = value.encode() if isinstance(value, str) else bytes(value)
            # compare every authorization entry so timing does not tell which matched
            found |= hmac.compare_digest(given, self._expected)
        return found


def _refusal(method: str, refusals: RefusalLog) -> grpc.RpcMethodHandler[_Request, _Response]:
    """A handler that ends the call UNAUTHENTICATED without reading its request.

    Streaming on the request side whatever the method: grpc reads a unary request in
    full and deserializes it before the handler runs, while a streaming handler reads
    only what it asks for, and this one asks for nothing. The wire format is the same,
    so the client sees its call refused as usual. No deserializer either.
    """

    async def deny(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        refusals.refused(
            context.peer(), "UNAUTHENTICATED", f"missing or wrong bearer token method={method}"
        )
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or wrong bearer token: send 'authorization: Bearer <token>' metadata",
        )

    return grpc.stream_stream_rpc_method_handler(deny)


def _check_token(token: object, error: type[Exception]) -> str:
    if not isinstance(token, str):
        raise error(f"the bearer token must be a string, got {type(token).__name__}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise error(
            f"the bearer token must be at least {MIN_TOKEN_LENGTH} characters, got {len(token)}; "
            "generate one with: openssl rand -hex 32"
        )
    if not all(33 <= ord(c) <= 126 for c in token):
        raise error("the bearer token may hold only printable ASCII without spaces")
    return token


def _pem_path(name: str, value: object) -> Path:
    if not isinstance(value, str | Path) or str(value) == "":
        raise ConfigError(f"{name} must be a path to a PEM file, got {value!r}")
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{name} {path}: no such file")
    head = _read(path, name)[:4096]
    if _PEM_MARK not in head:
        raise ConfigError(f"{name} {path}: not a PEM file (no '-----BEGIN' line)")
    return path


def _read(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{name} {path}: cannot read: {error}") from error
