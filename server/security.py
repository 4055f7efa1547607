"""Transport security of the scoring service: TLS, mutual TLS and a bearer token.

Server side: :class:`TLSConfig` and :func:`server_credentials` for
``server.add_secure_port``, and :class:`BearerTokenInterceptor`, which refuses every
call without ``authorization: Bearer <token>`` metadata with ``UNAUTHENTICATED`` except
the ``grpc.health.v1`` probes (load balancers and orchestrators ask them without
credentials). Client side: :func:`channel_credentials` and :func:`token_metadata`.
Operator's view: ``docs/operations.md``.
"""

from __future__ import annotations

import hmac
import logging
import stat
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from alscout.errors import ConfigError, InvalidInputError

__all__ = [
    "TLSConfig",
    "server_credentials",
    "BearerTokenInterceptor",
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
    if tls.key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("TLS key file is readable by other users path=%s", tls.key_file)
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
        return _check_token(text.strip(), ConfigError)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` with ``UNAUTHENTICATED``.

    The ``grpc.health.v1`` Check and Watch methods stay open. Tokens are compared in
    constant time. Raises :class:`ConfigError` for a token shorter than
    :data:`MIN_TOKEN_LENGTH` or with characters a header value cannot carry.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {_check_token(token, ConfigError)}".encode()

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
        log.info("call refused: missing or wrong bearer token method=%s", method)
        return _refusal(handler)

    def _authorized(self, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        found = False
        for key, value in metadata:
            if key.lower() != "authorization":
                continue
            given = value.encode() if isinstance(value, str) else bytes(value)
            # compare every authorization entry so timing does not tell which matched
            found |= hmac.compare_digest(given, self._expected)
        return found


def _refusal(
    handler: grpc.RpcMethodHandler[_Request, _Response],
) -> grpc.RpcMethodHandler[_Request, _Response]:
    """A handler of the same kind as ``handler`` that ends the call UNAUTHENTICATED."""

    async def deny(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or wrong bearer token: send 'authorization: Bearer <token>' metadata",
        )

    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, deserialize, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, deserialize, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, deserialize, serialize)
    return grpc.unary_unary_rpc_method_handler(deny, deserialize, serialize)


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
