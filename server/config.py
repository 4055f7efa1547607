"""Configuration of ``alscout serve``: one frozen dataclass, TOML < environment < flags.

A TOML file holds the server's keys at the top level and the scoring and selection
settings in ``[pipeline]`` and ``[selector]`` tables. Environment variables
``ALSCOUT_SERVER_<KEY>``, ``ALSCOUT_PIPELINE_<KEY>`` and ``ALSCOUT_SELECTOR_<KEY>``
override the file; command-line flags (passed as ``overrides``) override both.
Environment values are read as TOML literals (``0.5``, ``true``, ``[96, 128]``), else
as plain strings; ``none`` sets an optional value to None.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alscout.errors import AlscoutError, ConfigError
from alscout.runtime.backends.registry import BACKEND_NAMES
from alscout.runtime.decode import MAX_PIXELS
from alscout.runtime.pipeline import PipelineConfig
from alscout.runtime.temporal import SelectorConfig

__all__ = [
    "ServerConfig",
    "MetadataLimits",
    "load_config",
    "ENV_PREFIXES",
    "MESSAGE_HEADROOM_BYTES",
]

#: bytes a request holds besides its pixels (ids, metadata, timestamps, protobuf framing)
MESSAGE_HEADROOM_BYTES = 1 << 20

#: fields that hold a path or None
_PATHS = (
    "outbox_dir",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "auth_token_file",
    "model_registry",
)

#: section -> environment variable prefix
ENV_PREFIXES = {
    "server": "ALSCOUT_SERVER_",
    "pipeline": "ALSCOUT_PIPELINE_",
    "selector": "ALSCOUT_SELECTOR_",
}


@dataclass(frozen=True)
class MetadataLimits:
    """Bounds on one frame's metadata, in UTF-8 bytes: at most ``keys`` entries, each key
    at most ``key_bytes``, each value at most ``value_bytes``, keys and values together at
    most ``total_bytes``. :class:`ServerConfig`'s ``max_metadata_*`` fields set them."""

    keys: int = 64
    key_bytes: int = 128
    value_bytes: int = 4096
    total_bytes: int = 16384


_METADATA = MetadataLimits()


