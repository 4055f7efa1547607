"""Inference, Numba and worker threads sized together (runtime/threads.py)."""

from __future__ import annotations

import os
import threading

import numba
import pytest

from alscout.errors import ConfigError
from alscout.runtime.threads import (
    WORKERS,
    ThreadPlan,
    apply_numba_threads,
    available_cores,
    plan_threads,
)

NUMBA_MAX = int(numba.config.NUMBA_NUM_THREADS)


def test_available_cores_are_the_affinity_not_the_machine():
    assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cores", "intra_op"), [(1, 1), (2, 2), (3, 2), (4, 3), (16, 15)])
def test_inference_takes_every_core_up_to_two_then_leaves_one(cores, intra_op):
    plan = plan_threads(cores)
    assert (plan.cores, plan.intra_op, plan.workers) == (cores, intra_op, WORKERS)
    assert plan.numba == min(intra_op, NUMBA_MAX)  # never more than Numba launched
    assert f"cores={cores} intra_op={intra_op}" in plan.describe()


def test_threads_asked_for_set_inference_and_scoring_follows():
    plan = plan_threads(8, inference=1, workers=3)
    assert (plan.intra_op, plan.numba, plan.workers) == (1, 1, 3)
    assert "set to 1" in plan.reason


def test_the_default_is_this_machines_cores():
    assert plan_threads().cores == available_cores()


@pytest.mark.parametrize(
    "kwargs", [{"cores": 0}, {"cores": 2, "inference": -1}, {"cores": 2, "workers": 0}]
)
def test_bad_counts_are_refused(kwargs):
    with pytest.raises(ConfigError):
        plan_threads(**kwargs)


def test_numba_threads_are_set_for_the_calling_thread_only():
    plan = ThreadPlan(cores=NUMBA_MAX, intra_op=1, numba=1)
    before = numba.get_num_threads()
    seen: list[int] = []

    def worker() -> None:
        apply_numba_threads(plan)
        seen.append(numba.get_num_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [1]
    assert numba.get_num_threads() == before  # this thread kept its own setting
