"""One score worker: a model loaded once, recordings scored one at a time.

Each frame takes the server's path (:mod:`alscout.server.service`) without the network:
the client's frame message (:meth:`SourceFrame.to_stream_frame`), the server's decode
(:func:`alscout.server.messages.decode`), the scoring pipeline, and the server's
per-stream state (:class:`alscout.server.streams.StreamState`: the online selector,
the dt2 rule, context frames, the flagged frames it builds). Each final decision
becomes the line ``alscout stream`` writes (:func:`alscout.server.cli_stream.decision_record`).

Flagged frames are staged in a private :class:`~alscout.server.durable_outbox.DurableOutbox`
while the recording is scored and handed to the sink by the vehicle's own
:class:`~alscout.server.uploader.Uploader` once it is whole, so the sink holds them in
the uploader's layout by construction, and a recording whose scoring failed puts
nothing there. A crash while uploading leaves some of its frames in the sink; the
recording is scored again by the next run and the same keys are written with the same
bytes, so nothing is duplicated.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from alscout.errors import DataError
from alscout.offline.plan import RecordingUnit
from alscout.offline.settings import ScoreSettings
from alscout.runtime.temporal import Decision
from alscout.server._proto import alscout_pb2 as pb
from alscout.server.cli_stream import decision_record
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.messages import decode, final_message, payload
from alscout.server.models import ModelHolder
from alscout.server.outbox import FlaggedFrame
from alscout.server.sources import SourceFrame, open_source
from alscout.server.streams import SelectorChoices, StreamState
from alscout.server.uploader import Uploader, UploaderConfig
from alscout.storage.sinks import open_sink

__all__ = ["RecordingResult", "RecordingScorer", "STAGING_QUOTA_BYTES"]

log = logging.getLogger(__name__)

#: the staging outbox never evicts: every flagged frame of a recording reaches the sink
STAGING_QUOTA_BYTES = 1 << 62


@dataclass(frozen=True)
class RecordingResult:
    """What a worker hands back for one recording.

    ``records``: one decision line per frame, in frame order (the JSON objects
    ``alscout stream --out`` writes). ``uploaded``: flagged frames the sink confirmed.
    ``elapsed_s``: seconds the worker spent on it, from opening the source to the last
    upload. ``worker``: ``host:pid`` of the worker.
    """

    unit: RecordingUnit
    recording_id: str
    camera_id: str
    records: tuple[dict[str, Any], ...]
    flagged: int
    uploaded: int
    elapsed_s: float
    worker: str

    @property
    def frames(self) -> int:
        return len(self.records)


class RecordingScorer:
    """Loads the model as the server does; :meth:`score` scores one recording."""

    def __init__(self, settings: ScoreSettings) -> None:
        self.settings = settings
        self.models = ModelHolder(
            settings.model_path, settings.backend, settings.threads, settings.pipeline
        )
        self.selectors = SelectorChoices(settings.selector)  # the server's threshold choice
        self.sink = open_sink(settings.sink_url)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def close(self) -> None:
        """Release the model."""
        self.models.close()

    def score(self, unit: RecordingUnit) -> RecordingResult:
        """Score, select and upload one recording; :class:`DataError` names a bad source."""
        started = time.perf_counter()
        settings = self.settings
        source = open_source(
            unit.source,
            topic=unit.topic,
            max_frames=unit.max_frames,
            frame_encoding=unit.frame_encoding,
        )
        staging_root = settings.staging_dir
        if staging_root is not None:
            staging_root.mkdir(parents=True, exist_ok=True)
        with (
            source,
            tempfile.TemporaryDirectory(prefix="alscout-stage-", dir=staging_root) as staging_dir,
        ):
            camera_id = unit.resolve_camera(getattr(source, "topic", None))
            state = StreamState(
                unit.recording_id,
                camera_id,
                self.selectors.for_pipeline(self.models.pipeline),
                earlier=settings.earlier.of_stream(unit.recording_id, camera_id),
                context_frames=settings.context_frames,
                log_size=1,
            )
            with DurableOutbox(staging_dir, STAGING_QUOTA_BYTES) as staging:
                records = self._select(state, itertools.islice(source, unit.max_frames), staging)
                config = UploaderConfig(poll_s=0.0, backoff_cap_s=10.0)
                uploaded = Uploader(staging, self.sink, config).drain()
        flagged = sum(r["decision"] == "flagged" for r in records)
        if uploaded != flagged:
            raise DataError(
                f"{unit.source}: {flagged} frames flagged but {uploaded} reached the sink "
                f"{self.settings.sink_url}"
            )
        elapsed = time.perf_counter() - started
        log.info(
            "recording scored source=%s stream=%s/%s frames=%d flagged=%d seconds=%.2f",
            unit.source,
            unit.recording_id,
            camera_id,
            len(records),
            flagged,
            elapsed,
        )
        return RecordingResult(
            unit, unit.recording_id, camera_id, tuple(records), flagged, uploaded, elapsed,
            self.worker,
        )  # fmt: skip

    def _select(
        self, state: StreamState, frames: Iterator[SourceFrame], staging: DurableOutbox
    ) -> list[dict[str, Any]]:
        """Score the frames in batches, push them through the stream state, stage flags."""
        settings = self.settings
        scored_by: dict[int, tuple[str, str]] = {}
        records: list[dict[str, Any]] = []

        def release(decisions: list[Decision], flagged: list[FlaggedFrame]) -> None:
            for frame in flagged:
                staging.put(frame)
            for decision in decisions:
                version, model_hash = scored_by.pop(decision.frame)
                final = final_message(decision)
                records.append(
                    decision_record(state.recording_id, state.camera_id, final, version, model_hash)
                )

        batch_size = settings.pipeline.batch_size
        while batch := list(itertools.islice(frames, batch_size)):
            messages = [
                f.to_stream_frame().message(state.recording_id, state.camera_id, False)
                for f in batch
            ]
            decoded = [decode(m, settings.max_pixels, settings.metadata_limits) for m in messages]
            with self.models.use() as pipeline:
                scores = pipeline.score([image for image, *_ in decoded], heatmaps=True)
            for message, (image, fmt, raw, _), score in zip(messages, decoded, scores, strict=True):
                width, height = _size(image, fmt, raw)
                data = payload(message, score, fmt, raw, width, height)
                scored_by[message.frame_index] = (score.model_version, score.model_hash)
                release(*state.push(message.frame_index, score.z, data, score.gated))
        release(*state.finish())
        return records


def _size(image: Any, fmt: str, raw: pb.RawImage) -> tuple[int, int]:
    """(width, height) the server reports for a frame: a raw frame's own, else decoded."""
    if fmt == "raw":
        return int(raw.width), int(raw.height)
    return int(image.shape[1]), int(image.shape[0])
