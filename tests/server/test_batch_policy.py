"""The batch policy per backend (server/batch_policy.py) and how the server applies it."""

from __future__ import annotations

import logging

import pytest
from server_harness import make_config

from alscout.errors import ConfigError
from alscout.server.batch_policy import (
    DEFAULT_MAX_DELAY_MS,
    DEVICE_POLICIES,
    best_batch,
    choose_batch_policy,
    device_kind,
)


@pytest.mark.parametrize(
    ("backend", "kind"),
    [
        ("onnxruntime-cpu", "cpu"),
        ("torch", "cpu"),
        ("onnxruntime-cuda", "gpu"),
        ("onnxruntime-tensorrt", "gpu"),
        ("tensorrt", "gpu"),
    ],
)
def test_every_backend_has_a_device_kind(backend, kind):
    assert device_kind(backend) == kind


def test_unset_settings_take_the_policy_of_the_device(caplog):
    with caplog.at_level(logging.INFO, logger="alscout.server.batch_policy"):
        cpu = choose_batch_policy("onnxruntime-cpu")
        gpu = choose_batch_policy("tensorrt")
    assert (cpu.max_batch, cpu.max_delay_ms) == (1, 0.0)
    assert (gpu.max_batch, gpu.max_delay_ms) == (8, DEFAULT_MAX_DELAY_MS)
    assert gpu.max_batch > cpu.max_batch
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2
    assert "backend=onnxruntime-cpu max_batch=1 max_delay_ms=0" in logged[0]
    assert "from the cpu policy" in logged[0] and DEVICE_POLICIES["cpu"].reason in logged[0]


def test_the_servers_settings_override_the_policy():
    batch = choose_batch_policy("onnxruntime-cpu", max_batch=6)
    assert (batch.max_batch, batch.max_delay_ms) == (6, DEFAULT_MAX_DELAY_MS)
    assert "max_batch=6 configured (the cpu policy says 1)" in batch.reason
    delay = choose_batch_policy("onnxruntime-cuda", max_delay_ms=20.0)
    assert (delay.max_batch, delay.max_delay_ms) == (8, 20.0)
    assert "max_delay_ms=20 configured" in delay.reason
    both = choose_batch_policy("tensorrt", max_batch=2, max_delay_ms=0.0)
    assert (both.max_batch, both.max_delay_ms) == (2, 0.0)


def test_an_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match="no batch policy for backend 'tpu'"):
        choose_batch_policy("tpu")


@pytest.mark.parametrize(
    ("fps", "chosen"),
    [
        ({1: 10.0, 8: 6.5}, 1),  # the CPU figures: batch 8 is slower per frame
        ({1: 10.0, 8: 10.9}, 1),  # 9 % more is not worth the wait
        ({1: 10.0, 8: 11.5}, 8),
        ({1: 10.0, 2: 12.0, 8: 13.0}, 2),  # 8 is within 10 % of 2
        ({1: 10.0, 2: 12.0, 8: 40.0}, 8),  # a GPU's curve
        ({4: 3.0}, 4),
    ],
)
def test_best_batch_takes_a_larger_batch_only_for_clearly_more_frames(fps, chosen):
    assert best_batch(fps) == chosen


def test_best_batch_needs_measurements():
    with pytest.raises(ConfigError):
        best_batch({})
    with pytest.raises(ConfigError):
        best_batch({1: 0.0})


def test_the_server_batches_by_its_backends_policy_unless_told(harness, tiny_model):
    scoring, _ = harness.start(make_config(tiny_model))
    try:
        batcher = scoring.service.batcher
        assert (batcher.max_batch, batcher.max_delay_s) == (1, 0.0)
    finally:
        harness.stop(scoring)
    scoring, _ = harness.start(make_config(tiny_model, max_batch=4, max_delay_ms=30))
    try:
        batcher = scoring.service.batcher
        assert (batcher.max_batch, batcher.max_delay_s) == (4, pytest.approx(0.03))
    finally:
        harness.stop(scoring)
