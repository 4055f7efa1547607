"""``alscout stream``: sources to a real server, decisions as JSON lines, one-line errors."""

from __future__ import annotations

import json
import socket

import cv2
import numpy as np
import pytest
from server_harness import SELECTOR, video_frames
from test_security import TOKEN, SecureServer, make_pki
from test_sources import raw_message, write_mcap, write_video

from alscout.apps.cli import main
from alscout.runtime.temporal import flag_recording
from alscout.server.cli_stream import default_ids
from alscout.server.security import TLSConfig


def stream(*args: str) -> int:
    return main(["stream", "--no-progress", *args])


def read_decisions(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def offline(records: list[dict]):
    """The offline driver over the streamed z: the decisions the server must have made."""
    z = [r["z"] for r in records]
    return flag_recording(z, SELECTOR)


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    for i, data in enumerate(video_frames(30, seed=5)):
        (folder / f"img{i}.jpg").write_bytes(data)
    return folder


def test_default_ids_are_valid_ids():
    assert default_ids("/data/drive 01.avi", None) == ("drive_01", "cam0")
    assert default_ids("runs/rec.mcap", "/cam/front/image_raw") == ("rec", "cam_front_image_raw")
    assert default_ids("rtsp://10.0.0.2:554/live", None) == ("live", "cam0")
    assert default_ids("0", None) == ("0", "cam0")


def test_folder_streams_to_decisions_file_and_summary(served, frames_dir, tmp_path, capsys):
    out = tmp_path / "out" / "decisions.jsonl"
    code = stream(
        str(frames_dir),
        *("--server", f"127.0.0.1:{served[0]}", "--out", str(out)),
        *("--recording-id", "drive-7", "--camera-id", "front"),
    )
    assert code == 0
    records = read_decisions(out)
    assert [r["frame_index"] for r in records] == list(range(30))  # each frame exactly once
    assert {(r["recording_id"], r["camera_id"]) for r in records} == {("drive-7", "front")}
    expected = offline(records)
    assert [r["decision"] == "flagged" for r in records] == [d.flagged for d in expected]
    assert [r["reason"] for r in records] == [str(d.reason) for d in expected]
    assert sum(r["decision"] == "flagged" for r in records) >= 1
    assert all(r["threshold"] == 0.0 for r in records)
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    flagged = sum(r["decision"] == "flagged" for r in records)
    assert summary.startswith(f"drive-7/front: 30 frames, 30 decided, {flagged} flagged")
    assert "tiny-detector" in summary and str(out) in summary


def test_video_with_frame_limit_and_rate_limit_to_stdout(served, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    write_video(video, 12)
    code = stream(
        str(video), "--server", f"127.0.0.1:{served[0]}", "--out", "-", "--max-frames", "8",
        "--fps-limit", "200",
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["frame_index"] for r in records] == list(range(8))
    assert {(r["recording_id"], r["camera_id"]) for r in records} == {("clip", "cam0")}
    assert "clip/cam0: 8 frames, 8 decided" in captured.err


def test_mcap_topic_names_the_camera(served, tmp_path):
    rng = np.random.default_rng(3)
    images = [
        cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 48)) for _ in range(9)
    ]
    path = write_mcap(
        tmp_path / "bag.mcap",
        [
            ("/cam/left", "image", raw_message(img, "rgb8", 1000 + i), i)
            for i, img in enumerate(images)
        ],
    )
    out = tmp_path / "d.jsonl"
    assert stream(str(path), "--server", f"127.0.0.1:{served[0]}", "--out", str(out)) == 0
    records = read_decisions(out)
    assert len(records) == 9 and records[0]["camera_id"] == "cam_left"
    assert records[0]["recording_id"] == "bag"


def test_errors_end_in_one_line_and_a_nonzero_status(served, tmp_path, capsys):
    assert stream(str(tmp_path / "nope.avi"), "--server", f"127.0.0.1:{served[0]}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.avi: no such file or folder" in err[0]

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(video_frames(1)[0])
    code = stream(str(folder), "--server", f"127.0.0.1:{port}", "--retries", "0",
                  "--out", str(tmp_path / "x.jsonl"))  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"server 127.0.0.1:{port}: UNAVAILABLE" in err[0]

    assert stream(str(folder), "--tls-cert", "c.pem", "--tls-key", "k.pem") == 2
    assert "need --tls-ca" in capsys.readouterr().err


def test_mutual_tls_and_token_from_the_command_line(harness, tiny_model, tmp_path, capsys):
    pki = make_pki(tmp_path / "pki")
    tls = TLSConfig(pki.server_cert, pki.server_key, pki.ca)
    server = SecureServer(harness, tiny_model, tls, TOKEN)
    try:
        folder = tmp_path / "frames"
        folder.mkdir()
        for i, data in enumerate(video_frames(6, seed=2)):
            (folder / f"{i}.jpg").write_bytes(data)
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        out = tmp_path / "d.jsonl"
        common = [str(folder), "--server", server.target, "--out", str(out), "--retries", "0"]
        tls_args = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert)]
        tls_args += ["--tls-key", str(pki.client_key)]
        assert stream(*common, *tls_args, "--token-file", str(token_file)) == 0
        assert len(read_decisions(out)) == 6
        capsys.readouterr()
        assert stream(*common, *tls_args) == 2
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert stream(*common, "--tls-ca", str(pki.ca), "--token-file", str(token_file)) == 2
        assert "UNAVAILABLE" in capsys.readouterr().err  # no client certificate
    finally:
        server.close()
