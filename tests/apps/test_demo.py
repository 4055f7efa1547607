"""``alscout demo``: the reduced demo end to end, and the errors a user can make."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from alscout.apps import cli, demo
from alscout.errors import CapacityError, ConfigError, DataError

ALSCOUT = [sys.executable, "-m", "alscout.apps.cli"]


def _alscout(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ALSCOUT, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One ``alscout demo --quick`` run, shared by the tests that read its outputs."""
    workdir = tmp_path_factory.mktemp("demo")
    return workdir, _alscout("demo", "--quick", "--workdir", str(workdir))


@pytest.mark.slow
def test_quick_demo_runs_every_step(quick_run):
    workdir, result = quick_run
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = workdir / "run"
    assert result.stdout.strip().splitlines()[-1].endswith((run_dir / "report.html").as_uri())
    info = json.loads((run_dir / "run.json").read_text())
    names = [step["name"] for step in info["steps"]]
    assert names == [
        "synthetic source data",
        "train",
        "export",
        "synthetic target-domain video",
        "stream",
        "serve (start to stop)",
        "upload",
    ]
    assert all(step["cpu_s"] > 0 for step in info["steps"])
    # progress of the stream was visible (tqdm on stderr) and each step was announced
    assert "==> stream: alscout stream" in result.stderr and "frame/s" in result.stderr
    decisions = [json.loads(line) for line in (run_dir / "decisions.jsonl").open()]
    assert [d["frame_index"] for d in decisions] == list(range(demo.PROFILES["quick"].video_frames))
    flagged = {d["frame_index"] for d in decisions if d["decision"] == "flagged"}
    assert flagged, "the quick demo should flag at least one frame"
    uploaded = sorted((run_dir / "uploads" / "frames" / "demo" / "cam0").glob("*.json"))
    assert {int(p.stem) for p in uploaded} == flagged
    assert all("heatmap" in json.loads(p.read_text())["keys"] for p in uploaded)
    page = (run_dir / "report.html").read_text()
    assert page.count("<figure class='flagged'>") == len(flagged)
    assert "no heat map stored" not in page and "server latency, total" in page
    assert "alscout fleet ingest --pool" in page


@pytest.mark.slow
def test_demo_scores_a_given_video_with_the_trained_model(quick_run, tmp_path):
    workdir, first = quick_run
    assert first.returncode == 0, first.stderr[-3000:]
    video = tmp_path / "my drive.avi"
    video.write_bytes((workdir / "target-quick" / "video.avi").read_bytes())
    result = _alscout("demo", "--quick", "--workdir", str(workdir), "--video", str(video))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reusing the model trained earlier" in result.stderr
    assert "==> train" not in result.stderr
    decisions = (workdir / "run" / "decisions.jsonl").read_text().splitlines()
    assert json.loads(decisions[0])["recording_id"] == "my_drive"
    assert (workdir / "run" / "report.html").is_file()


# ------------------------------------------------------------------------- user errors


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("alscout demo: ")
    return err[0]


