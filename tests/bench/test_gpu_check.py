"""bench/gpu_check.sh in CI: the GPU lane's script, run small with ``--device cpu``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("torch", reason="the GPU lane runs torch modules")


def test_gpu_check_runs_on_the_cpu_and_writes_its_figures(tmp_path):
    out = tmp_path / "figures" / "gpu_check.md"
    command = [
        "bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu", "--batches", "1", "2",
        "--size", "96x64", "--detector-width", "4", "--repeats", "2", "--warmup", "1",
        "--parity-frames", "3", "--frames", "synthetic", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard, not a speed check: the lane's timings live in bench/
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    assert "| eager | fp32 | 1 |" in text and "| eager | fp32 | 2 |" in text
    assert re.search(r"\| eager \| fp32 \| [0-9.e-]+ \| 100% \| ok \|", text), text
    raw = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    assert raw["device"] == "cpu" and raw["size"] == "96x64" and not raw["skipped"]
    assert [row["batch"] for row in raw["rows"]] == [1, 2]
    assert all(row["fps"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0 for row in raw["rows"])
    assert raw["parity"][0]["z_max_rel"] <= 1e-4
    assert raw["reference"].startswith("float64 Numba")
    assert raw["bytes_out_per_frame"] == 4 + 4 * 4 * 6  # z + ceil(64/16) x ceil(96/16) cells


def test_gpu_check_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--out", str(tmp_path / "x.md")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert done.returncode == 2 and "--device cpu" in done.stderr
    assert not (tmp_path / "x.md").exists()


def test_gpu_check_runs_every_file_that_holds_gpu_tests():
    """gpu_check.sh names the test files to collect (the others need dev extras that a
    GPU machine lacks); a gpu test added elsewhere would never run."""
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    holders = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        if re.search(r"^(@pytest\.mark\.gpu|pytestmark = .*\bgpu\b)", path.read_text(), re.M)
    ]
    assert holders
    for holder in holders:
        assert f'"$root/{holder}"' in script, holder
