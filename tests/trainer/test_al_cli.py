"""``alscout al run`` / ``alscout al summary`` through the real entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from alscout.apps.cli import main

TINY = Path(__file__).resolve().parents[2] / "configs/al/tiny.toml"


@pytest.mark.slow
def test_run_then_summary_then_pause(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["al", "run", "--config", str(TINY), "--out", str(out), "--methods", "random"]
    assert main([*args, "--cycles", "1"]) == 0
    assert f"summary {out / 'summary.md'}" in capsys.readouterr().out
    assert "| 1 |" in (out / "summary.md").read_text()
    (out / "summary.md").unlink()
    assert main(["al", "summary", "--config", str(TINY), "--out", str(out), "--methods", "random",
                 "--cycles", "1"]) == 0  # fmt: skip
    assert (out / "summary.md").is_file()
    summary = ["al", "summary", "--config", str(TINY), "--out", str(out), "--cycles", "1"]
    assert main([*summary, "--methods", "random", "--reference", "entropy"]) == 2
    assert "reference method 'entropy' is not one of ['random']" in capsys.readouterr().err
    # More cycles with a human labeler: the run stops with status 3 and says why.
    paused = tmp_path / "paused.toml"
    paused.write_text(TINY.read_text().replace("threads = 1", 'threads = 1\noracle = "files"'))
    code = main(["al", "run", "--config", str(paused), "--out", str(tmp_path / "p"),
                 "--methods", "random", "--cycles", "1"])  # fmt: skip
    assert code == 3
    assert "to_label.json" in capsys.readouterr().err


def test_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace('"guided_random"', '"psychic"'))
    assert main(["al", "run", "--config", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alscout al: ") and "bad.toml" in err and "methods" in err
    assert main(["al", "run", "--config", str(bad), "--cycles", "0", "--out", "x"]) == 2
