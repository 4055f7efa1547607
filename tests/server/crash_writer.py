"""Processes the stand-in crash harness kills: a frame writer and an uploader.

Started by tests/server/test_crash_harness.py through a multiprocessing forkserver that
has this module preloaded (a start costs milliseconds). Every function runs until
killed. The harness that kills the real scoring server is tests/server/crash_rounds.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from alscout.server.durable_outbox import DurableOutbox
from alscout.server.outbox import FlaggedFrame
from alscout.server.uploader import Uploader, UploaderConfig
from alscout.storage.sinks import DirectorySink

RECORDING = "rec-crash"
CAMERA = "cam0"
QUOTA = 1 << 30


def image_of(index: int) -> bytes:
    """The bytes of frame ``index``: small, unique, the same every time."""
    return b"\xff\xd8 frame %08d " % index + hashlib.sha256(b"%d" % index).digest() * 4


def smoothed_of(index: int) -> float:
    return (index * 7919 % 1000) / 1000.0


def write_frames(outbox_dir: str, ack_file: str, start: int) -> None:
    """Put frames ``start, start + 1, ...``; after each ``put`` returns, append an ack line.

    The ack (``<frame> <sha256>``) is written the way a client records a FLAGGED answer:
    only after the outbox said the frame is durable.
    """
    outbox = DurableOutbox(outbox_dir, QUOTA)
    acks = os.open(ack_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if os.fstat(acks).st_size and not Path(ack_file).read_bytes().endswith(b"\n"):
        os.write(acks, b"\n")  # an earlier writer killed mid-line: end its torn line
    index = start
    while True:
        image = image_of(index)
        outbox.put(
            FlaggedFrame(
                recording_id=RECORDING,
                camera_id=CAMERA,
                frame_index=index,
                image=image,
                image_format="jpeg",
                z=1.0,
                smoothed=smoothed_of(index),
                threshold=0.0,
                model_version="v1",
                model_hash="ab" * 32,
            )
        )
        os.write(acks, f"{index} {hashlib.sha256(image).hexdigest()}\n".encode())
        index += 1


def upload_forever(outbox_dir: str, sink_dir: str) -> None:
    """Drain the outbox to a folder sink, polling quickly, until killed."""
    with DurableOutbox(outbox_dir, QUOTA) as outbox:
        config = UploaderConfig(poll_s=0.005, backoff_base_s=0.005, backoff_cap_s=0.05)
        Uploader(outbox, DirectorySink(sink_dir), config).run()
