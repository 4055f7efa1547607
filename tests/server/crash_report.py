"""What a real-server crash run is made of and what it reports (crash_rounds.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from crash_sink import Verdict, summary_counts

from alscout.errors import ConfigError

__all__ = ["KINDS", "Round", "CrashConfig", "CrashReport"]

KINDS = ("server_mid_stream", "server_after_ack", "server_mid_put", "uploader_mid_upload", "both")


@dataclass(frozen=True)
class Round:
    """One round, drawn when it starts: the kill's kind, results (or FLAGGED answers)
    before it, a pause in seconds, results the uploader stays down after it, and
    whether the client then streams its recording anew."""

    kind: str
    after: int
    pause_s: float
    uploader_delay: int
    restart: bool


@dataclass(frozen=True)
class CrashConfig:
    """``rounds``: kills; ``seed``: every random choice; ``frames``: per recording;
    ``restart_p``: chance a server kill makes the client stream the recording anew."""

    rounds: int = 50
    seed: int = 0
    frames: int = 150
    restart_p: float = 0.3

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.frames < 10 or not 0 <= self.restart_p <= 1:
            raise ConfigError(f"bad crash config {self}")


@dataclass
class CrashReport:
    """What a run did (kills by kind, evidence of where they landed) and its verdict."""

    config: CrashConfig
    verdict: Verdict
    wall_s: float = 0.0
    results: int = 0
    recordings: int = 0
    stream_restarts: int = 0
    kills: Counter = field(default_factory=Counter)
    server_start_s: list[float] = field(default_factory=list)
    #: seconds from each server kill to the client's next result (restart + reconnect)
    back_s: list[float] = field(default_factory=list)
    #: server kills that left a put half done (a file in tmp/ or one the index does not name)
    outbox_torn: int = 0
    #: uploader kills that left a half-written object in the sink (killed inside a put)
    sink_torn: int = 0
    #: frames answered PENDING whose final decision never came (a killed server's
    #: selector state is lost; the resumed client does not send them again)
    undecided: int = 0
    #: fresh calls refused ALREADY_EXISTS (the call they replace not yet ended)
    busy: int = 0
    #: frames waiting in the outbox at each uploader kill
    backlog_at_kill: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        starts = self.server_start_s
        return {
            "rounds": self.config.rounds,
            "seed": self.config.seed,
            "ok": self.verdict.ok and self.verdict.orphans == 0,
            **summary_counts(self.verdict),
            "kills": dict(sorted(self.kills.items())),
            "uploader_kills_with_backlog": sum(b > 0 for b in self.backlog_at_kill),
            "outbox_torn_puts": self.outbox_torn,
            "sink_torn_objects": self.sink_torn,
            "undecided_frames": self.undecided,
            "stream_restarts": self.stream_restarts,
            "already_exists_retries": self.busy,
            "recordings": self.recordings,
            "results": self.results,
            "server_starts": len(starts),
            "server_start_mean_s": round(float(np.mean(starts)), 3),
            "server_start_max_s": round(float(np.max(starts)), 3),
            "kill_to_next_result_mean_s": round(float(np.mean(self.back_s or [0.0])), 3),
            "wall_s": round(self.wall_s, 1),
        }
