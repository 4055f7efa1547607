#!/usr/bin/env bash
# The GPU lane, ready to run: the detector and the in-graph scorer as torch modules on
# CUDA (fp32, bf16/fp16 autocast, CUDA graphs; --compile adds torch.compile), batches
# 1-64 at 640x480 with double evaluation: frames/s, p50/p99 and z parity against the
# CPU path, all written to one Markdown file (--out, default gpu_check.md). Needs only
# PyTorch and NumPy; finishes in under 8 minutes (a hard stop at 300 s, and no new row
# after --budget-s, 250 s by default; all rows took 80 s on an H200). On CUDA it then
# runs the tests marked gpu (the trainer's CUDA path: the full recipe trains and
# evaluates there, and its checkpoint detects the same on the CPU), hard stop 150 s.
#
#   bash bench/gpu_check.sh                        # on a machine with an NVIDIA GPU
#   bash bench/gpu_check.sh --device cpu --batches 1 2 --size 128x96 --detector-width 4
#
# On a machine with PyTorch but not this checkout's .venv (a lent GPU machine), carry a
# wheel built here and put it on the path there (no dependency is fetched):
#
#   .venv/bin/pip wheel --no-deps --no-build-isolation -w .whl .          # here
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site bash bench/gpu_check.sh                           # there
#
# Python: $PYTHON, else the checkout's .venv, else python3. Exit status: 0 done,
# 1 fp32 z parity failed, 2 no CUDA device (or a usage error), 3 a gpu test failed,
# 124 a hard stop.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then
        python="$root/.venv/bin/python"
    else
        python="python3"
    fi
fi
status=0
timeout --signal=TERM --kill-after=10 300 "$python" "$here/gpu_check.py" "$@" || status=$?
if [[ $status -ne 0 || " $* " == *" --device cpu "* ]]; then
    exit "$status"
fi
# The files that hold tests marked gpu; collecting them needs no dev extras.
timeout --signal=TERM --kill-after=10 150 "$python" -m pytest -q -p no:cacheprovider -m gpu \
    -rs "$root/tests/trainer/test_training.py" "$root/tests/export/test_tensorrt.py" || {
    status=$?
    [[ $status -eq 124 ]] && exit 124
    exit 3
}
