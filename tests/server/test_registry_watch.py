from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alscout.errors import ConfigError
from alscout.runtime.model_registry import ModelRegistry
from alscout.server.registry_watch import watch_registry

POLL = 0.01


def publish(registry: ModelRegistry, tmp_path: Path, content: bytes) -> str:
    source = tmp_path / "staged.onnx"
    source.write_bytes(content)
    return registry.publish(source, metrics={}).version


async def wait_for(condition, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(POLL)


def test_reloads_each_new_version_once(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    publish(registry, tmp_path, b"served at start")
    reloaded: list[bytes] = []

    async def reload(path: Path) -> None:
        reloaded.append(path.read_bytes())

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_registry(registry, reload, poll_s=POLL, stop=stop))
        await asyncio.sleep(5 * POLL)
        assert reloaded == []  # the version present at start counts as served
        publish(registry, tmp_path, b"second")
        await wait_for(lambda: len(reloaded) == 1)
        await asyncio.sleep(5 * POLL)
        publish(registry, tmp_path, b"third")
        await wait_for(lambda: len(reloaded) == 2)
        await asyncio.sleep(5 * POLL)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert reloaded == [b"second", b"third"]


def test_reload_initial_and_empty_registry(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    reloaded: list[str] = []

    async def reload(path: Path) -> None:
        reloaded.append(path.parent.name)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            watch_registry(registry, reload, poll_s=POLL, stop=stop, reload_initial=True)
        )
        await asyncio.sleep(5 * POLL)  # nothing published yet: nothing to do
        assert reloaded == []
        publish(registry, tmp_path, b"first")
        await wait_for(lambda: reloaded == ["v000001"])
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())


def test_failed_reload_keeps_watching_and_is_not_retried(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    calls: list[str] = []
    changes: list[str] = []

    async def reload(path: Path) -> None:
        calls.append(path.parent.name)
        if path.read_bytes() == b"bad":
            raise RuntimeError("model does not load")

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            watch_registry(
                registry,
                reload,
                poll_s=POLL,
                stop=stop,
                on_change=lambda v: changes.append(v.version),
            )
        )
        await asyncio.sleep(2 * POLL)
        publish(registry, tmp_path, b"bad")
        await wait_for(lambda: calls == ["v000001"])
        await asyncio.sleep(10 * POLL)
        assert calls == ["v000001"]  # not retried on every poll
        publish(registry, tmp_path, b"good")
        await wait_for(lambda: changes == ["v000002"])
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert calls == ["v000001", "v000002"]


def test_tampered_file_is_not_loaded(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    calls: list[Path] = []

    async def reload(path: Path) -> None:
        calls.append(path)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_registry(registry, reload, poll_s=POLL, stop=stop))
        await asyncio.sleep(2 * POLL)
        # publish, then change the file before the watcher sees it
        source = tmp_path / "m.onnx"
        source.write_bytes(b"published")
        version = registry.publish(source, metrics={})
        version.path.write_bytes(b"changed afterwards")
        await asyncio.sleep(20 * POLL)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert calls == []


@pytest.mark.parametrize("poll", [0, -1, float("nan"), "1"])
def test_bad_poll_interval(tmp_path, poll):
    async def reload(path: Path) -> None:
        raise AssertionError("never called")

    async def main() -> None:
        await watch_registry(ModelRegistry(tmp_path), reload, poll_s=poll, stop=asyncio.Event())

    with pytest.raises(ConfigError, match="poll interval"):
        asyncio.run(main())
