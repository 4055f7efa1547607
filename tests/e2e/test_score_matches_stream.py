"""``alscout score`` against ``alscout serve`` + ``alscout stream`` on the same video.

The same model and config file on both sides: the decision lines must be identical
(z, smoothed, decisions, reasons, thresholds, model version and hash, key order), and
the flagged frames the server's outbox hands to the uploader must reach its sink as
exactly the records and files ``alscout score`` writes into its own.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from recordings import read_outputs, write_config, write_video

from alscout.apps.cli import main
from alscout.server.app import create_server
from alscout.server.config import load_config
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.uploader import Uploader
from alscout.storage.sinks import DirectorySink


@pytest.fixture
def served(tiny_model, tmp_path):
    """A real server from the config file ``score.toml``, with a durable outbox."""
    config_file = write_config(tmp_path / "score.toml")
    config = load_config(
        config_file,
        overrides={"model_path": tiny_model, "port": 0, "outbox_dir": tmp_path / "outbox"},
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        scoring, port = create_server(config)
        await scoring.start()
        return scoring, port

    scoring, port = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    yield port, config_file, tmp_path / "outbox"
    asyncio.run_coroutine_threadsafe(scoring.stop(0.0), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_score_and_stream_decide_and_store_alike(served, tiny_model, tmp_path, capsys):
    port, config_file, outbox = served
    video = write_video(tmp_path / "drive-7.avi", 60, seed=11)
    streamed = tmp_path / "streamed.jsonl"
    args = ["--server", f"127.0.0.1:{port}", "--out", str(streamed), "--no-progress"]
    assert main(["stream", str(video), *args]) == 0

    out = tmp_path / "scored"
    args = ["--model", str(tiny_model), "--out", str(out), "--config", str(config_file)]
    assert main(["score", str(video), *args, "--no-progress"]) == 0
    capsys.readouterr()

    stream_lines = [json.loads(line) for line in streamed.read_text().splitlines()]
    scored = read_outputs(out)
    assert scored["decisions"] == stream_lines  # every value and the key order
    assert [list(r) for r in scored["decisions"]] == [list(r) for r in stream_lines]
    assert len(stream_lines) == 60 and sum(r["decision"] == "flagged" for r in stream_lines) >= 2
    info = json.loads((out / "run.json").read_text())
    assert {(r["model_version"], r["model_hash"]) for r in stream_lines} == {
        ("test-1", info["model_sha256"])
    }

    sink = tmp_path / "vehicle-sink"
    with DurableOutbox(outbox) as store:
        assert Uploader(store, DirectorySink(sink)).drain() >= 2
    vehicle = read_outputs(out, sink=sink)
    assert vehicle["records"] == scored["records"] and vehicle["blobs"] == scored["blobs"]