def test_missing_video_is_one_line_and_exit_2_without_a_traceback(tmp_path):
    result = _alscout("demo", "--video", str(tmp_path / "nope.mp4"), "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"alscout demo: {tmp_path / 'nope.mp4'}: no such video file"
    assert not (tmp_path / "model-full").exists()  # nothing slow started


def test_unreadable_video(tmp_path, capsys):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00not a video" * 100)
    assert cli.main(["demo", "--video", str(video), "--workdir", str(tmp_path)]) == 2
    assert "OpenCV cannot read a frame" in _one_line_error(capsys)


def test_a_real_video_is_accepted(pets_video):
    assert demo.check_video(pets_video) == (795, 480, 360)


def test_a_folder_is_not_a_video(tmp_path):
    with pytest.raises(DataError, match="not a file"):
        demo.check_video(tmp_path)


def test_port_in_use(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["demo", "--port", str(port), "--workdir", str(tmp_path)]) == 2
    line = _one_line_error(capsys)
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port 0" in line
    assert not (tmp_path / "model-full").exists()


def test_free_port_is_picked_when_port_is_0():
    port = demo.check_port(0)
    assert 0 < port < 65536
    demo.check_port(port)  # and it is free


def test_no_disk_space_for_the_outbox(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(demo.shutil, "disk_usage", lambda _: usage(10 * 2**30, 0, 5 * 2**20))
    assert cli.main(["demo", "--workdir", str(tmp_path)]) == 2
    line = _one_line_error(capsys)
    assert "only 5 MB free" in line and "--workdir" in line
    with pytest.raises(CapacityError):
        demo.check_disk(tmp_path, 6)
    assert demo.check_disk(tmp_path, 5) == 5


def test_disk_full_during_the_run_is_one_line(tmp_path, monkeypatch, capsys):
    def fail(config):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(demo, "run_demo", fail)
    assert cli.main(["demo", "--workdir", str(tmp_path)]) == 2
    assert "no space left on the disk" in _one_line_error(capsys)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="--port"):
        demo.DemoConfig(workdir=Path("w"), port=70000)
    with pytest.raises(ConfigError, match="--fps-limit"):
        demo.DemoConfig(workdir=Path("w"), fps_limit=0)


def test_server_that_cannot_start_is_one_line(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not an onnx model")
    config = tmp_path / "serve.toml"
    config.write_text(demo.serve_config(model, tmp_path / "outbox", demo.check_port(0), 0, 8))
    with (
        pytest.raises(demo.StepFailedError, match=r"alscout serve did not start: .*model"),
        demo.ServerProcess(config, tmp_path / "serve.log", 1),
    ):
        pass


def test_serve_config_is_a_valid_server_config(tmp_path):
    import tomllib

    from alscout.server.config import load_config

    text = demo.serve_config(tmp_path / "m.onnx", tmp_path / "outbox", 5555, 5556, 64)
    (tmp_path / "serve.toml").write_text(text)
    config = load_config(tmp_path / "serve.toml")
    assert (config.host, config.port, config.outbox_dir) == ("127.0.0.1", 5555, tmp_path / "outbox")
    assert tomllib.loads(text)["model_path"] == str(tmp_path / "m.onnx")


def test_next_commands_name_the_run_paths(tmp_path):
    commands = demo.next_commands(
        tmp_path, "rec", tmp_path / "up", tmp_path / "m" / "train" / "last.pt", None
    )
    text = "\n".join(command for _, command in commands)
    assert f"alscout fleet ingest --pool {tmp_path / 'fleet' / 'pool'} {tmp_path / 'up'}" in text
    assert "fleet oracle" not in text  # only with synthetic ground truth
    assert f"--base-data {tmp_path / 'm' / 'source' / 'annotations.json'}" in text


# ------------------------------------------------------------------------- the docs

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_reference_names_every_setting():
    import dataclasses

    from alscout.runtime.pipeline import PipelineConfig
    from alscout.runtime.temporal import SelectorConfig
    from alscout.server.config import ServerConfig
    from alscout.server.uploader import UploaderConfig

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for cls in (ServerConfig, PipelineConfig, SelectorConfig, UploaderConfig):
        for f in dataclasses.fields(cls):
            if f.name not in ("pipeline", "selector"):
                assert f"`{f.name}`" in text, f"{cls.__name__}.{f.name} missing"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> '-'."""
    kept = "".join(c for c in heading.strip().lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


@pytest.mark.parametrize("page", ["design.md", "dataflow.md", "deployment.md", "configuration.md"])
def test_links_of_the_docs_pages_resolve(page):
    import re

    text = (DOCS / page).read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text)
    assert links
    for target, anchor in links:
        if target.startswith("http"):
            continue
        path = DOCS / (target or page)
        assert path.is_file(), f"{page}: link to missing {target}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{page}: no #{anchor} in {path.name}"
