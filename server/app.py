"""Assemble and run the service: ``create_server(config) -> (server, port)`` and ``serve()``.

The server hosts ``alscout.v1.Scorer``, the standard ``grpc.health.v1`` health service
and (optionally) reflection. Shutdown is graceful: health flips to NOT_SERVING, calls
in flight get ``grace_s`` seconds to drain, then the server stops and the model is
closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from alscout.errors import ConfigError
from alscout.server._proto import alscout_pb2, alscout_pb2_grpc
from alscout.server.config import ServerConfig
from alscout.server.outbox import DirectoryOutbox, MemoryOutbox, Outbox
from alscout.server.service import ModelHolder, ScorerService

__all__ = ["ScoringServer", "create_server", "serve", "SERVICE_NAME"]

log = logging.getLogger(__name__)

SERVICE_NAME = alscout_pb2.DESCRIPTOR.services_by_name["Scorer"].full_name


class ScoringServer:
    """A bound, not yet started gRPC server with its service, health and thread pool."""

    def __init__(
        self,
        server: grpc.aio.Server,
        service: ScorerService,
        health_servicer: health.aio.HealthServicer,
        executor: ThreadPoolExecutor,
        config: ServerConfig,
    ) -> None:
        self.server = server
        self.service = service
        self.health = health_servicer
        self.executor = executor
        self.config = config
        self._stopped = False

    async def start(self) -> None:
        """Start serving and report SERVING for the whole server and the Scorer service."""
        await self.server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set("", serving)
        await self.health.set(SERVICE_NAME, serving)
        log.info("server started address=%s", self.config.address)

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, let calls drain for ``grace_s`` (default: config), stop, close."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        log.info("server draining grace_s=%s", grace)
        await self.server.stop(grace)
        self.executor.shutdown(wait=True)
        self.service.models.close()
        log.info("server stopped")

    async def wait_for_termination(self) -> None:
        """Return when the server has stopped."""
        await self.server.wait_for_termination()


def create_server(config: ServerConfig, outbox: Outbox | None = None) -> tuple[ScoringServer, int]:
    """Load the model and bind the port; returns the server (not started) and its port.

    Call inside a running event loop. ``outbox`` defaults to a
    :class:`DirectoryOutbox` at ``config.outbox_dir``, or memory when that is None.
    Raises :class:`ConfigError` when the address cannot be bound, and the model
    loading errors of :func:`~alscout.runtime.backends.registry.open_backend`.
    """
    if outbox is None:
        outbox = MemoryOutbox() if config.outbox_dir is None else DirectoryOutbox(config.outbox_dir)
    models = ModelHolder(config.model_path, config.backend, config.threads, config.pipeline)
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="alscout-score")
    service = ScorerService(models, config.selector, outbox, executor, config.max_pixels)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    server = grpc.aio.server(options=options)
    alscout_pb2_grpc.add_ScorerServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        names = (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
    try:
        port = server.add_insecure_port(config.address)
    except RuntimeError as error:
        models.close()
        executor.shutdown(wait=False)
        raise ConfigError(f"cannot listen on {config.address}: {error}") from error
    return ScoringServer(server, service, health_servicer, executor, config), port


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    scoring, port = create_server(config)
    await scoring.start()
    log.info("listening host=%s port=%d model=%s", config.host, port, config.model_path)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await scoring.stop()
