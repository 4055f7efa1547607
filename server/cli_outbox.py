"""``alscout outbox status|check|upload``: look into, verify and drain a vehicle's outbox."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["configure", "run", "PARKED_LISTED"]

#: parked frames ``alscout outbox status`` lists (oldest first; ``counts`` has them all)
PARKED_LISTED = 100


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the subcommands of ``alscout outbox``."""
    sub = parser.add_subparsers(dest="outbox_command", metavar="SUBCOMMAND", required=True)
    status = sub.add_parser(
        "status", help="frames per state, bytes waiting and parked, quota, parked frames (JSON)"
    )
    status.add_argument("--outbox", required=True, metavar="DIR", help="the outbox folder")
    check = sub.add_parser(
        "check", help="verify the index and every waiting file's hash; exit 1 on problems"
    )
    check.add_argument("--outbox", required=True, metavar="DIR", help="the outbox folder")
    check.add_argument("--repair", action="store_true", help="take corrupt frames out of the queue")
    upload = sub.add_parser("upload", help="drain the outbox to a sink (the uploader process)")
    from alscout.server.uploader import configure as configure_upload

    configure_upload(upload)


def run(args: argparse.Namespace) -> int:
    """Run one subcommand; status and check print JSON to stdout."""
    from alscout.server.durable_outbox import DurableOutbox

    if args.outbox_command == "upload":
        from alscout.server.uploader import run as run_upload

        return run_upload(args)
    with DurableOutbox(args.outbox) as outbox:
        if args.outbox_command == "status":
            status = outbox.status()
            result: dict[str, object] = {
                "counts": status.counts,
                "pending_bytes": status.pending_bytes,
                "parked_bytes": status.parked_bytes,
                "quota_bytes": status.quota_bytes,
                "parked": [
                    {
                        "id": f.id,
                        "recording_id": f.recording_id,
                        "camera_id": f.camera_id,
                        "frame_index": f.frame_index,
                        "reason": f.reason,
                    }
                    for f in outbox.frames("parked")[:PARKED_LISTED]
                ],
            }
            code = 0
        else:
            report = outbox.check(repair=args.repair)
            result = {
                "ok": report.ok,
                "frames_checked": report.frames_checked,
                "files_checked": report.files_checked,
                "orphans": report.orphans,
                "problems": list(report.problems),
            }
            code = 0 if report.ok else 1
    sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return code
