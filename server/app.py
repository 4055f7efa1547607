"""Assemble and run the service: ``create_server(config) -> (server, port)`` and ``serve()``.

The server hosts ``alscout.v1.Scorer``, the standard ``grpc.health.v1`` health service
and (optionally) reflection, over plain TCP or TLS / mutual TLS, optionally behind a
bearer token; Prometheus metrics on their own HTTP port; and a watcher that hot-reloads
the latest model of a registry. Shutdown is graceful: health flips to NOT_SERVING,
calls in flight get ``grace_s`` seconds to drain (their frames are scored), the
streams left are closed (flagged frames stored), then the batcher, the decode and
scoring thread pools and the model are closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from alscout.errors import ConfigError
from alscout.runtime.decode import warm_up
from alscout.runtime.threads import apply_numba_threads, plan_threads
from alscout.server._proto import alscout_pb2, alscout_pb2_grpc
from alscout.server.config import ServerConfig
from alscout.server.durable_outbox import DEFAULT_QUOTA_BYTES, DurableOutbox
from alscout.server.metrics import ServerMetrics
from alscout.server.models import ModelHolder
from alscout.server.outbox import MemoryOutbox, Outbox
from alscout.server.security import (
    BearerTokenInterceptor,
    TLSConfig,
    load_token,
    server_credentials,
)
from alscout.server.service import ScorerService
from alscout.server.wire import UndecodableRequestInterceptor

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
        self.metrics = service.metrics
        #: port of the Prometheus endpoint once started (None: off)
        self.metrics_port: int | None = None
        #: the outbox create_server opened (closed at stop), or None
        self.owned_outbox: DurableOutbox | None = None
        self._stopped = False
        self._watch_stop = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving and report SERVING for the whole server and the Scorer service.

        The decoders' kernels are compiled first (:func:`~alscout.runtime.decode.warm_up`),
        so the first JPEG frame does not wait seconds for Numba.
        """
        await asyncio.get_running_loop().run_in_executor(self.executor, warm_up)
        self.service.start()
        await self.server.start()
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(
                self.config.metrics_port, self.config.metrics_host
            )
        if self.config.model_registry is not None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_registry())
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set("", serving)
        await self.health.set(SERVICE_NAME, serving)
        log.info("server started address=%s", self.config.address)

    async def reload_path(self, path: Path) -> None:
        """Swap in the model at ``path`` (the registry watcher's reload)."""
        loop = asyncio.get_running_loop()
        _, new = await loop.run_in_executor(self.executor, self.service.models.reload_path, path)
        self.metrics.reloads.inc()
        self.metrics.set_scoring_path(new.scoring_path)

    async def _watch_registry(self) -> None:
        from alscout.runtime.model_registry import ModelRegistry
        from alscout.server.registry_watch import watch_registry

        assert self.config.model_registry is not None
        registry = ModelRegistry(self.config.model_registry)
        latest = await asyncio.to_thread(registry.latest)
        # the registry's newest model replaces the start-up file unless it is that file
        serving = self.service.models.pipeline.model_info.sha256
        initial = latest is not None and latest.sha256 != serving
        await watch_registry(
            registry,
            self.reload_path,
            poll_s=self.config.registry_poll_s,
            stop=self._watch_stop,
            reload_initial=initial,
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, let calls drain for ``grace_s`` (default: config), stop, close."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        log.info("server draining grace_s=%s", grace)
        self._watch_stop.set()
        if self._watch is not None:
            await self._watch
        await self.server.stop(grace)
        await self.service.stop()
        self.service.admission.close()
        self.executor.shutdown(wait=True)
        self.service.models.close()
        self.metrics.close()
        if self.owned_outbox is not None:
            self.owned_outbox.close()
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
    metrics = ServerMetrics()
    owned_outbox = None
    if outbox is None:
        if config.outbox_dir is None:
            outbox = MemoryOutbox()
        else:
            quota = config.outbox_quota_bytes or DEFAULT_QUOTA_BYTES
            outbox = owned_outbox = DurableOutbox(
                config.outbox_dir, quota, registry=metrics.registry
            )
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if config.auth_token_file is not None:
        interceptors.append(BearerTokenInterceptor(load_token(config.auth_token_file)))
    tls = None
    if config.tls_cert_file is not None and config.tls_key_file is not None:
        tls = TLSConfig(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
    # inference, Numba and worker threads sized together (runtime/threads.py)
    threads = plan_threads(inference=config.threads, workers=config.workers)
    log.info("thread plan %s", threads.describe())
    models = ModelHolder(config.model_path, config.backend, threads.intra_op, config.pipeline)
    executor = ThreadPoolExecutor(
        max_workers=threads.workers,
        thread_name_prefix="alscout-score",
        initializer=apply_numba_threads,
        initargs=(threads,),
    )
    service = ScorerService(models, outbox, executor, config, metrics)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    # after the token check: an unauthenticated call is refused whatever its bytes
    interceptors.append(UndecodableRequestInterceptor(metrics))
    server = grpc.aio.server(options=options, interceptors=interceptors)
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
        if tls is None:
            port = server.add_insecure_port(config.address)
        else:
            port = server.add_secure_port(config.address, server_credentials(tls))
    except RuntimeError as error:
        models.close()
        service.admission.close()
        executor.shutdown(wait=False)
        if owned_outbox is not None:
            owned_outbox.close()
        raise ConfigError(f"cannot listen on {config.address}: {error}") from error
    scoring = ScoringServer(server, service, health_servicer, executor, config)
    scoring.owned_outbox = owned_outbox
    return scoring, port


async def serve(
    config: ServerConfig, on_ready: Callable[[ScoringServer, int], None] | None = None
) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully.

    ``on_ready(server, port)`` is called once the server takes calls and the signal
    handlers are in place, with the gRPC port it is bound to (the CLI prints it).
    """
    scoring, port = create_server(config)
    await scoring.start()
    log.info("listening host=%s port=%d model=%s", config.host, port, config.model_path)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(scoring, port)
    try:
        await stop.wait()
    finally:
        await scoring.stop()
