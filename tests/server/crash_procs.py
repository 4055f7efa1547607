"""The processes and recordings of the real-server crash harness (crash_rounds.py).

``alscout serve`` and ``alscout outbox upload`` as real subprocesses, each with a
``torch`` first on its path that refuses to be imported (the vehicle has no PyTorch),
one log file per start; and recordings whose every frame has unique bytes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

__all__ = ["DT2", "SERVE_TOML", "Child", "free_port", "recording", "vehicle_processes"]

#: the selector's dt2 (the harness checks stored frames of a stream are further apart)
DT2 = 1
SERVE_TOML = f"""\
backend = "onnxruntime-cpu"
threads = 1
workers = 1
grace_s = 0.0
[pipeline]
batch_size = 4
radius = 3
region = 16
heatmap_stride = 16
[selector]
dt = 2
sigma = 1.0
dt1 = 3
dt2 = {DT2}
threshold = 0.0
"""
NO_TORCH = 'raise ImportError("the vehicle has no PyTorch: this process must not import torch")\n'


class Child:
    """A harness process (server or uploader), one log file per start."""

    def __init__(self, name: str, command: list[str], folder: Path, env: dict[str, str]) -> None:
        self.name, self.command, self.folder, self.env = name, command, folder, env
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.log_path = folder / f"{name}-000.log"

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.folder / f"{self.name}-{self.starts:03d}.log"
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def count(self, marker: bytes) -> int:
        """Lines of this start's log that contain ``marker``."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_bytes().count(marker)
        return 0

    def tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")

    def wait_for(self, marker: bytes, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.count(marker):
            if not self.alive:
                raise RuntimeError(f"{self.name} exited at start:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {marker!r} in {timeout_s} s:\n{self.tail()}")
            time.sleep(0.01)

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.process.pid, sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        return self.process.wait(timeout_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recording(index: int, n: int) -> list[bytes]:
    """``n`` JPEG frames 128x96 of a drifting scene, noise of random strength; a random top row
    makes every frame's bytes unique (the harness checks)."""
    rng = np.random.default_rng(1000 + index)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (128, 96))
    out = []
    for i in range(n):
        frame = np.roll(base, 3 * i, axis=1)
        noise = rng.normal(0, rng.uniform(0, 60), frame.shape)  # scores that rise and fall
        frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
        frame[0] = rng.integers(0, 256, frame[0].shape, dtype=np.uint8)
        ok, data = cv2.imencode(".jpg", frame)
        assert ok
        out.append(data.tobytes())
    return out


def vehicle_processes(
    folder: Path, model: Path, outbox: Path, sink: Path
) -> tuple[Child, Child, str]:
    """(server, uploader, ``host:port``): not started; logs, config and a no-torch path
    under ``folder``. The server listens on one free port for all its restarts."""
    no_torch = folder / "no-torch" / "torch"
    no_torch.mkdir(parents=True, exist_ok=True)
    (no_torch / "__init__.py").write_text(NO_TORCH)
    path = os.pathsep.join(filter(None, [str(no_torch.parent), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    (folder / "serve.toml").write_text(SERVE_TOML)
    port = free_port()
    cli = [sys.executable, "-m", "alscout.apps.cli", "-v"]
    serve = ["serve", "--config", str(folder / "serve.toml"), "--model", str(model)]
    serve += ["--port", str(port), "--outbox", str(outbox)]
    upload = ["outbox", "upload", "--outbox", str(outbox), "--sink", str(sink), "--poll", "0.01"]
    server = Child("server", cli + serve, folder, env)
    uploader = Child("uploader", cli + upload, folder, env)
    return server, uploader, f"127.0.0.1:{port}"