@dataclass(frozen=True)
class ServerConfig:
    """Everything the scoring service needs; validated on construction.

    ``model_path``: ONNX file (or TensorRT engine) to score with. ``host``/``port``:
    where to listen (port 0 picks a free port). ``backend``: a name of
    :data:`~alscout.runtime.backends.registry.BACKEND_NAMES`. ``threads``: inference
    threads (0: the backend's default). ``workers``: threads that score frames and store
    flagged ones off the event loop. ``max_message_bytes``: largest request accepted
    (None: fitted to the largest frame the limits allow, a raw RGB frame of
    ``max_pixels``, plus :data:`MESSAGE_HEADROOM_BYTES`). ``max_pixels``: largest decoded
    frame (width x height). ``outbox_dir``: folder for flagged frames, a durable outbox
    of at most ``outbox_quota_bytes`` (None: its default; ``outbox_dir`` None keeps them
    in memory, for tests). ``grace_s``: seconds in-flight calls get to finish at
    shutdown. ``reflection``: serve gRPC reflection.

    Decoding (server/admission.py): frames decode in ``decode_workers`` threads of their
    own; frames over ``large_frame_pixels`` also need one of ``large_decode_slots``
    (fewer than the workers). A frame's pixels, read from its header, are charged against
    ``call_pixel_budget`` (its call's frames in flight) and ``server_pixel_budget`` (every
    call's) until it is scored; no room within ``queue_wait_ms``: RESOURCE_EXHAUSTED.

    Batching and flow control (docs/api.md, "Execution"): ``max_batch`` frames per
    inference batch across streams (None: the backend's batch policy,
    ``server/batch_policy.py``: 1 on CPU, 8 on GPU), formed within
    ``max_delay_ms`` of its first frame; ``max_queue`` frames may wait for a batch;
    ``max_inflight`` frames of one call may be received and not yet answered, and a
    call that stays at that limit for ``queue_wait_ms`` ends with RESOURCE_EXHAUSTED.
    Streams: ``idle_timeout_s`` without a frame ends a call; a cut call's streams are
    kept ``resume_window_s`` for resuming (0: closed at once) with their last
    ``resume_log`` decisions; ``context_frames`` before and after a flagged frame are
    stored with it. ``metrics_port``: Prometheus ``/metrics`` on ``metrics_host`` (None:
    off, 0: any free port; plain HTTP, so ``metrics_host`` is loopback unless set, whatever
    ``host`` is). Security: ``tls_cert_file`` + ``tls_key_file`` serve TLS,
    ``tls_client_ca_file`` requires client certificates (mutual TLS); ``auth_token_file``
    holds a bearer token every call must carry. ``model_registry``: a
    :class:`~alscout.runtime.model_registry.ModelRegistry` folder whose latest version is
    loaded when it changes, polled every ``registry_poll_s`` seconds. A frame's metadata
    holds at most ``max_metadata_keys`` entries, keys of at most ``max_metadata_key_bytes``,
    values of at most ``max_metadata_value_bytes`` and ``max_metadata_bytes`` in all
    (UTF-8); a frame over a limit ends its call with INVALID_ARGUMENT.
    """

    model_path: Path
    host: str = "127.0.0.1"
    port: int = 50051
    backend: str = "auto"
    threads: int = 0
    workers: int = 2
    max_message_bytes: int | None = None
    max_pixels: int = MAX_PIXELS
    decode_workers: int = 2
    large_frame_pixels: int = 3840 * 2160
    large_decode_slots: int = 1
    call_pixel_budget: int = 80_000_000
    server_pixel_budget: int = 160_000_000
    outbox_dir: Path | None = None
    outbox_quota_bytes: int | None = None
    grace_s: float = 10.0
    reflection: bool = True
    max_batch: int | None = None
    max_delay_ms: float = 5.0
    max_queue: int = 64
    max_inflight: int = 32
    queue_wait_ms: float = 2000.0
    idle_timeout_s: float = 60.0
    resume_window_s: float = 30.0
    resume_log: int = 4096
    context_frames: int = 0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    auth_token_file: Path | None = None
    model_registry: Path | None = None
    registry_poll_s: float = 10.0
    max_metadata_keys: int = _METADATA.keys
    max_metadata_key_bytes: int = _METADATA.key_bytes
    max_metadata_value_bytes: int = _METADATA.value_bytes
    max_metadata_bytes: int = _METADATA.total_bytes
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.model_path, str | Path) or str(self.model_path) == "":
            raise ConfigError("model_path is required: the ONNX model to score with")
        object.__setattr__(self, "model_path", Path(self.model_path))
        for name in _PATHS:
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str | Path) or str(value) == "":
                    raise ConfigError(f"{name} must be a path, got {value!r}")
                object.__setattr__(self, name, Path(value))
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be a non-empty string, got {self.host!r}")
        if not isinstance(self.metrics_host, str) or not self.metrics_host:
            raise ConfigError(f"metrics_host must be a non-empty string, got {self.metrics_host!r}")
        _check_int("port", self.port, 0, 65535)
        _check_int("threads", self.threads, 0, 1024)
        _check_int("workers", self.workers, 1, 1024)
        _check_int("max_pixels", self.max_pixels, 1, MAX_PIXELS)
        _check_int("decode_workers", self.decode_workers, 2, 1024)
        _check_int("large_frame_pixels", self.large_frame_pixels, 1, MAX_PIXELS)
        _check_int("large_decode_slots", self.large_decode_slots, 1, 1024)
        if self.large_decode_slots >= self.decode_workers:
            raise ConfigError(
                f"large_decode_slots ({self.large_decode_slots}) must be below decode_workers "
                f"({self.decode_workers}), so small frames always find a free decode worker"
            )
        _check_int("call_pixel_budget", self.call_pixel_budget, 1, 2**40)
        _check_int("server_pixel_budget", self.server_pixel_budget, 1, 2**40)
        if self.max_message_bytes is None:  # a raw rgb8 frame of max_pixels fits
            fitted = self.max_pixels * 3 + MESSAGE_HEADROOM_BYTES
            object.__setattr__(self, "max_message_bytes", fitted)
        _check_int("max_message_bytes", self.max_message_bytes, 1024, 2**31 - 1)
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(f"backend must be one of {BACKEND_NAMES}, got {self.backend!r}")
        if isinstance(self.grace_s, bool) or not isinstance(self.grace_s, int | float):
            raise ConfigError(f"grace_s must be a number of seconds, got {self.grace_s!r}")
        if not 0 <= self.grace_s <= 3600:
            raise ConfigError(f"grace_s must be in [0, 3600], got {self.grace_s}")
        if self.max_batch is not None:
            _check_int("max_batch", self.max_batch, 1, 4096)
        _check_int("max_queue", self.max_queue, 1, 1_000_000)
        _check_int("max_inflight", self.max_inflight, 1, 100_000)
        _check_int("resume_log", self.resume_log, 1, 10_000_000)
        _check_int("context_frames", self.context_frames, 0, 1000)
        _check_int("max_metadata_keys", self.max_metadata_keys, 1, 1_000_000)
        _check_int("max_metadata_key_bytes", self.max_metadata_key_bytes, 1, 2**31 - 1)
        _check_int("max_metadata_value_bytes", self.max_metadata_value_bytes, 1, 2**31 - 1)
        _check_int("max_metadata_bytes", self.max_metadata_bytes, 1, 2**31 - 1)
        if self.outbox_quota_bytes is not None:
            _check_int("outbox_quota_bytes", self.outbox_quota_bytes, 1, 2**62)
        if self.metrics_port is not None:
            _check_int("metrics_port", self.metrics_port, 0, 65535)
        _check_seconds("max_delay_ms", self.max_delay_ms, 0, 60_000)
        _check_seconds("queue_wait_ms", self.queue_wait_ms, 0, 3_600_000)
        _check_seconds("idle_timeout_s", self.idle_timeout_s, 0.01, 86_400)
        _check_seconds("resume_window_s", self.resume_window_s, 0, 86_400)
        _check_seconds("registry_poll_s", self.registry_poll_s, 0.01, 86_400)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file and tls_key_file go together: set both for TLS")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError(
                "tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file"
            )
        if not isinstance(self.reflection, bool):
            raise ConfigError(f"reflection must be true or false, got {self.reflection!r}")
        if not isinstance(self.pipeline, PipelineConfig):
            raise ConfigError("pipeline must be a PipelineConfig")
        if not isinstance(self.selector, SelectorConfig):
            raise ConfigError("selector must be a SelectorConfig")
        if self.max_queue < (self.max_batch or self.pipeline.batch_size):
            raise ConfigError(
                f"max_queue ({self.max_queue}) must be >= max_batch "
                f"({self.max_batch or self.pipeline.batch_size})"
            )

    @property
    def address(self) -> str:
        """``host:port`` to bind."""
        return f"{self.host}:{self.port}"

    @property
    def metadata_limits(self) -> MetadataLimits:
        """The ``max_metadata_*`` fields as one value, for the request checks."""
        return MetadataLimits(
            self.max_metadata_keys,
            self.max_metadata_key_bytes,
            self.max_metadata_value_bytes,
            self.max_metadata_bytes,
        )


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Build a :class:`ServerConfig` from a TOML file, then ``env``, then ``overrides``.

    ``overrides`` keys are server field names or ``"pipeline.<key>"`` /
    ``"selector.<key>"``; values of None are ignored (a flag not given). Without a
    ``model_path`` but with a ``model_registry``, the registry's newest version is the
    model (the registry watch takes it as already served). Raises :class:`ConfigError`
    naming the file, variable or key that is wrong, or the option that is missing.
    """
    sections: dict[str, dict[str, Any]] = {"server": {}, "pipeline": {}, "selector": {}}
    if path is not None:
        _merge_file(sections, Path(path))
    for name, value in (env or {}).items():
        for section, prefix in ENV_PREFIXES.items():
            if name.startswith(prefix):
                key = name.removeprefix(prefix).lower()
                _check_key(section, key, f"environment variable {name}")
                sections[section][key] = _parse_env(value)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        section = section or "server"
        if section not in sections:
            raise ConfigError(f"unknown setting {key!r}")
        _check_key(section, name, "setting")
        sections[section][name] = value
    _default_model(sections["server"])
    try:
        pipeline = PipelineConfig(**_tuples(sections["pipeline"]))
        selector = SelectorConfig(**sections["selector"])
        return ServerConfig(**sections["server"], pipeline=pipeline, selector=selector)
    except AlscoutError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad configuration value: {error}") from error


def _default_model(server: dict[str, Any]) -> None:
    """Set ``model_path`` to the registry's newest version when only a registry is given."""
    if server.get("model_path") not in (None, ""):
        return
    registry = server.get("model_registry")
    if registry in (None, ""):
        raise ConfigError(
            "no model to score with: pass --model PATH (model_path in the config file, "
            "ALSCOUT_SERVER_MODEL_PATH), or --model-registry DIR to serve its newest version"
        )
    from alscout.runtime.model_registry import ModelRegistry

    latest = ModelRegistry(registry).latest()
    if latest is None:
        raise ConfigError(
            f"--model-registry {registry} holds no model version yet: publish one "
            "(alscout fleet publish) or pass --model PATH"
        )
    latest.verify()
    server["model_path"] = latest.path


def _merge_file(sections: dict[str, dict[str, Any]], path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    for key, value in data.items():
        if key in ("pipeline", "selector"):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            for sub_key, sub_value in value.items():
                _check_key(key, sub_key, f"{path}: key")
                sections[key][sub_key] = sub_value
        else:
            _check_key("server", key, f"{path}: key")
            sections["server"][key] = value


def _check_key(section: str, key: str, where: str) -> None:
    cls = {"server": ServerConfig, "pipeline": PipelineConfig, "selector": SelectorConfig}[section]
    names = {f.name for f in dataclasses.fields(cls)} - {"pipeline", "selector"}
    if key not in names:
        raise ConfigError(f"{where} {key!r} is not a {section} setting; known: {sorted(names)}")


def _parse_env(value: str) -> Any:
    if value.strip().lower() == "none":
        return None
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _check_seconds(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
