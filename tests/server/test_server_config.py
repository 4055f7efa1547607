"""ServerConfig validation and the TOML < environment < flags order."""

from __future__ import annotations

from pathlib import Path

import pytest

from alscout.errors import ConfigError
from alscout.server.config import ServerConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path):
    path = write(
        tmp_path,
        'model_path = "a.onnx"\nport = 7000\nworkers = 3\n'
        "[pipeline]\nradius = 4\ninput_size = [96, 128]\n"
        "[selector]\ndt = 3\nthreshold = 0.25\n",
    )
    env = {"ALSCOUT_SERVER_PORT": "7001", "ALSCOUT_SELECTOR_THRESHOLD": "adaptive",
           "ALSCOUT_PIPELINE_DOUBLE_EVALUATION": "false", "HOME": "/x"}  # fmt: skip
    config = load_config(path, env=env, overrides={"port": 7002, "selector.dt": None})
    assert config.model_path == Path("a.onnx")
    assert (config.port, config.workers) == (7002, 3)  # flag > env > file
    assert config.selector.threshold == "adaptive" and config.selector.dt == 3
    assert config.pipeline.radius == 4 and config.pipeline.input_size == (96, 128)
    assert config.pipeline.double_evaluation is False
    assert load_config(path).port == 7000


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"ALSCOUT_SERVER_PROT": "1"}, "ALSCOUT_SERVER_PROT"),
        ({"ALSCOUT_SERVER_PORT": "70000"}, "port"),
        ({"ALSCOUT_SERVER_BACKEND": "cuda9"}, "backend"),
        ({"ALSCOUT_SELECTOR_SIGMA": "0"}, "sigma"),
        ({"ALSCOUT_PIPELINE_RADIUS": "-1"}, "radius"),
        ({"ALSCOUT_SERVER_WORKERS": "two"}, "workers"),
    ],
)
def test_bad_values_name_the_setting(env, words):
    with pytest.raises(ConfigError, match=words):
        load_config(env=env, overrides={"model_path": "m.onnx"})


def test_model_path_is_required_and_bad_files_name_themselves(tmp_path):
    with pytest.raises(ConfigError, match="model_path"):
        load_config()
    with pytest.raises(ConfigError, match=r"serve\.toml"):
        load_config(write(tmp_path, "port = = 1"))
    with pytest.raises(ConfigError, match=r"serve\.toml"):
        load_config(write(tmp_path, "colour = 1"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(overrides={"model_path": "m.onnx", "trainer.lr": 1})


def test_config_is_frozen():
    config = ServerConfig(model_path="m.onnx")
    assert config.address == "127.0.0.1:50051"
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_delay_ms": -1}, "max_delay_ms"),
        ({"max_queue": 2}, "max_queue"),  # smaller than the pipeline's batch of 8
        ({"max_inflight": 0}, "max_inflight"),
        ({"queue_wait_ms": "soon"}, "queue_wait_ms"),
        ({"idle_timeout_s": 0}, "idle_timeout_s"),
        ({"resume_window_s": -1}, "resume_window_s"),
        ({"context_frames": 5000}, "context_frames"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"tls_cert_file": "c.pem"}, "tls_key_file"),
        ({"tls_client_ca_file": "ca.pem"}, "tls_client_ca_file"),
        ({"registry_poll_s": 0}, "registry_poll_s"),
        ({"outbox_quota_bytes": 0}, "outbox_quota_bytes"),
    ],
)
def test_serving_settings_are_validated(overrides, words):
    with pytest.raises(ConfigError, match=words):
        load_config(overrides={"model_path": "m.onnx", **overrides})


def test_serving_settings_from_file_and_environment(tmp_path):
    path = write(
        tmp_path,
        'model_path = "m.onnx"\nmax_batch = 16\nmax_queue = 64\nmetrics_port = 9100\n'
        'model_registry = "/srv/models"\ntls_cert_file = "s.crt"\ntls_key_file = "s.key"\n',
    )
    env = {"ALSCOUT_SERVER_RESUME_WINDOW_S": "5", "ALSCOUT_SERVER_METRICS_PORT": "none"}
    config = load_config(path, env=env, overrides={"context_frames": 3})
    assert (config.max_batch, config.max_queue, config.context_frames) == (16, 64, 3)
    assert config.resume_window_s == 5 and config.metrics_port is None
    assert config.model_registry == Path("/srv/models")
    assert (config.tls_cert_file, config.tls_key_file) == (Path("s.crt"), Path("s.key"))
