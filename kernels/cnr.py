"""MKL's strict conditional numerical reproducibility (CNR) mode, switched on when `kernels` is imported.

In strict CNR mode MKL's sgemm computes every output with one fixed K order whatever the row count,
the column count, the batch count or the number of threads (measured on AVX-512 and on MKL's AVX2
path for M = 1 .. 4608: tests/test_kernels_ops.py). Without it MKL switches algorithms with M
(gemv, small-matrix kernels, thread splits), at sizes that differ between ISAs. The mode is
process-wide and MKL accepts it only before its first computation, so `kernels/__init__` calls
`enable()` at import; `strict()` says whether it took (batch_invariant falls back to padding rows).
Set KERNELS_MKL_STRICT=0 to leave MKL as it is.

Strict CNR is documented by Intel for Intel processors only. On AMD (measured on an EPYC, AVX2) MKL
reports the mode as set, yet a gemm of 1-3 rows or fewer than 12 columns runs other kernels, and with
two threads small problems split differently. So the batch-invariant path does not lean on the mode:
it pads gemms to a fixed shape class (kernels.batch_invariant) and runs MKL with one thread on the
calling thread (`pin_one_thread`, MKL's thread-local setting), which is what makes a row's K order the
same on both CPUs; kernels.probe checks that on the running CPU at start-up.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import torch

_AUTO = 2  # MKL_CBWR_AUTO: the best code path this CPU supports
_STRICT = 0x10000  # MKL_CBWR_STRICT
_ALL = 0xFFFFFFFF  # MKL_CBWR_ALL (~0): ask for the whole setting
_state: dict[str, object] = {}


def _mkl() -> ctypes.CDLL | None:
    if not torch.backends.mkl.is_available():
        return None
    lib_dir = Path(torch.__file__).parent / "lib"
    for name in ("libtorch_cpu.so", "libmkl_rt.so.2", "libmkl_rt.so"):
        path = lib_dir / name
        try:
            lib = ctypes.CDLL(str(path) if path.exists() else name)
        except OSError:
            continue
        for getter, setter in (("mkl_serv_cbwr_get", "mkl_serv_cbwr_set"), ("mkl_cbwr_get", "mkl_cbwr_set")):
            if hasattr(lib, getter) and hasattr(lib, setter):
                return lib
    return None


def _fn(lib: ctypes.CDLL, name: str):
    return getattr(lib, f"mkl_serv_{name}", None) or getattr(lib, f"mkl_{name}")


def enable() -> bool:
    """Put MKL in strict CNR mode if it is not yet computing; True when the mode is (now) active."""
    if "strict" in _state:
        return bool(_state["strict"])
    strict = False
    if os.environ.get("KERNELS_MKL_STRICT", "1") != "0":
        os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # child processes start in the mode too
        lib = _mkl()
        if lib is not None:
            get, set_ = _fn(lib, "cbwr_get"), _fn(lib, "cbwr_set")
            if not int(get(_ALL)) & _STRICT:
                set_(_AUTO | _STRICT)  # fails (-8) once MKL has computed: then the mode stays as it is
            strict = bool(int(get(_ALL)) & _STRICT)
    _state["strict"] = strict
    return strict


_local = threading.local()


def _threads_fn():
    if "local_fn" not in _state:
        lib = _mkl()
        # the C API; the lowercase mkl_set_num_threads_local is the Fortran one (takes a pointer)
        _state["local_fn"] = None if lib is None else getattr(lib, "MKL_Set_Num_Threads_Local", None)
    return _state["local_fn"]


def set_local_threads(n: int) -> int:
    """MKL's thread count for the calling thread only (0: back to the process-wide count); returns the
    previous thread-local value. A no-op returning 0 without MKL."""
    fn = _threads_fn()
    if fn is None:
        return 0
    _local.pinned = n == 1
    return int(fn(ctypes.c_int(n)))


def pinned() -> bool:
    """Whether this thread's MKL calls run on one thread (pin_one_thread)."""
    return bool(getattr(_local, "pinned", False))


def pin_one_thread() -> None:
    """Run this thread's MKL calls on one thread from now on (once per thread; cheap to call again)."""
    if not getattr(_local, "pinned", False):
        set_local_threads(1)


def strict() -> bool:
    """Whether MKL runs in strict CNR mode in this process."""
    return enable() if "strict" not in _state else bool(_state["strict"])
