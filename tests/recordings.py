"""Small synthetic recordings for the tests of ``alscout score``: noise videos and folders.

Blocky noise (8 x 6 cells scaled up) gives the tiny model's scores enough variation for
the selector to flag a few frames per recording.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: a server/score config whose short windows flag several frames of a 40-frame video
SCORE_TOML = """\
backend = "onnxruntime-cpu"
threads = 1

[pipeline]
batch_size = 4
radius = 3
region = 16
heatmap_stride = 16

[selector]
dt = 2
sigma = 1.0
dt1 = 3
dt2 = 1
threshold = 0.0
"""


def noise_frames(n: int, seed: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """``n`` BGR uint8 frames ``[H, W, 3]`` of blocky noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    return [
        cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (width, height))
        for _ in range(n)
    ]


def write_video(path: Path, n: int, seed: int) -> Path:
    """An MJPG ``.avi`` of ``n`` noise frames (64 x 48, 10 frames/s)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for frame in noise_frames(n, seed):
        writer.write(frame)
    writer.release()
    return path


def write_folder(path: Path, n: int, seed: int) -> Path:
    """A folder of ``n`` JPEG noise frames ``000.jpg``, ``001.jpg``, ..."""
    path.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(noise_frames(n, seed)):
        cv2.imwrite(str(path / f"{i:03d}.jpg"), frame)
    return path


def write_config(path: Path) -> Path:
    """:data:`SCORE_TOML` written to ``path``."""
    path.write_text(SCORE_TOML, encoding="utf-8")
    return path


def read_outputs(out: Path, sink: Path | None = None) -> dict[str, object]:
    """What a score run left in ``out``: the decision lines (as dicts), the Parquet rows,
    and the sink's records and blobs (file name -> bytes). Hidden files are left out: a
    writer killed mid-file leaves its temporary ``.<name>.<random>.tmp``, which no
    reader of the sink (ingest, report) looks at."""
    import json

    import pyarrow.parquet as pq

    sink = out / "sink" if sink is None else sink
    lines = (out / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
    return {
        "decisions": [json.loads(line) for line in lines],
        "scores": pq.read_table(out / "scores.parquet").to_pylist(),
        "records": {
            str(p.relative_to(sink)): p.read_bytes()
            for p in sorted(sink.glob("frames/**/*.json"))
            if not p.name.startswith(".")
        },
        "blobs": {
            p.name: p.read_bytes()
            for p in sorted(sink.glob("blobs/*"))
            if not p.name.startswith(".")
        },
    }
