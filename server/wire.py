"""Requests whose bytes do not parse are the client's fault, not the server's.

gRPC parses a request with the method's deserializer before the servicer sees it; a
message with bad UTF-8 in a string field or corrupt protobuf makes that raise, which
grpc reports as UNKNOWN (unary requests, with an ERROR traceback in the log) or hands
to the servicer as an unexpected exception (INTERNAL).
:class:`UndecodableRequestInterceptor` wraps every method's deserializer so that such a
request ends INVALID_ARGUMENT instead, with one WARNING line and
``alscout_errors_total{code="INVALID_ARGUMENT"}`` counted.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from alscout.errors import InvalidInputError
from alscout.server.metrics import ServerMetrics

__all__ = ["UndecodableRequestInterceptor"]

log = logging.getLogger(__name__)


class _Undecodable:
    """What the tolerant deserializer of a unary request returns for bytes that do not parse."""

    def __init__(self, error: InvalidInputError) -> None:
        self.error = error


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):
    """Ends calls whose request bytes do not parse with INVALID_ARGUMENT.

    Unary requests: the parse error is carried to the handler, which refuses the call
    before the servicer runs. Streamed requests: reading the bad message raises
    :class:`InvalidInputError` inside the servicer's request iterator, which the
    servicer maps like any bad frame (server/status.py) and counts itself.
    """

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        behavior = next(b for b in _behaviors(handler) if b is not None)
        if not _is_async(behavior):
            return handler  # a synchronous servicer: grpc runs it in its own thread pool
        method = handler_call_details.method
        parse = handler.request_deserializer
        serialize = handler.response_serializer
        if handler.request_streaming:

            def parse_or_raise(data: bytes) -> object:
                try:
                    return parse(data)
                except Exception as error:  # noqa: BLE001  # any parse failure is the client's
                    raise _refusal(method, error) from None

            if handler.response_streaming:
                return grpc.stream_stream_rpc_method_handler(behavior, parse_or_raise, serialize)
            return grpc.stream_unary_rpc_method_handler(behavior, parse_or_raise, serialize)

        def parse_or_mark(data: bytes) -> object:
            try:
                return parse(data)
            except Exception as error:  # noqa: BLE001  # any parse failure is the client's
                return _Undecodable(_refusal(method, error))

        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._guard(behavior), parse_or_mark, serialize
            )
        return grpc.unary_unary_rpc_method_handler(self._guard(behavior), parse_or_mark, serialize)

    def _guard(self, behavior: Any) -> Any:
        """``behavior``, refusing a request that did not parse before it runs."""
        if inspect.isasyncgenfunction(behavior):

            async def checked_stream(
                request: object, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[object]:
                if isinstance(request, _Undecodable):
                    await self._refuse(context, request.error)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response

            return checked_stream

        async def checked(request: object, context: grpc.aio.ServicerContext) -> object:
            if isinstance(request, _Undecodable):
                await self._refuse(context, request.error)
            return await behavior(request, context)

        return checked

    async def _refuse(self, context: grpc.aio.ServicerContext, error: InvalidInputError) -> None:
        self._metrics.errors.labels(code=grpc.StatusCode.INVALID_ARGUMENT.name).inc()
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))


def _behaviors(handler: grpc.RpcMethodHandler[Any, Any]) -> list[Any]:
    return [
        handler.unary_unary,
        handler.unary_stream,
        handler.stream_unary,
        handler.stream_stream,
    ]


def _is_async(behavior: object) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def _refusal(method: str, error: Exception) -> InvalidInputError:
    """The error of a request that does not parse, logged once as a warning."""
    log.warning("request refused: it does not parse method=%s error=%s", method, error)
    return InvalidInputError(
        f"the request message could not be parsed as the request type of {method}: "
        f"{error}; send a message generated from protos/alscout/v1/alscout.proto"
    )
