"""The server sizes inference, Numba and its workers with one plan (runtime/threads.py)."""

from __future__ import annotations

import numba
from server_harness import make_config

from alscout.runtime.threads import plan_threads


def test_the_server_threads_follow_the_plan(harness, tiny_model):
    plan = plan_threads()
    scoring, _ = harness.start(make_config(tiny_model, threads=0, workers=2))
    try:
        backend = scoring.service.models.pipeline.backend
        assert backend.options.intra_op_threads == plan.intra_op
        in_workers = {scoring.executor.submit(numba.get_num_threads).result() for _ in range(4)}
        assert in_workers == {plan.numba}
    finally:
        harness.stop(scoring)


def test_threads_set_for_inference_also_bound_scoring(harness, tiny_model):
    scoring, _ = harness.start(make_config(tiny_model, threads=1))
    try:
        assert scoring.service.models.pipeline.backend.options.intra_op_threads == 1
        assert scoring.executor.submit(numba.get_num_threads).result() == 1
    finally:
        harness.stop(scoring)
