"""``alscout demo``: the whole loop on one machine, through the documented commands.

synthetic source data -> ``alscout train`` -> ``alscout export onnx`` -> ``alscout serve``
(a subprocess on a free loopback port, durable outbox, Prometheus metrics) ->
``alscout stream`` (a subprocess, progress bar visible) -> ``alscout outbox upload`` (a
local folder as the sink) -> ``alscout report``. Each step is a subprocess running the
same command a user would type, so the demo cannot drift from the CLI. Example::

    alscout demo                          # synthetic target-domain video, < 10 min on 2 cores
    alscout demo --video my_drive.mp4     # score your own video with the trained model
    alscout demo --quick                  # a reduced run (the test suite runs it)

Inputs are checked before anything slow runs: a missing or unreadable video, a port in
use and too little disk space end in one line and a non-zero exit. The trained model is
reused by later runs in the same ``--workdir`` (``--retrain`` to train again); each run
replaces the previous run's ``run/`` folder. Choices: docs/design.md ("Demo").
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from alscout.errors import AlscoutError, CapacityError, ConfigError, DataError

__all__ = ["configure", "run", "DemoProfile", "PROFILES", "DemoConfig", "StepFailedError"]

log = logging.getLogger(__name__)

RECORDING_ID = "demo"
CAMERA_ID = "cam0"
#: seconds ``alscout serve`` gets to load its model and answer a health check
SERVER_START_S = 180.0


class StepFailedError(AlscoutError):
    """A step of the demo (one alscout command) exited with an error."""


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of one demo run. ``size``: (width, height) of the synthetic frames, pixels;
    ``disk_mb``: free space the run needs under the work folder, MB."""

    name: str
    stills: int
    size: tuple[int, int]
    epochs: int
    width: int
    video_frames: int
    disk_mb: int
    outbox_mb: int


PROFILES = {
    # training ~64 steps of 8 images at 320x240 (~2 CPU-minutes); 30 s of video at 15 fps
    "full": DemoProfile("full", 128, (320, 240), 4, 8, 450, 1024, 512),
    "quick": DemoProfile("quick", 16, (160, 120), 1, 4, 48, 200, 64),
}


@dataclass(frozen=True)
class DemoConfig:
    """One demo run; validated on construction (``port`` 0: a free port)."""

    workdir: Path
    profile: DemoProfile = PROFILES["full"]
    video: Path | None = None
    port: int = 0
    retrain: bool = False
    fps_limit: float | None = None
    threads: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "workdir", Path(self.workdir).resolve())
        if self.video is not None:
            object.__setattr__(self, "video", Path(self.video).resolve())
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be in [0, 65535], got {self.port}")
        if self.fps_limit is not None and not self.fps_limit > 0:
            raise ConfigError(f"--fps-limit must be > 0, got {self.fps_limit}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")


# ------------------------------------------------------------------------- checks


