"""``alscout serve --model-registry DIR`` without ``--model``: the newest version, or why not."""

from __future__ import annotations

import pytest

from alscout.apps.cli import main
from alscout.errors import ConfigError
from alscout.runtime.model_registry import ModelRegistry
from alscout.server.config import load_config


def test_the_registry_s_newest_version_is_the_model(tiny_model, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(tiny_model, metrics={})
    newest = registry.publish(tiny_model, metrics={"mr": 0.3})
    config = load_config(overrides={"model_registry": registry.root})
    assert config.model_path == newest.path and newest.version == "v000002"
    assert config.model_registry == registry.root


def test_an_explicit_model_wins_over_the_registry(tiny_model, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    registry.publish(tiny_model, metrics={})
    config = load_config(overrides={"model_registry": registry.root, "model_path": tiny_model})
    assert config.model_path == tiny_model


def test_missing_model_options_are_named(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"pass --model PATH .* or --model-registry DIR"):
        load_config(overrides={})
    empty = tmp_path / "models"
    with pytest.raises(ConfigError, match="holds no model version yet"):
        load_config(overrides={"model_registry": empty})
    assert main(["serve", "--model-registry", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"alscout serve: --model-registry {empty} holds no model version yet: publish one "
        "(alscout fleet publish) or pass --model PATH"
    ]
