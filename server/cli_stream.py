"""``alscout stream SOURCE``: send a video, image folder, MCAP file or camera to a server.

Writes one JSON line per final decision (``--out``, ``-`` for stdout) and a summary
line at the end; a tqdm bar counts frames scored. Errors (missing source, unreachable
server, refused credentials) end in one line and a non-zero exit status. The record
format and the choices behind it: ``docs/operations.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from alscout.errors import ServiceUnavailableError

if TYPE_CHECKING:
    import grpc

    from alscout.server.client_progress import StreamFrame

__all__ = ["configure", "run", "decision_record", "default_ids", "StreamFailedError"]

log = logging.getLogger(__name__)


class StreamFailedError(ServiceUnavailableError):
    """The server could not be reached, refused the call, or broke the decision contract."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``alscout stream``."""
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="video file, image folder, .mcap file, camera index (0) or URL (rtsp://...)",
    )
    parser.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of alscout serve")
    parser.add_argument("--recording-id", help="default: the source's name")
    parser.add_argument("--camera-id", help="default: the MCAP topic, else cam0")
    parser.add_argument(
        "--out", default="decisions.jsonl", help="JSON lines of final decisions ('-': stdout)"
    )
    parser.add_argument("--topic", help="MCAP image topic (default: the first image topic)")
    parser.add_argument("--fps-limit", type=float, help="send at most this many frames/s")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument(
        "--frame-encoding",
        choices=("raw", "jpeg", "png"),
        default="raw",
        help="how decoded frames (video, camera, raw ROS images) travel (default raw)",
    )
    parser.add_argument("--tls-ca", metavar="PEM", help="trust this CA (turns TLS on)")
    parser.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="PEM", help="client key (mutual TLS)")
    parser.add_argument("--token-file", metavar="FILE", help="file holding the bearer token")
    parser.add_argument("--retries", type=int, default=5, help="reconnect attempts (default 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_ids(source: str, topic: str | None) -> tuple[str, str]:
    """(recording id, camera id) derived from the source and topic, in the id alphabet.

    The recording id is the source's file or folder name without suffix (an S3 URL's
    last key segment, its ``?endpoint_url=...`` query left out).
    """
    if source.startswith("s3://"):
        source = source.partition("?")[0]
    name = Path(source.rstrip("/")).stem or source

    def clean(text: str) -> str:
        text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
        return re.sub(r"\.{2,}", ".", text)[:128] or "stream"

    return clean(name), clean(topic) if topic else "cam0"


def decision_record(
    recording_id: str, camera_id: str, final: Any, model_version: str, model_hash: str
) -> dict[str, Any]:
    """One output line for a ``FinalDecision``; non-finite numbers become null.

    ``model_version`` / ``model_hash``: the model that scored the frame (its own result
    says so), so a model swap shows in the decisions.
    """

    def number(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    flagged = final.decision == 2  # alscout.v1.DECISION_FLAGGED
    return {
        "recording_id": recording_id,
        "camera_id": camera_id,
        "frame_index": int(final.frame_index),
        "decision": "flagged" if flagged else "not_flagged",
        "reason": final.reason,
        "z": number(final.z),
        "smoothed": number(final.smoothed),
        "threshold": number(final.threshold),
        "model_version": model_version,
        "model_hash": model_hash,
    }


def run(args: argparse.Namespace) -> int:
    """Stream the source; 0 when every frame got exactly one final decision."""
    import itertools
    import time

    import grpc

    from alscout.errors import InvalidInputError
    from alscout.server.sources import open_source, paced

    if args.max_frames is not None and args.max_frames < 1:
        raise InvalidInputError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.retries < 0:
        raise InvalidInputError(f"--retries must be >= 0, got {args.retries}")
    credentials, token = _security(args)
    source = open_source(
        args.source,
        topic=args.topic,
        max_frames=args.max_frames,
        frame_encoding=args.frame_encoding,
    )
    topic = getattr(source, "topic", None)
    recording_id, camera_id = default_ids(args.source, topic)
    recording_id = args.recording_id or recording_id
    camera_id = args.camera_id or camera_id
    total = (
        source.total
        if args.max_frames is None
        else min(source.total or args.max_frames, args.max_frames)
    )

    from alscout.server.client import ScorerClient

    started = time.perf_counter()
    sent = flagged = 0
    decided: set[int] = set()
    out, close_out = _open_out(args.out)
    try:
        with (
            source,
            ScorerClient(
                args.server, credentials=credentials, token=token, retries=args.retries
            ) as client,
        ):
            info = client.model_info()
            log.info(
                "streaming source=%s server=%s model=%s", source.name, args.server, info.version
            )

            def frames() -> Iterator[StreamFrame]:
                nonlocal sent
                for frame in paced(itertools.islice(source, args.max_frames), args.fps_limit):
                    sent += 1
                    yield frame.to_stream_frame()

            models = _ScoredBy(info.version, info.model_hash)
            bar = _progress(total, source.name, disabled=args.no_progress)
            with bar:
                for result in client.stream(recording_id, camera_id, frames()):
                    if not result.end_of_stream:
                        bar.update(1)
                        if not result.HasField("resume"):
                            models.scored(result)
                    for final in result.final_decisions:
                        if final.frame_index in decided:
                            raise StreamFailedError(
                                f"the server sent frame {final.frame_index}'s decision twice"
                            )
                        decided.add(final.frame_index)
                        version, model_hash = models.decided(final.frame_index)
                        record = decision_record(
                            recording_id, camera_id, final, version, model_hash
                        )
                        flagged += record["decision"] == "flagged"
                        out.write(json.dumps(record) + "\n")
                    out.flush()
    except grpc.RpcError as error:
        raise StreamFailedError(_rpc_message(args.server, error)) from None
    finally:
        if close_out:
            out.close()
    elapsed = time.perf_counter() - started
    summary = (
        f"{recording_id}/{camera_id}: {sent} frames, {len(decided)} decided, {flagged} flagged "
        f"({100.0 * flagged / max(sent, 1):.2f}%) in {elapsed:.1f} s "
        f"({sent / max(elapsed, 1e-9):.1f} frames/s), model {info.name} {info.version}; "
        f"decisions in {args.out}"
    )
    (sys.stderr if args.out == "-" else sys.stdout).write(summary + "\n")
    if len(decided) != sent:
        raise StreamFailedError(
            f"{sent} frames sent but {len(decided)} final decisions received; "
            "the decisions file is incomplete"
        )
    return 0


class _ScoredBy:
    """Which model scored each frame whose final decision has not come yet.

    A frame's own result names its model; its final decision comes with a later
    frame's. A frame whose own result was lost in a cut call (the server had taken it)
    is put down to the model of the last result before its decision.
    """

    def __init__(self, version: str, model_hash: str) -> None:
        self._by_frame: dict[int, tuple[str, str]] = {}
        self._last = (version, model_hash)

    def scored(self, result: Any) -> None:
        """Book a frame's own result."""
        if result.model_version or result.model_hash:
            self._last = (result.model_version, result.model_hash)
            self._by_frame[int(result.frame_index)] = self._last

    def decided(self, frame_index: int) -> tuple[str, str]:
        """(version, hash) of the model that scored ``frame_index``; forgets the frame."""
        return self._by_frame.pop(frame_index, self._last)


def _security(args: argparse.Namespace) -> tuple[Any, str | None]:
    from alscout.errors import InvalidInputError
    from alscout.server.security import channel_credentials, load_token

    if (args.tls_cert or args.tls_key) and not args.tls_ca:
        raise InvalidInputError("--tls-cert and --tls-key need --tls-ca (the server's CA)")
    credentials = None
    if args.tls_ca:
        credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    token = load_token(args.token_file) if args.token_file else None
    return credentials, token


def _open_out(path: str) -> tuple[IO[str], bool]:
    if path == "-":
        return sys.stdout, False
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("w", encoding="utf-8"), True
    except OSError as error:
        raise StreamFailedError(f"{target}: cannot write the decisions file: {error}") from error


def _progress(total: int | None, name: str, *, disabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=name[-40:], unit="frame", disable=disabled, file=sys.stderr)


def _rpc_message(server: str, error: grpc.RpcError) -> str:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    hints = {
        "UNAVAILABLE": "is `alscout serve` running there, and do TLS settings match?",
        "UNAUTHENTICATED": "pass the server's token with --token-file",
    }
    name = getattr(code, "name", "ERROR")
    hint = hints.get(name, "")
    return f"server {server}: {name}: {details}" + (f" ({hint})" if hint else "")
