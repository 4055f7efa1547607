"""Compilation flags for every Numba kernel, kept in one place.

- ``fastmath`` leaves out ``nnan`` and ``ninf`` on purpose: the validation kernel tests
  for NaN, and those flags would let LLVM fold ``x != x`` to False.
- ``error_model="numpy"`` drops Python's zero-division checks, which would otherwise
  keep LLVM from vectorising any loop with a division in it.
- Kernels are cached on disk so a process pays the compile cost once per machine;
  ``ALSCOUT_NUMBA_CACHE=0`` turns that off.
"""

from __future__ import annotations

import os

from numba import njit

__all__ = ["FASTMATH", "kernel", "parallel_kernel", "checking_kernel"]

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_CACHE = os.environ.get("ALSCOUT_NUMBA_CACHE", "1") != "0"

#: Single-threaded building blocks, inlined into the parallel kernels by LLVM.
kernel = njit(cache=_CACHE, fastmath=FASTMATH, error_model="numpy", nogil=True)
#: Kernels that spread work over Numba's thread pool with ``prange``.
parallel_kernel = njit(
    cache=_CACHE, fastmath=FASTMATH, error_model="numpy", nogil=True, parallel=True
)
#: Input checks: strict IEEE semantics so NaN tests are not optimised away.
checking_kernel = njit(cache=_CACHE, nogil=True, parallel=True)
