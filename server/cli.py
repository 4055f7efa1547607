"""``alscout serve``: run the scoring service until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import os

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``alscout serve`` (each overrides the TOML file and environment)."""
    parser.add_argument("--config", metavar="TOML", help="config file (see docs/api.md)")
    parser.add_argument("--model", dest="model_path", metavar="PATH", help="ONNX model to score")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    parser.add_argument("--backend", help="inference backend (default auto)")
    parser.add_argument("--threads", type=int, help="inference threads (0: backend default)")
    parser.add_argument("--workers", type=int, help="threads that decode and score frames")
    parser.add_argument("--outbox", dest="outbox_dir", metavar="DIR", help="flagged frames go here")
    parser.add_argument("--grace", dest="grace_s", type=float, help="seconds to drain at shutdown")
    parser.add_argument(
        "--threshold",
        help="flag threshold on the smoothed score: a number or 'adaptive'",
    )


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve; returns 0 after a graceful shutdown."""
    import asyncio

    from alscout.errors import ConfigError
    from alscout.server.app import serve
    from alscout.server.config import load_config

    threshold = args.threshold
    if threshold is not None and threshold != "adaptive":
        try:
            threshold = float(threshold)
        except ValueError:
            raise ConfigError(
                f"--threshold must be a number or 'adaptive', got {threshold!r}"
            ) from None
    overrides = {
        "model_path": args.model_path,
        "host": args.host,
        "port": args.port,
        "backend": args.backend,
        "threads": args.threads,
        "workers": args.workers,
        "outbox_dir": args.outbox_dir,
        "grace_s": args.grace_s,
        "selector.threshold": threshold,
    }
    config = load_config(args.config, env=os.environ, overrides=overrides)
    asyncio.run(serve(config))
    return 0
