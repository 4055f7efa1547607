"""``alscout serve``: run the scoring service until SIGINT or SIGTERM.

Once it takes calls it prints where, on stdout, whatever the log level:
``alscout serve: listening on HOST:PORT`` (the port it bound, also with ``--port 0``) and,
with a metrics port, ``alscout serve: metrics on http://HOST:PORT/metrics``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alscout.server.app import ScoringServer
    from alscout.server.config import ServerConfig

__all__ = ["configure", "run", "load_args"]


#: help of ``--target-rate`` (``alscout serve`` and ``alscout score``)
TARGET_RATE_HELP = (
    "flag about this fraction of frames (1%% or 0.01): the adaptive threshold, "
    "started from the model's shipped threshold for it (alscout calibrate)"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``alscout serve`` (each overrides the TOML file and environment)."""
    parser.add_argument("--config", metavar="TOML", help="config file (see docs/api.md)")
    parser.add_argument("--model", dest="model_path", metavar="PATH", help="ONNX model to score")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    parser.add_argument("--backend", help="inference backend (default auto)")
    parser.add_argument("--threads", type=int, help="inference threads (0: the thread plan)")
    parser.add_argument("--workers", type=int, help="threads that decode and score frames")
    parser.add_argument("--outbox", dest="outbox_dir", metavar="DIR", help="flagged frames go here")
    parser.add_argument("--grace", dest="grace_s", type=float, help="seconds to drain at shutdown")
    parser.add_argument(
        "--threshold",
        help="flag threshold on the smoothed score: a number or 'adaptive'",
    )
    parser.add_argument("--target-rate", metavar="RATE", help=TARGET_RATE_HELP)
    parser.add_argument(
        "--acquisition", metavar="NAME",
        help="acquisition function: divergence (default), entropy, least_confidence, "
        "instance_count, divergence_count, difficulty (a model with the difficulty head; "
        "docs/scoring.md)",
    )  # fmt: skip
    parser.add_argument(
        "--quality-gate", action="store_true", default=None,
        help="hold back blurred, dark, overexposed or covered frames (reason low_quality)",
    )  # fmt: skip
    parser.add_argument("--max-batch", type=int, help="frames per inference batch, all streams")
    parser.add_argument(
        "--max-delay-ms", type=float, help="longest wait for a batch to fill (default 5)"
    )
    parser.add_argument(
        "--resume-window", dest="resume_window_s", type=float,
        help="seconds a cut call's streams are kept for resuming (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--context-frames", type=int, help="frames stored before/after a flagged one"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics here (0: any free port)"
    )
    parser.add_argument(
        "--metrics-host", help="address of the /metrics endpoint (default 127.0.0.1, not --host)"
    )
    parser.add_argument("--tls-cert", dest="tls_cert_file", metavar="PEM", help="TLS certificate")
    parser.add_argument("--tls-key", dest="tls_key_file", metavar="PEM", help="TLS private key")
    parser.add_argument(
        "--tls-client-ca", dest="tls_client_ca_file", metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS)",
    )  # fmt: skip
    parser.add_argument(
        "--token-file", dest="auth_token_file", metavar="FILE",
        help="every call must carry 'authorization: Bearer <token in FILE>'",
    )  # fmt: skip
    parser.add_argument(
        "--model-registry", metavar="DIR", help="hot-reload the latest model published here"
    )


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve; returns 0 after a graceful shutdown."""
    import asyncio

    from alscout.server.app import serve

    asyncio.run(serve(load_args(args), on_ready=_announce))
    return 0


def parse_threshold(value: str | None) -> float | str | None:
    """``--threshold`` as the selector takes it: a number, "adaptive", or None (not given)."""
    from alscout.errors import ConfigError

    if value is None or value == "adaptive":
        return value
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--threshold must be a number or 'adaptive', got {value!r}") from None


def selector_overrides(threshold: str | None, target_rate: str | None) -> dict[str, Any]:
    """``--threshold`` and ``--target-rate`` as config overrides (``serve`` and ``score``).

    A target rate means the adaptive threshold (started from the model's shipped
    threshold for that rate), so it cannot go with a numeric ``--threshold``.
    """
    from alscout.errors import ConfigError

    parsed = parse_threshold(threshold)
    rate = None
    if target_rate is not None:
        from alscout.runtime.shipped_thresholds import parse_rate

        if parsed not in (None, "adaptive"):
            raise ConfigError(
                f"--target-rate sets the adaptive threshold; drop --threshold {threshold} "
                "or --target-rate"
            )
        parsed, rate = "adaptive", parse_rate(target_rate)
    return {"selector.threshold": parsed, "selector.target_rate": rate}


def load_args(args: argparse.Namespace) -> ServerConfig:
    """The configuration these options give: TOML file < environment < options."""
    from alscout.server.config import load_config

    overrides = {
        "model_path": args.model_path,
        "host": args.host,
        "port": args.port,
        "backend": args.backend,
        "threads": args.threads,
        "workers": args.workers,
        "outbox_dir": args.outbox_dir,
        "grace_s": args.grace_s,
        **selector_overrides(args.threshold, args.target_rate),
        "pipeline.method": args.acquisition,
        "pipeline.quality": args.quality_gate,
        "max_batch": args.max_batch,
        "max_delay_ms": args.max_delay_ms,
        "resume_window_s": args.resume_window_s,
        "context_frames": args.context_frames,
        "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host,
        "tls_cert_file": args.tls_cert_file,
        "tls_key_file": args.tls_key_file,
        "tls_client_ca_file": args.tls_client_ca_file,
        "auth_token_file": args.auth_token_file,
        "model_registry": args.model_registry,
    }
    return load_config(args.config, env=os.environ, overrides=overrides)


def _announce(scoring: ScoringServer, port: int) -> None:
    """Print the addresses the server listens on (stdout; a supervisor may read them)."""
    config = scoring.config
    out = f"alscout serve: listening on {_host(config.host)}:{port}\n"
    if scoring.metrics_port is not None:
        metrics = f"http://{_host(config.metrics_host)}:{scoring.metrics_port}/metrics"
        out += f"alscout serve: metrics on {metrics}\n"
    if sys.stdout is None:  # no stdout at all (a detached service): the log has it
        return
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except (OSError, ValueError):  # stdout closed or a broken pipe: serve on regardless
        pass


def _host(host: str) -> str:
    """An IPv6 address in brackets, so ``host:port`` stays readable."""
    return f"[{host}]" if ":" in host else host
