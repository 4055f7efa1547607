"""The driver of ``alscout score``: plan, skip what is done, score the rest, commit, merge.

:func:`score_recordings` is the whole run as a library call: it holds the output
folder's lock, refuses a folder scored with another model or other settings, checks the
sink can be written, hands the recordings not committed yet to an engine, commits each
result as it comes (:class:`~alscout.offline.outputs.OutputDir`), and finally rebuilds
``decisions.jsonl`` and ``scores.parquet`` from everything committed. A tqdm bar counts
recordings (frames and frames/s alongside).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError, SinkError
from alscout.offline.engine import Engine
from alscout.offline.outputs import OutputDir, pending_units, require_pyarrow
from alscout.offline.plan import RecordingUnit, check_collisions
from alscout.offline.scorer import RecordingResult
from alscout.offline.settings import ScoreSettings
from alscout.storage.sinks import open_sink

__all__ = ["ScoreReport", "score_recordings"]

log = logging.getLogger(__name__)


@dataclass
class ScoreReport:
    """What one run did: recordings scored now, skipped as done, failed (with why);
    frames and flags of the recordings scored now; seconds; the merged totals."""

    scored: list[RecordingResult] = field(default_factory=list)
    skipped: list[RecordingUnit] = field(default_factory=list)
    failed: list[tuple[RecordingUnit, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    recordings_total: int = 0
    frames_total: int = 0

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.scored)

    @property
    def flagged(self) -> int:
        return sum(r.flagged for r in self.scored)


def score_recordings(
    units: Sequence[RecordingUnit],
    settings: ScoreSettings,
    out_dir: str | Path,
    engine: Engine,
    *,
    progress: bool = False,
) -> ScoreReport:
    """Score ``units`` into ``out_dir`` with ``engine``; resumable (see the module)."""
    require_pyarrow()
    out = OutputDir(out_dir)
    report = ScoreReport()
    started = time.perf_counter()
    with out.lock():
        out.check_run(settings.identity())
        done = out.committed()
        check_collisions([*(u.claim for u in units), *(c.claim for c in done.values())])
        todo = pending_units(list(units), done)
        report.skipped = [u for u in units if u.unit_id in done]
        if todo:
            _check_sink(settings.sink_url)
            if engine.name == "local":  # its workers share this machine's disk
                settings = dataclasses.replace(settings, staging_dir=out.staging)
            bar = _progress(len(units), len(report.skipped), progress)

            def on_result(unit: RecordingUnit, result: RecordingResult) -> None:
                out.commit(result)
                report.scored.append(result)
                bar.update(1)
                frames = report.frames
                rate = frames / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(frames=frames, flagged=report.flagged, fps=f"{rate:.1f}")

            def on_failure(unit: RecordingUnit, message: str) -> None:
                log.warning("recording failed source=%s error=%s", unit.source, message)
                report.failed.append((unit, message))
                bar.update(1)

            with bar:
                engine.run(todo, settings, on_result, on_failure)
        report.recordings_total, report.frames_total = out.merge()
    report.elapsed_s = time.perf_counter() - started
    return report


def _check_sink(url: str) -> None:
    """Fail before scoring when the sink cannot be reached (a missing bucket, refused
    credentials): its uploader would otherwise wait for it, retrying, forever."""
    sink = open_sink(url)
    try:
        sink.has("frames/.alscout-score-probe.json", "0" * 64)
    except (SinkError, OSError) as error:
        raise ConfigError(f"sink {url}: cannot be read: {error}") from error


def _progress(total: int, done: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, initial=done, desc="score", unit="rec", disable=not enabled, file=sys.stderr
    )
