"""Compilation flags for every Numba kernel, kept in one place.

- ``fastmath`` leaves out ``nnan`` and ``ninf`` on purpose: the validation kernel tests
  for NaN, and those flags would let LLVM fold ``x != x`` to False.
- ``error_model="numpy"`` drops Python's zero-division checks, which would otherwise
  keep LLVM from vectorising any loop with a division in it.
- ``float_bits``/``bits_float`` reinterpret a float64 as int64 and back, which Numba
  has no scalar operation for; the in-kernel logarithm needs them.
- Kernels are cached on disk so a process pays the compile cost once per machine;
  ``ALSCOUT_NUMBA_CACHE=0`` turns that off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import cast

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic

__all__ = ["FASTMATH", "kernel", "parallel_kernel", "checking_kernel", "float_bits", "bits_float"]

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


@intrinsic
def _float_bits(typingctx, value):
    """The IEEE-754 bits of a float64 as an int64 (LLVM ``bitcast``: free, vectorises)."""
    signature = types.int64(types.float64)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return signature, codegen


@intrinsic
def _bits_float(typingctx, bits):
    """The float64 whose IEEE-754 bits are the int64 ``bits``."""
    signature = types.float64(types.int64)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return signature, codegen


def _float_bits_py(value: float) -> int:
    return int(np.float64(value).view(np.int64))


def _bits_float_py(bits: int) -> float:
    return float(np.int64(bits).view(np.float64))


# numba.config sets its flags at import time through globals(): mypy cannot see them.
_DISABLE_JIT = bool(config.DISABLE_JIT)  # type: ignore[attr-defined]
# With NUMBA_DISABLE_JIT=1 the kernels run as Python, where intrinsics cannot. Inside a
# kernel an intrinsic takes the arguments after ``typingctx``; numba's stubs type a call
# as the definition's (and as always raising), hence the kernel-side signatures here.
float_bits: Callable[[float], int] = (
    _float_bits_py if _DISABLE_JIT else cast("Callable[[float], int]", _float_bits)
)
bits_float: Callable[[int], float] = (
    _bits_float_py if _DISABLE_JIT else cast("Callable[[int], float]", _bits_float)
)
