"""What every score worker is given: model, pipeline, selector, sink and earlier uploads.

One frozen value, built once by the driver from the server's own configuration
(:func:`from_server_config`: the same TOML file, ``ALSCOUT_*`` variables and flags as
``alscout serve``), pickled to each worker process or Ray actor.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError
from alscout.offline.earlier import EarlierUploads
from alscout.runtime.decode import MAX_PIXELS
from alscout.runtime.model_info import file_sha256
from alscout.runtime.pipeline import PipelineConfig
from alscout.runtime.temporal import SelectorConfig
from alscout.server.config import MetadataLimits, ServerConfig

__all__ = ["ScoreSettings", "from_server_config"]


@dataclass(frozen=True)
class ScoreSettings:
    """Settings of one ``alscout score`` run; validated on construction.

    ``model_path``: the ONNX model (or TensorRT engine) every worker loads as the server
    would (:class:`~alscout.server.models.ModelHolder`). ``sink_url``: where flagged
    frames go, in the uploader's layout (a folder or ``s3://bucket/prefix``).
    ``backend``/``threads``: as the server's (``threads`` 0: the engine picks, so that
    workers share the machine's cores). ``pipeline``/``selector``/``context_frames``/
    ``max_pixels``/``metadata_limits``: the server's. ``earlier``: frames uploaded
    before, for the dt2 rule. ``staging_dir``: where workers stage a recording's flagged
    frames (None: the system's temporary folder); the driver sets it under the output
    folder for workers on its own machine, so a killed worker's leftovers are removed
    by the next run.
    """

    model_path: Path
    sink_url: str
    backend: str = "auto"
    threads: int = 0
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    context_frames: int = 0
    max_pixels: int = MAX_PIXELS
    metadata_limits: MetadataLimits = field(default_factory=MetadataLimits)
    earlier: EarlierUploads = field(default_factory=EarlierUploads)
    staging_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_path", Path(self.model_path))
        if not self.sink_url:
            raise ConfigError("sink_url must name a folder or s3://bucket/prefix")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"threads must be an integer >= 0, got {self.threads!r}")
        if self.context_frames < 0:
            raise ConfigError(f"context_frames must be >= 0, got {self.context_frames}")

    def with_threads(self, threads: int) -> ScoreSettings:
        """The same settings with ``threads`` inference threads per worker."""
        return dataclasses.replace(self, threads=threads)

    def identity(self) -> dict[str, Any]:
        """What makes two runs' outputs comparable: model bytes and every setting that
        changes a decision or a stored frame (not threads, workers or engine)."""
        return {
            "model_sha256": file_sha256(self.model_path),
            "pipeline": _plain(dataclasses.asdict(self.pipeline)),
            "selector": _plain(dataclasses.asdict(self.selector)),
            "context_frames": self.context_frames,
            "max_pixels": self.max_pixels,
            "sink": self.sink_url,
        }


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """JSON round trip (tuples become lists), so a stored record compares equal."""
    return dict(json.loads(json.dumps(values)))


def from_server_config(
    config: ServerConfig, sink_url: str, earlier: EarlierUploads | None = None
) -> ScoreSettings:
    """The settings a server with ``config`` scores and selects with."""
    return ScoreSettings(
        model_path=config.model_path,
        sink_url=sink_url,
        backend=config.backend,
        threads=config.threads,
        pipeline=config.pipeline,
        selector=config.selector,
        context_frames=config.context_frames,
        max_pixels=config.max_pixels,
        metadata_limits=config.metadata_limits,
        earlier=earlier or EarlierUploads(),
    )
