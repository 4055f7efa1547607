"""Hot reload from a model registry: poll ``latest()`` and reload when it changes.

The server starts :func:`watch_registry` as an asyncio task next to the gRPC
server. Every ``poll_s`` seconds it reads the registry (off the event loop); when
the newest version differs from the one seen last, it checks the file's SHA-256
against the manifest and awaits ``reload(path)``. A version whose check or reload
fails is logged and not retried until a newer one appears, so a bad publish cannot
make the server reload in a loop; the current model stays in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

from alscout.errors import AlscoutError, ConfigError
from alscout.runtime.model_registry import ModelRegistry, ModelVersion

__all__ = ["watch_registry"]

log = logging.getLogger(__name__)


async def watch_registry(
    registry: ModelRegistry,
    reload: Callable[[Path], Awaitable[None]],
    *,
    poll_s: float,
    stop: asyncio.Event,
    reload_initial: bool = False,
    on_change: Callable[[ModelVersion], None] | None = None,
) -> None:
    """Call ``reload(path)`` whenever the registry's latest version changes, until ``stop``.

    ``poll_s``: seconds between reads of the registry (> 0). ``reload_initial``: also
    reload the version that is latest when the watch starts (default: that one is
    taken as already served). ``on_change``: called with each version after its
    reload succeeded (metrics, tests).
    """
    if not (isinstance(poll_s, int | float) and math.isfinite(poll_s) and poll_s > 0):
        raise ConfigError(f"registry poll interval must be a number > 0 seconds, got {poll_s!r}")
    seen: str | None = None
    if not reload_initial:
        first = await _latest(registry)
        seen = first.version if first is not None else None
        log.info("watching model registry root=%s current=%s", registry.root, seen)
    while not stop.is_set():
        latest = await _latest(registry)
        if latest is not None and latest.version != seen:
            seen = latest.version  # tried once, whatever the outcome
            await _reload(latest, reload, on_change)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll_s)
    log.info("registry watch stopped root=%s last=%s", registry.root, seen)


async def _latest(registry: ModelRegistry) -> ModelVersion | None:
    try:
        return await asyncio.to_thread(registry.latest)
    except (OSError, AlscoutError) as error:
        log.warning("cannot read model registry root=%s error=%s", registry.root, error)
        return None


async def _reload(
    version: ModelVersion,
    reload: Callable[[Path], Awaitable[None]],
    on_change: Callable[[ModelVersion], None] | None,
) -> None:
    try:
        await asyncio.to_thread(version.verify)
        await reload(version.path)
    except asyncio.CancelledError:
        raise
    except Exception:  # a failed reload keeps the current model; the loop goes on
        log.exception(
            "reload from registry failed; keeping the current model version=%s path=%s",
            version.version,
            version.path,
        )
        return
    log.info("reloaded from registry version=%s path=%s", version.version, version.path)
    if on_change is not None:
        on_change(version)
