#!/usr/bin/env bash
# The GPU lane, ready to run: the detector and the in-graph scorer as torch modules on
# CUDA (fp32, bf16/fp16 autocast, CUDA graphs; --compile adds torch.compile), batches
# 1-64 at 640x480 with double evaluation: frames/s, p50/p99 and z parity against the
# CPU path, all written to one Markdown file (--out, default gpu_check.md). Needs only
# PyTorch and NumPy; finishes in under 8 minutes (a hard stop at 470 s, and no new row
# after --budget-s, 400 s by default).
#
#   bash bench/gpu_check.sh                        # on a machine with an NVIDIA GPU
#   bash bench/gpu_check.sh --device cpu --batches 1 2 --size 128x96 --detector-width 4
#
# Python: $PYTHON, else the checkout's .venv, else python3. Exit status: 0 done,
# 1 fp32 z parity failed, 2 no CUDA device (or a usage error), 124 the hard stop.
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
exec timeout --signal=TERM --kill-after=10 470 "$python" "$here/gpu_check.py" "$@"