def check_video(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of a video OpenCV can read; :class:`DataError` otherwise."""
    import cv2

    if not path.exists():
        raise DataError(f"{path}: no such video file")
    if not path.is_file():
        raise DataError(f"{path}: not a file (pass a video file to --video)")
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok or frame is None:
            raise DataError(f"{path}: OpenCV cannot read a frame from it (not a video it knows)")
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return frames, frame.shape[1], frame.shape[0]


def check_port(port: int) -> int:
    """``port`` if it is free on 127.0.0.1 (0: pick a free one); :class:`ConfigError` if taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise ConfigError(
                f"port {port} on 127.0.0.1 is in use ({error.strerror}); "
                "pass --port with a free port, or --port 0 to pick one"
            ) from None
        return probe.getsockname()[1]


def check_disk(folder: Path, need_mb: int) -> int:
    """Free MB under ``folder``; :class:`CapacityError` when fewer than ``need_mb``."""
    folder.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(folder).free // 2**20
    if free_mb < need_mb:
        raise CapacityError(
            f"only {free_mb} MB free under {folder}; the demo needs {need_mb} MB for the "
            "model, data and outbox: free some space or pass --workdir on another disk"
        )
    return free_mb


# ------------------------------------------------------------------------- steps


@dataclass
class StepLog:
    """The commands run so far: (name, command as a user types it, seconds)."""

    steps: list[dict[str, str | float]] = field(default_factory=list)

    def run(self, name: str, command: str, **paths: object) -> None:
        """Run ``alscout <command>`` in a subprocess, its output shown as it comes.

        ``command`` is the line a user would type; ``{field}``s in it are filled with
        the shell-quoted ``paths``, so the logged line can be pasted into a shell.
        """
        shown = "alscout " + command.format(**{k: shlex.quote(str(v)) for k, v in paths.items()})
        sys.stderr.write(f"\n==> {name}: {shown}\n")
        sys.stderr.flush()
        started, cpu = time.perf_counter(), _children_cpu_s()
        code = subprocess.call(_alscout(shlex.split(shown)[1:]))
        self.record(name, shown, time.perf_counter() - started, _children_cpu_s() - cpu)
        if code != 0:
            raise StepFailedError(f"step '{name}' failed (exit {code}); its message is above")

    def record(self, name: str, command: str, seconds: float, cpu_s: float | None = None) -> None:
        """Add a step: wall-clock ``seconds`` and (for a finished subprocess) its CPU seconds."""
        step: dict[str, str | float] = {
            "name": name,
            "command": command,
            "seconds": round(seconds, 2),
        }
        if cpu_s is not None:
            step["cpu_s"] = round(cpu_s, 2)
        self.steps.append(step)


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of the finished subprocesses so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _alscout(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "alscout.apps.cli", *args]


def _prepare_model(config: DemoConfig, steps: StepLog) -> tuple[Path, Path]:
    """Synthetic source data, training and export; returns (ONNX model, checkpoint)."""
    p = config.profile
    folder = config.workdir / f"model-{p.name}"
    model, checkpoint = folder / "model.onnx", folder / "train" / "last.pt"
    if model.is_file() and checkpoint.is_file() and not config.retrain:
        sys.stderr.write(f"==> reusing the model trained earlier: {model} (--retrain to redo)\n")
        return model, checkpoint
    shutil.rmtree(folder, ignore_errors=True)
    size = f"{p.size[0]}x{p.size[1]}"
    data = folder / "source"
    steps.run(
        "synthetic source data",
        f"data synth --out {{data}} --kind stills --count {p.stills} --domain source --seed 0 "
        f"--size {size}",
        data=data,
    )
    steps.run(
        "train",
        f"train --data {{data}} --out {{out}} --epochs {p.epochs} --width {p.width} "
        f"--input-size {size} --cache-images --threads {config.threads} --seed 0",
        data=data / "annotations.json",
        out=checkpoint.parent,
    )
    steps.run(
        "export", "export onnx --checkpoint {ckpt} --out {model}", ckpt=checkpoint, model=model
    )
    return model, checkpoint


def _target_video(config: DemoConfig, steps: StepLog) -> tuple[Path, Path | None]:
    """The video to stream and its annotations (synthetic only, for the oracle)."""
    if config.video is not None:
        return config.video, None
    p = config.profile
    folder = config.workdir / f"target-{p.name}"
    video, truth = folder / "video.avi", folder / "annotations.json"
    if not (video.is_file() and truth.is_file()):
        size = f"{p.size[0]}x{p.size[1]}"
        steps.run(
            "synthetic target-domain video",
            f"data synth --out {{out}} --kind video --count {p.video_frames} --domain target "
            f"--seed 1 --size {size}",
            out=folder,
        )
    return video, truth


# ------------------------------------------------------------------------- the server


class ServerProcess:
    """``alscout serve --config FILE`` as a subprocess, ready once its health check says
    SERVING; leaving the ``with`` block stops it (SIGTERM: drain, then exit)."""

    def __init__(self, config_file: Path, log_file: Path, port: int) -> None:
        self.config_file = config_file
        self.log_file = log_file
        self.target = f"127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        with self.log_file.open("wb") as log_handle:
            self.process = subprocess.Popen(
                _alscout(["-v", "serve", "--config", str(self.config_file)]),
                stdout=log_handle,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready(SERVER_START_S)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_ready(self, timeout_s: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise StepFailedError(
                        f"alscout serve did not start: {self._last_line()} (log: {self.log_file})"
                    )
                try:
                    # types-grpcio-health-checking's HealthStub declares no RPC methods
                    request = health_pb2.HealthCheckRequest()
                    reply = stub.Check(request, timeout=1.0)  # type: ignore[attr-defined]
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.3)
        raise StepFailedError(
            f"alscout serve did not answer on {self.target} within {timeout_s:.0f} s "
            f"(log: {self.log_file})"
        )

    def _last_line(self) -> str:
        lines = self.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def stop(self) -> None:
        """SIGTERM, wait for the graceful drain, kill if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve_config(model: Path, outbox: Path, port: int, metrics_port: int, quota_mb: int) -> str:
    """The TOML the demo's server runs with: the embedded defaults plus loopback, port,
    outbox (with a quota) and a metrics port. Keys this server version lacks are left out."""
    from alscout.server.config import ServerConfig

    known = {f.name for f in dataclasses.fields(ServerConfig)}
    values: dict[str, object] = {
        "model_path": str(model),
        "host": "127.0.0.1",
        "port": port,
        "outbox_dir": str(outbox),
        "grace_s": 5.0,
        "outbox_quota_bytes": quota_mb * 2**20,
        "metrics_port": metrics_port,
    }
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if k in known)


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode("utf-8")
    except OSError as error:
        log.warning("no server metrics port=%d error=%s", port, error)
        return ""


# ------------------------------------------------------------------------- the run


def run_demo(config: DemoConfig) -> Path:
    """Run every step; returns the report's path. Inputs are checked before any step."""
    p = config.profile
    if config.video is not None:
        frames, width, height = check_video(config.video)
        log.info("video path=%s frames=%d size=%dx%d", config.video, frames, width, height)
    free_mb = check_disk(config.workdir, p.disk_mb)
    port, metrics_port = check_port(config.port), check_port(0)
    steps = StepLog()
    model, checkpoint = _prepare_model(config, steps)
    video, truth = _target_video(config, steps)
    recording = RECORDING_ID if config.video is None else _recording_id(config.video)

    run_dir = config.workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    outbox, uploads = run_dir / "outbox", run_dir / "uploads"
    decisions, report = run_dir / "decisions.jsonl", run_dir / "report.html"
    serve_toml = run_dir / "serve.toml"
    quota_mb = min(p.outbox_mb, max(1, free_mb // 4))
    serve_toml.write_text(serve_config(model, outbox, port, metrics_port, quota_mb))
    stream = (
        f"stream {{video}} --server 127.0.0.1:{port} --recording-id {recording} "
        f"--camera-id {CAMERA_ID} --out {{out}} --frame-encoding jpeg"
    )
    if config.fps_limit is not None:
        stream += f" --fps-limit {config.fps_limit}"

    serve = f"alscout serve --config {shlex.quote(str(serve_toml))}"
    sys.stderr.write(f"\n==> start the server: {serve}\n")
    started, cpu = time.perf_counter(), _children_cpu_s()
    with ServerProcess(serve_toml, run_dir / "serve.log", port):
        log.info("server ready port=%d seconds=%.1f", port, time.perf_counter() - started)
        steps.run("stream", stream, video=video, out=decisions)
        stream_step = steps.steps[-1]
        (run_dir / "metrics.prom").write_text(_scrape(metrics_port), encoding="utf-8")
    # the server's own CPU time: all children's since its start, less the stream client's
    server_cpu = _children_cpu_s() - cpu - float(stream_step["cpu_s"])
    steps.record("serve (start to stop)", serve, time.perf_counter() - started, server_cpu)
    upload = "outbox upload --outbox {outbox} --sink {sink} --once"
    steps.run("upload", upload, outbox=outbox, sink=uploads)
    n_frames = sum(1 for line in decisions.open(encoding="utf-8") if line.strip())
    info = {
        "model": str(model),
        "source": str(video),
        "stream": {"frames": n_frames, "wall_s": stream_step["seconds"]},
        "metrics_file": "metrics.prom",
        "steps": steps.steps,
        "next_commands": next_commands(config.workdir, recording, uploads, checkpoint, truth),
    }
    (run_dir / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    steps.run(
        "report",
        "report --decisions {decisions} --outbox {outbox} --sink {sink} --run-info {info} "
        "--out {out}",
        decisions=decisions,
        outbox=outbox,
        sink=uploads,
        info=run_dir / "run.json",
        out=report,
    )
    return report


def next_commands(
    workdir: Path, recording: str, uploads: Path, checkpoint: Path, truth: Path | None
) -> list[tuple[str, str]]:
    """(what, shell command) pairs that continue the loop on the fleet side after a run."""
    fleet = workdir / "fleet"
    q = {
        "pool": fleet / "pool",
        "tasks": fleet / "tasks",
        "labels": fleet / "tasks" / "labels.json",
        "uploads": uploads,
        "truth": f"{recording}={truth}",
        "init": checkpoint,
        "out": fleet / "cycle1",
        "registry": fleet / "models",
        "base": checkpoint.parent.parent / "source" / "annotations.json",
        "serve": workdir / "run" / "serve.toml",
    }
    q = {k: shlex.quote(str(v)) for k, v in q.items()}
    commands = [
        ("gather the uploads into a labeling pool (near-duplicates removed)",
         "alscout fleet ingest --pool {pool} {uploads}"),
        ("export labeling tasks (COCO + image list, Label Studio JSON)",
         "alscout fleet export-tasks --pool {pool} --out {tasks}"),
        ("synthetic video: let its ground truth label them",
         "alscout fleet oracle --pool {pool} --ground-truth {truth} --out {labels}"),
        ("import the finished labels", "alscout fleet import-labels --pool {pool} {labels}"),
        ("finetune from w_l, evaluate, export and publish a new model version",
         "alscout fleet finetune --pool {pool} --init {init} --out {out} --registry {registry} "
         "--base-data {base}"),
        ("reload: the server loads each new version of the registry",
         "ALSCOUT_SERVER_MODEL_REGISTRY={registry} alscout serve --config {serve}"),
    ]  # fmt: skip
    return [(what, line.format(**q)) for what, line in commands if truth or "oracle" not in line]


def _recording_id(video: Path) -> str:
    """A recording id (the outbox's alphabet) from a video file name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", video.stem).strip("._")
    return re.sub(r"\.{2,}", ".", cleaned)[:128] or RECORDING_ID


# ------------------------------------------------------------------------- command


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``alscout demo``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "steps: alscout data synth -> train -> export onnx -> serve (a subprocess on a free\n"
        "loopback port) -> stream -> outbox upload (a local folder) -> report; each is\n"
        "printed as the command it runs. Results: WORKDIR/run/report.html.\n\n"
        "examples:\n"
        "  alscout demo                        # under 10 min on 2 cores\n"
        "  alscout demo --video drive.mp4      # score your video with the trained model\n"
        "  alscout demo --quick --workdir /tmp/demo"
    )
    parser.add_argument("--video", type=Path, help="score this video (default: a synthetic one)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo-work"),
        help="folder for data, model and the run (default ./demo-work)",
    )
    parser.add_argument("--quick", action="store_true", help="a reduced run (~1 min)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a model exists")
    parser.add_argument("--fps-limit", type=float, help="stream at most this many frames/s")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for training (2)")


def run(args: argparse.Namespace) -> int:
    """Run the demo; the last line names the report."""
    config = DemoConfig(
        workdir=args.workdir,
        profile=PROFILES["quick" if args.quick else "full"],
        video=args.video,
        port=args.port,
        retrain=args.retrain,
        fps_limit=args.fps_limit,
        threads=args.threads,
    )
    started = time.perf_counter()
    try:
        report = run_demo(config)
    except OSError as error:
        where = error.filename or config.workdir
        if error.errno == errno.ENOSPC:
            raise CapacityError(
                f"{where}: no space left on the disk; free some space or pass "
                "--workdir on another disk"
            ) from None
        raise StepFailedError(f"{where}: {error.strerror or error}") from None
    sys.stdout.write(
        f"demo done in {time.perf_counter() - started:.0f} s; report: {report.as_uri()}\n"
    )
    return 0
