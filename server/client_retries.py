"""Which failed calls the clients retry, how often, and after what delay."""

from __future__ import annotations

import logging

import grpc

from alscout.storage.backoff import Backoff

__all__ = ["RETRYABLE", "RETRYABLE_UNARY", "Retries", "status_code", "refused_busy"]

log = logging.getLogger(__name__)

#: status codes after which a stream reconnects and resumes (resuming is always safe;
#: grpc's asyncio client reports a write on a cut connection as INTERNAL)
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL}
)
#: status codes after which a unary call is sent again
RETRYABLE_UNARY = frozenset({grpc.StatusCode.UNAVAILABLE})

#: the longest wait between two attempts of one call
_MAX_RETRY_DELAY_S = 5.0


class Retries:
    """Which failures of one call are retried, how often, and after what delay
    (:class:`~alscout.storage.backoff.Backoff`: exponential with full jitter)."""

    def __init__(
        self, retries: int, base_s: float, codes: frozenset[grpc.StatusCode] = RETRYABLE
    ) -> None:
        self.retries = retries
        self.backoff = Backoff(base_s, _MAX_RETRY_DELAY_S)
        self.codes = codes
        self.failures = 0

    def next_delay(self, error: grpc.RpcError, busy: bool = False) -> float:
        """Seconds to wait before the next attempt; raises ``error`` when out of retries.

        ``busy``: ALREADY_EXISTS is retried too (a fresh call that found the stream
        still held by the call it replaces, which the server has not yet seen end).
        """
        code = status_code(error)
        self.failures += 1
        retryable = code in self.codes or (busy and code == grpc.StatusCode.ALREADY_EXISTS)
        if not retryable or self.failures > self.retries:
            raise error
        delay = self.backoff.delay(self.failures - 1)
        log.warning(
            "stream call failed code=%s attempt=%d retry_in_s=%.2f details=%s",
            getattr(code, "name", code),
            self.failures,
            delay,
            error.details() if hasattr(error, "details") else "",
        )
        return delay


def status_code(error: BaseException) -> grpc.StatusCode | None:
    code = getattr(error, "code", None)
    return code() if callable(code) else None


def refused_busy(error: grpc.RpcError, resume: bool, answered: bool) -> bool:
    """True when a fresh attempt was refused ALREADY_EXISTS before any result: it is
    retried as a fresh call (a resume would take over a stream that may be another's)."""
    return not resume and not answered and status_code(error) == grpc.StatusCode.ALREADY_EXISTS
