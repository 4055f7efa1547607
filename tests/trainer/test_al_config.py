"""Experiment configuration: the shipped configs load, bad ones fail naming the problem."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from alscout.errors import ConfigError
from alscout.trainer.al.config import DataSpec, load_experiment

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[experiment]
name = "t"
out = "runs/t"
methods = ["divergence", "random"]
[data.initial]
synth = "stills"
count = 4
[data.pool]
annotations = "pets/gt.txt"
images = "pets/vtest.avi"
frames = [1, 600]
[data.test]
synth = "video"
count = 5
[train]
epochs = 7
[finetune]
epochs = 2
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_configs_load() -> None:
    ci = load_experiment(REPO / "configs/al/ci.toml")
    assert ci.methods[0] == "divergence" and "guided_random" in ci.methods
    assert ci.pool.synth == "video" and ci.initial.synth == "stills"
    pets = load_experiment(REPO / "configs/al/pets09_domain_shift.toml")
    assert pets.pool.annotations is not None and pets.pool.annotations.name == "gt.txt"
    assert pets.pool.frames is not None and pets.test.frames is not None
    assert pets.pool.frames[1] < pets.test.frames[0]  # the test part is held out


def test_paths_resolve_against_the_file_and_finetune_overrides_train(tmp_path: Path) -> None:
    config = load_experiment(_write(tmp_path, MINIMAL))
    assert config.out == (tmp_path / "runs/t").resolve()
    assert config.pool.annotations == (tmp_path / "pets/gt.txt").resolve()
    assert config.pool.frames == (1, 600)
    assert config.train.epochs == 7 and config.finetune.epochs == 2
    assert config.finetune.lr == config.train.lr
    other = load_experiment(_write(tmp_path, MINIMAL), out=tmp_path / "elsewhere")
    assert other.out == tmp_path / "elsewhere"
    assert other.digest() == config.digest()  # the out folder is not part of the digest
    assert replace(config, budget=11).digest() != config.digest()
    more = replace(config, seeds=(0, 1, 2), methods=("random",), cycles=9, threads=2)
    assert more.digest() == config.digest()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('methods = ["divergence", "random"]', 'methods = ["magic"]'), "methods"),
        (("[train]", "[trian]"), "unknown tables"),
        (("epochs = 2", "epochs = 2\nbogus = 1"), "bad value"),
        (("count = 4", "count = 0"), "count"),
        (("count = 5", "count = 5\ndomain_changes = { blur = 1 }"), "domain_changes"),
        (("count = 5", "count = 5\ndomain_changes = { blur_sigma = -1.0 }"), "blur_sigma"),
        (("frames = [1, 600]", "frames = [600, 1]"), "frames"),
        (('name = "t"', 'name = "t"\ncycles = 0'), "cycles"),
        (('[data.test]\nsynth = "video"\ncount = 5', ""), "data.test"),
    ],
)
def test_bad_configs_name_the_problem(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(_write(tmp_path, text))
    assert "exp.toml" in str(info.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="TOML"):
        load_experiment(_write(tmp_path, "[experiment\n"))


def test_data_spec_needs_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        DataSpec()
    with pytest.raises(ConfigError, match="exactly one"):
        DataSpec(synth="stills", count=3, annotations=Path("gt.txt"))


def test_the_quality_gate_changes_the_digest_only_when_on(tmp_path: Path) -> None:
    import hashlib
    import json
    from dataclasses import asdict

    config = load_experiment(_write(tmp_path, MINIMAL))
    # a run started before the gate existed resumes: the digest is the one without the key
    values = asdict(config)
    for key in ("out", "seeds", "methods", "cycles", "threads"):
        values.pop(key)
    values["scoring"].pop("quality_gate")
    values["detector"].pop("difficulty_head")  # a later field, left out alike when off
    text = json.dumps(values, sort_keys=True, default=str)
    assert config.digest() == hashlib.sha256(text.encode()).hexdigest()[:16]
    gated = replace(config, scoring=replace(config.scoring, quality_gate=True))
    assert gated.digest() != config.digest()


def test_the_difficulty_method_gives_the_detector_its_head(tmp_path: Path) -> None:
    """w_l (and so every finetune from it) gets the learned difficulty head when a method
    needs it; without such a method the digest is the one from before the head existed."""
    import hashlib
    import json
    from dataclasses import asdict

    config = load_experiment(_write(tmp_path, MINIMAL))
    assert not config.detector.difficulty_head
    values = asdict(config)
    for key in ("out", "seeds", "methods", "cycles", "threads"):
        values.pop(key)
    values["scoring"].pop("quality_gate")
    values["detector"].pop("difficulty_head")
    text = json.dumps(values, sort_keys=True, default=str)
    assert config.digest() == hashlib.sha256(text.encode()).hexdigest()[:16]
    text = MINIMAL.replace('methods = ["divergence", "random"]', 'methods = ["difficulty"]')
    learned = load_experiment(_write(tmp_path, text))
    assert learned.detector.difficulty_head and learned.digest() != config.digest()
    explicit = load_experiment(_write(tmp_path, MINIMAL + "[detector]\ndifficulty_head = true\n"))
    assert explicit.detector.difficulty_head and explicit.digest() == learned.digest()
