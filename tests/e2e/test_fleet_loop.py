"""The whole loop on synthetic data, end to end (issue #6's must-show).

stream -> flags -> upload -> ingest -> labels (ground truth as the oracle) -> finetune
-> new model version -> server reload -> re-stream the same recording: no frame within
dt2 of an uploaded one is flagged again. Along the way, a malformed upload and a
malformed label file are rejected with messages naming them, and nothing already
ingested is lost.

A real server on port 0 (its durable outbox and registry watcher), the real
uploader into a directory sink, the real Python client, and ``alscout fleet`` for the
fleet side.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import pytest
import torch

from alscout.apps.cli import main
from alscout.runtime.model_registry import ModelRegistry
from alscout.runtime.temporal import SelectorConfig, flag_recording
from alscout.server._proto import alscout_pb2 as pb
from alscout.server.app import create_server
from alscout.server.client import ScorerClient, StreamFrame
from alscout.server.config import ServerConfig
from alscout.server.uploader import Uploader
from alscout.storage.sinks import DirectorySink
from alscout.trainer.config import TrainConfig
from alscout.trainer.fleet.finetune import export_onnx, publish_model
from alscout.trainer.fleet.pool import LabelPool
from alscout.trainer.model import DetectorConfig
from alscout.trainer.synth import domain_preset, generate_stills, generate_video
from alscout.trainer.training import fit

SIZE = (120, 160)  # (height, width)
TINY = DetectorConfig(width=4, head_channels=16, fires_per_level=1)
SELECTOR = SelectorConfig()  # the defaults: dt 5, dt1 15, dt2 2, fixed threshold 0
RECORDING, CAMERA = "drive-0001", "front"


class BackgroundServer:
    """A ScoringServer on port 0, run by an event loop in a thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, self.port = self._call(self._start(config))

    async def _start(self, config: ServerConfig):
        server, port = create_server(config)
        await server.start()
        return server, port

    def _call(self, coroutine, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self._call(self.server.stop(grace_s=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def stream_recording(client: ScorerClient, frames: list[Path]) -> tuple[dict, set[str]]:
    """Send every frame; returns {frame: FinalDecision} and the model versions used."""
    decisions: dict[int, pb.FinalDecision] = {}
    versions: set[str] = set()
    source = (StreamFrame(i, path.read_bytes(), encoding="png") for i, path in enumerate(frames))
    for result in client.stream(RECORDING, CAMERA, source):
        if not result.end_of_stream:
            versions.add(result.model_version)
        for final in result.final_decisions:
            assert final.frame_index not in decisions, "a final decision arrived twice"
            decisions[final.frame_index] = final
    assert sorted(decisions) == list(range(len(frames)))
    return decisions, versions


def flagged(decisions: dict) -> list[int]:
    return sorted(f for f, d in decisions.items() if d.decision == pb.DECISION_FLAGGED)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_fleet_loop_end_to_end(tmp_path, capsys):
    # w_l: a tiny detector trained on synthetic stills of the source domain
    stills = generate_stills(tmp_path / "stills", 8, domain_preset("source"), 0, 160, 120)
    train = TrainConfig(epochs=1, batch_size=4, input_size=SIZE, lr=3e-3, lr_final=3e-4)
    w_l = fit(stills, TINY, train, out_dir=tmp_path / "wl", progress=False).checkpoint
    registry = ModelRegistry(tmp_path / "registry")
    first_onnx = export_onnx(w_l, tmp_path / "wl.onnx", version="v000001")
    first = publish_model(registry, first_onnx, metrics={}, notes="w_l", version="v000001")

    # a recording of the target domain, as PNG frames, with its ground truth
    video = generate_video(
        tmp_path / "video", 100, domain_preset("target"), 7, 160, 120, container="png"
    )
    frames = [record.source for record in video]

    config = ServerConfig(
        model_path=first.path,
        port=0,
        backend="onnxruntime-cpu",
        threads=1,
        outbox_dir=tmp_path / "outbox",
        model_registry=registry.root,
        registry_poll_s=0.05,
        grace_s=1.0,
        selector=SELECTOR,
    )
    server = BackgroundServer(config)
    try:
        with ScorerClient(f"127.0.0.1:{server.port}") as client:
            # 1. stream: the server flags frames and keeps them in its outbox
            before, versions = stream_recording(client, frames)
            assert versions == {"v000001"}
            uploaded = flagged(before)
            assert len(uploaded) >= 2
            assert all(b - a > SELECTOR.dt1 for a, b in itertools.pairwise(uploaded))

            # 2. upload: the uploader drains the outbox into the car's sink
            sink = tmp_path / "sinks" / "car-1"
            outbox = server.server.owned_outbox
            assert Uploader(outbox, DirectorySink(sink)).drain(threading.Event()) == len(uploaded)
            assert outbox.earlier_frames(RECORDING, CAMERA) == uploaded

            # 3. ingest into the labeling pool
            pool_dir = tmp_path / "pool"
            assert main(["fleet", "ingest", "--pool", str(pool_dir), str(sink)]) == 0
            pool = LabelPool(pool_dir)
            assert sorted(item.frame_index for item in pool.items) == uploaded

            # a malformed upload is rejected by name; nothing ingested is lost
            broken = sink / "frames" / RECORDING / CAMERA / "000000099999.json"
            broken.write_text("{ not json")
            assert main(["fleet", "ingest", "--pool", str(pool_dir), str(sink)]) == 1
            assert str(broken) in capsys.readouterr().err
            assert LabelPool(pool_dir).items == pool.items

            # 4. labels: tasks out, ground truth answers them, labels in
            tasks = tmp_path / "tasks"
            assert (
                main(["fleet", "export-tasks", "--pool", str(pool_dir), "--out", str(tasks)]) == 0
            )
            truth = tmp_path / "video" / "annotations.json"
            labels = tasks / "labels.json"
            oracle = ["fleet", "oracle", "--pool", str(pool_dir), "--out", str(labels)]
            assert main([*oracle, "--ground-truth", f"{RECORDING}={truth}"]) == 0
            bad_labels = tasks / "labels_from_a_broken_tool.json"
            bad_labels.write_text('{"images": [{"id": 1, "file_name": "x.png"}]}')
            assert main(["fleet", "import-labels", "--pool", str(pool_dir), str(bad_labels)]) == 2
            assert str(bad_labels) in capsys.readouterr().err
            assert LabelPool(pool_dir).labeled() == []
            assert main(["fleet", "import-labels", "--pool", str(pool_dir), str(labels)]) == 0
            assert len(LabelPool(pool_dir).labeled()) == len(uploaded)

            # 5. finetune from w_l, evaluate, export, publish v000002
            tune = ["fleet", "finetune", "--pool", str(pool_dir), "--init", str(w_l)]
            tune += ["--out", str(tmp_path / "cycle1"), "--registry", str(registry.root)]
            # a small step: the new model ranks frames much as w_l did, the case where
            # re-scoring the recording would re-send its frames without the dt2 rule
            tune += ["--epochs", "1", "--lr", "1e-5", "--lr-final", "1e-5"]
            tune += ["--device", "cpu", "--no-progress"]
            tune += ["--val-data", str(truth), "--val-frames", "1-10"]
            assert main(tune) == 0
            assert "published version=v000002" in capsys.readouterr().out
            assert "mr_fppi1" in registry.latest().metrics
            assert registry.latest().sha256 != first.sha256

            # 6. the server hot-reloads the new version from the registry
            deadline = time.monotonic() + 60
            while client.model_info().version != "v000002":
                assert time.monotonic() < deadline, "the server did not reload v000002"
                time.sleep(0.05)

            # 7. re-stream the same recording with the new model
            after, versions = stream_recording(client, frames)
            assert versions == {"v000002"}
            for frame in flagged(after):
                distance = min(abs(frame - u) for u in uploaded)
                assert distance > SELECTOR.dt2, f"frame {frame} is {distance} from an upload"
            for frame in uploaded:
                assert after[frame].decision == pb.DECISION_NOT_FLAGGED
            for frame, decision in after.items():
                if decision.reason == "near_earlier_upload":
                    assert min(abs(frame - u) for u in uploaded) <= SELECTOR.dt2
            # the same rule offline over the streamed z agrees; without the record of
            # uploads, the new model would have sent some of those frames again
            z = [after[i].z for i in range(len(frames))]
            offline = flag_recording(z, earlier=uploaded)
            assert [d.frame for d in offline if d.flagged] == flagged(after)
            again = [d.frame for d in flag_recording(z) if d.flagged]
            assert [f for f in again if min(abs(f - u) for u in uploaded) <= SELECTOR.dt2]
    finally:
        server.stop()
