"""What a frame-fuzzing run is set up with, counts and reports (fuzz_frames.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from alscout.errors import ConfigError

__all__ = ["BAD_CODES", "CleanCheck", "FuzzConfig", "FuzzReport", "Tally"]

#: status codes a client must never get for anything it sends (the server's own faults)
BAD_CODES = ("INTERNAL", "UNKNOWN")


@dataclass(frozen=True)
class FuzzConfig:
    """``frames``: messages the fuzz streams send in all (split evenly over ``streams``);
    ``seed``: every mutation; ``clean_frames``: frames of the clean recording, streamed
    again and again beside the fuzzers at ``clean_fps`` (0: as fast as answered);
    ``answer_timeout_s``: longest wait for the answer
    to one message before it counts as a hang."""

    frames: int = 100_000
    streams: int = 4
    seed: int = 1
    clean_frames: int = 120
    clean_fps: float = 30.0
    answer_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.frames < self.streams or not 1 <= self.streams <= 64 or self.clean_frames < 10:
            raise ConfigError(f"bad fuzz config {self}: frames >= streams, streams in [1, 64]")


@dataclass
class Tally:
    """What the fuzz streams saw, client side."""

    frames_sent: int = 0
    calls: Counter = field(default_factory=Counter)  # rpc -> calls opened
    codes: Counter = field(default_factory=Counter)  # "rpc CODE" -> calls ended so
    #: (mutation of the last message, code) for every call that did not end OK
    triggers: Counter = field(default_factory=Counter)
    #: code -> "rpc kind: details" of the calls that ended so, first few distinct
    examples: dict[str, list[str]] = field(default_factory=dict)
    hangs: int = 0  # messages with no answer in answer_timeout_s
    #: fresh calls refused ALREADY_EXISTS and tried again (the previous call's stream
    #: not yet released by the server)
    busy_retries: int = 0
    mutations: Counter = field(default_factory=Counter)  # mutation group -> messages
    #: mutation -> seconds from sending its message to its answer (or the call's end)
    seconds: Counter = field(default_factory=Counter)

    def ended(self, rpc: str, code: str, kind: str, details: str) -> None:
        self.codes[f"{rpc} {code}"] += 1
        if code != "OK":
            self.triggers[(kind, code)] += 1
        if code != "OK":
            seen = self.examples.setdefault(code, [])
            example = f"{rpc} {kind}: {details[:200]}"
            if example not in seen and len(seen) < (20 if code in BAD_CODES else 3):
                seen.append(example)

    @property
    def bad_examples(self) -> list[str]:
        return [e for code in BAD_CODES for e in self.examples.get(code, [])]

    @property
    def bad(self) -> int:
        return sum(n for key, n in self.codes.items() if key.split()[1] in BAD_CODES)


@dataclass
class CleanCheck:
    """The clean stream: passes of one recording compared with a run before the fuzzing."""

    passes: int = 0
    frames: int = 0
    #: the reference run's decisions differ from flag_recording over its own z
    reference_offline_mismatch: int = 0
    mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    max_z_diff: float = 0.0

    @property
    def identical(self) -> bool:
        return (
            self.passes > 0
            and not self.mismatches
            and not self.errors
            and self.reference_offline_mismatch == 0
        )


@dataclass
class FuzzReport:
    """A run's figures; :meth:`summary` for JSON, :meth:`table` for people."""

    config: FuzzConfig
    tally: Tally = field(default_factory=Tally)
    clean: CleanCheck = field(default_factory=CleanCheck)
    wall_s: float = 0.0
    server_alive: bool = False
    server_exit: int | None = None  # after SIGTERM at the end; 0 is a clean stop
    rss_kb: dict[str, int] = field(default_factory=dict)  # start, end, peak
    server_errors: dict[str, float] = field(default_factory=dict)  # alscout_errors_total
    server_log_errors: list[str] = field(default_factory=list)  # ERROR lines, distinct

    @property
    def internal(self) -> int:
        """INTERNAL/UNKNOWN answers the fuzz clients got."""
        return self.tally.bad

    @property
    def ok(self) -> bool:
        return self.server_alive and self.internal == 0 and self.clean.identical

    def summary(self) -> dict[str, object]:
        t, c = self.tally, self.clean
        top: dict[str, list[str]] = {}
        for (kind, code), n in t.triggers.most_common():
            if len(top.setdefault(code, [])) < 8:
                top[code].append(f"{kind} x{n}")
        return {
            "ok": self.ok,
            "seed": self.config.seed,
            "streams": self.config.streams,
            "frames_sent": t.frames_sent,
            "calls": dict(sorted(t.calls.items())),
            "wall_s": round(self.wall_s, 1),
            "frames_per_s": round(t.frames_sent / self.wall_s, 1) if self.wall_s else None,
            "status_codes": dict(sorted(t.codes.items())),
            "internal_or_unknown": self.internal,
            "internal_examples": t.bad_examples,
            "examples": t.examples,
            "client_vs_server": self.client_vs_server(),
            "hangs": t.hangs,
            "busy_retries": t.busy_retries,
            "triggers": top,
            "mutations": dict(sorted(t.mutations.items())),
            "slowest_s": {k: round(v, 2) for k, v in t.seconds.most_common(10)},
            "server_alive": self.server_alive,
            "server_exit": self.server_exit,
            "server_errors_total": self.server_errors,
            "server_log_errors": self.server_log_errors[:10],
            "rss_mb": {k: round(v / 1024, 1) for k, v in self.rss_kb.items()},
            "clean": {
                "identical": c.identical,
                "passes": c.passes,
                "frames": c.frames,
                "max_z_diff": c.max_z_diff,
                "reference_offline_mismatch": c.reference_offline_mismatch,
                "mismatches": c.mismatches[:10],
                "errors": c.errors[:10],
            },
        }

    def client_vs_server(self) -> dict[str, list[float]]:
        """Codes the clients got a different number of times than the server counted
        sending (``[client, server]``): statuses made by grpc, not by the servicer."""
        client: Counter = Counter()
        for key, n in self.tally.codes.items():
            client[key.split()[1]] += n
        skip = ("OK", "CANCELLED", "HANG")
        codes = (set(client) | set(self.server_errors)) - set(skip)
        return {
            code: [client[code], self.server_errors.get(code, 0.0)]
            for code in sorted(codes)
            if client[code] != self.server_errors.get(code, 0.0)
        }

    def table(self) -> str:
        """The summary as an aligned text table."""
        t, c, rss = self.tally, self.clean, self.rss_kb
        mb = {k: f"{v / 1024:.1f}" for k, v in rss.items()}
        rows = [
            ("seed / streams", f"{self.config.seed} / {self.config.streams} fuzz + 1 clean"),
            ("frames sent", f"{t.frames_sent} in {self.wall_s:.1f} s"),
            ("calls", ", ".join(f"{rpc} {n}" for rpc, n in sorted(t.calls.items()))),
            *((f"  {key}", str(n)) for key, n in sorted(t.codes.items())),
            ("INTERNAL/UNKNOWN", str(self.internal)),
            ("hangs (no answer)", str(t.hangs)),
            ("busy retries", str(t.busy_retries)),
            ("server errors_total", ", ".join(f"{k} {v:g}" for k, v in self.server_errors.items())),
            ("server ERROR log lines", str(len(self.server_log_errors))),
            (
                "client != server counts",
                ", ".join(f"{k} {c:g} vs {s:g}" for k, (c, s) in self.client_vs_server().items())
                or "none",
            ),
            (
                "server alive at end",
                f"{self.server_alive} (exit after SIGTERM: {self.server_exit})",
            ),
            (
                "server RSS MB",
                f"start {mb.get('start')}, end {mb.get('end')}, peak {mb.get('peak')}",
            ),
            ("clean passes / frames", f"{c.passes} / {c.frames}"),
            ("clean decisions identical", f"{c.identical} (max |dz| {c.max_z_diff:.3g})"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        for example in t.bad_examples[:10]:
            lines.append(f"  bad answer: {example}")
        for problem in (c.mismatches + c.errors)[:10]:
            lines.append(f"  clean stream: {problem}")
        return "\n".join(lines)
