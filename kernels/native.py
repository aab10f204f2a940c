"""Fixed-order rows: the deterministic linear for 1-3 rows at gemv speed instead of a padded gemm; and
the build of the project's C kernels (fixed_rows.c here, split_attention.c for kernels.fused_attention).

A decode step runs every linear on one row. MKL serves a lone row with gemv (its own K order), so
kernels.batch_invariant pads it to the 4-row gemm whose rows agree with any bigger gemm; that costs
about twice the gemv (MKL packs the weight on every call). This module computes those rows with
kernels/fixed_rows.c instead: each output is reduced in one order fixed there (K blocks, k-sequential
fused multiply-adds inside a block, block sums in order; vector lanes across outputs, never across
k). With the block length MKL's AVX2 sgemm uses, that order is the one MKL gives every row of a
gemm of >= 4 rows on this project's AMD EPYC, so the rows equal the padded gemm's bit for bit.

Contract:
  rows(x[M, K], weight[N, K], bias[N] | None) -> [M, N] | None
      None when the path does not apply (disabled, no compiler or no AVX2/FMA, grad mode, a dtype
      other than float32, or this (K, N) failed its check), and the caller runs the padded gemm.
  The first call for a (K, N, bias) checks the path on seeded random rows against the padded gemm
  (`kernels.batch_invariant.linear` on 4+ rows) and uses it only when every output has the same bits;
  an order that differs on some CPU is seen there, logged once, and never used for that shape.

The library is compiled from both files on first use (cc -O3 -mavx2 -mfma -ffp-contract=off, about
1 s) into ~/.cache/interplay/kernels (KERNELS_NATIVE_DIR), under a name hashing the source and flags;
KERNELS_NATIVE=0 turns the path off. W^T is kept per weight tensor (refreshed when the tensor's
version counter moves: an optimizer step), about the size of the model's linear weights.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCES = (Path(__file__).with_name("fixed_rows.c"), Path(__file__).with_name("split_attention.c"))
FLAGS = ("-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC")
KC = 192  # the K block MKL's AVX2 sgemm uses on this project's AMD EPYC (fixed_rows.c: block_len)
MAX_ROWS = 3  # rows 1-3 are the ones MKL would not run through the >= 4-row gemm

_lock = threading.Lock()
_state: dict[str, object] = {}
_checked: dict[tuple[int, int, bool], bool] = {}
_transposed: dict[int, tuple] = {}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _build() -> ctypes.CDLL | None:
    if os.environ.get("KERNELS_NATIVE", "1") == "0":
        _state["why"] = "off (KERNELS_NATIVE=0)"
        return None
    if not {"avx2", "fma"} <= _cpu_flags():
        _state["why"] = "this CPU lacks AVX2/FMA"
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        _state["why"] = "no C compiler (cc) on PATH"
        return None
    src = b"".join(p.read_bytes() for p in SOURCES)
    tag = hashlib.sha256(src + " ".join(FLAGS).encode() + cc.encode()).hexdigest()[:16]
    folder = Path(os.environ.get("KERNELS_NATIVE_DIR") or Path.home() / ".cache" / "interplay" / "kernels")
    lib = folder / f"fixed_rows-{tag}.so"
    if not lib.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        try:
            done = subprocess.run([cc, *FLAGS, "-o", tmp, *map(str, SOURCES), "-lm"], capture_output=True,
                                  text=True, timeout=120)
            if done.returncode != 0:
                _state["why"] = f"compiling kernels/*.c failed: {done.stderr.strip()[:300]}"
                return None
            os.replace(tmp, lib)  # atomic: a process that loses the race loads the winner's file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    dll = ctypes.CDLL(str(lib))
    fn = dll.fixed_rows
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ptr, i64, i64, i64, ptr, i64, ptr, ptr, i64, i64]
    fn.restype = None
    dll.split_attention.argtypes = [ptr, i64, i64, ptr, ptr, i64, ptr, i64, i64, ptr, i64, ptr, i64, ptr, ptr, i64, ptr]
    dll.split_attention.restype = None
    _state["why"] = f"on ({lib})"
    return dll


def library() -> ctypes.CDLL | None:
    """The compiled library, built on first call; None when unavailable (`why()` says why)."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                try:
                    _state["lib"] = _build()
                except (OSError, subprocess.SubprocessError) as e:
                    _state["why"] = f"unavailable: {e}"
                    _state["lib"] = None
    return _state["lib"]  # type: ignore[return-value]


def why() -> str:
    library()
    return str(_state.get("why", ""))


def _entry(weight: torch.Tensor) -> tuple:
    """W^T [K, N] of a linear weight [N, K], cached (see _cached)."""
    return _cached((weight,), lambda w: w.t())


def _stamp(ws: tuple[torch.Tensor, ...]) -> list:
    """What moves when a tensor changes: its storage and (outside inference mode) its version counter."""
    return [(w.data_ptr(), -1 if w.is_inference() else w._version) for w in ws]


def _cached(ws: tuple[torch.Tensor, ...], make) -> tuple:
    """(ws, stamp, make(*ws) contiguous, its data pointer), kept while the tensors are alive and unchanged
    (an optimizer step moves a version counter). The entry holds ws, so their ids stay theirs."""
    tag = tuple(map(id, ws))
    stamp = _stamp(ws)
    hit = _transposed.get(tag)
    if hit is None or hit[1] != stamp:
        if len(_transposed) > 512:
            _transposed.clear()
        with torch.inference_mode(False), torch.no_grad():
            wt = make(*(w.detach() for w in ws)).contiguous()
        hit = _transposed[tag] = (ws, stamp, wt, wt.data_ptr())
    return hit


def _shape_ok(k: int, n: int, with_bias: bool) -> bool:
    """Whether (K, N, bias) passed its check against the padded gemm (run once per process and shape)."""
    ok = _checked.get((k, n, with_bias))
    if ok is None:
        ok = _checked[(k, n, with_bias)] = _check(k, n, with_bias)
    return ok


def run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kc: int | None = None) -> torch.Tensor:
    """The fixed-order rows, unchecked: x [M, K] float32, weight [N, K], bias [N] | None -> [M, N] (kc: KC)."""
    lib = _state.get("lib") or library()
    if lib is None:
        raise RuntimeError(f"kernels.native is not available: {why()}")
    m, k = x.shape
    n = weight.shape[0]
    if x.stride(1) != 1:
        x = x.contiguous()
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()
    out = torch.empty(m, n, dtype=torch.float32)
    lib.fixed_rows(x.data_ptr(), m, k, x.stride(0), _entry(weight)[3], n, None if bias is None else bias.data_ptr(),
                   out.data_ptr(), n, KC if kc is None else kc)
    return out


def _check(k: int, n: int, with_bias: bool) -> bool:
    from kernels import batch_invariant as bi

    g = torch.Generator().manual_seed(k * 7919 + n * 31 + int(with_bias))
    x, w = torch.randn(8, k, generator=g), torch.randn(n, k, generator=g)
    b = torch.randn(n, generator=g) if with_bias else None
    with torch.no_grad():
        ref = bi.padded_gemm(x, w, b)  # 8 rows: the >= 4-row gemm whose rows the decode must equal
        ok = all(torch.equal(run(x[i : i + m], w, b), ref[i : i + m]) for m, i in ((1, 0), (2, 3), (3, 5)))
    if not ok:
        warnings.warn(f"kernels.native: fixed-order rows differ from the padded gemm for K={k} N={n}"
                      f"{' +bias' if with_bias else ''} on this CPU; that shape runs the padded gemm", RuntimeWarning,
                      stacklevel=4)
    return ok


def rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """x [M <= 3, K] @ weight^T (+ bias) in the fixed order, or None where it does not apply (see module)."""
    if (x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu"
            or (bias is not None and bias.dtype != torch.float32) or x.shape[0] > MAX_ROWS):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return None
    if library() is None:
        return None
    return run(x, weight, bias) if _shape_ok(x.shape[1], weight.shape[0], bias is not None) else None


def expert_rows(x: torch.Tensor, ws: tuple[torch.Tensor, ...], e: int) -> torch.Tensor | None:
    """x [M <= 3, K] @ cat(w[e] for w in ws)^T for stacked expert weights w [E, N_i, K] (kernels.moe: the
    gate and up projections in one pass), in the fixed order, or None where `rows` would not apply. The
    stacks are transposed once into [E, K, sum N_i] (refreshed when one changes). Each output's order
    depends on K alone, so checking each (K, N_i) against the padded gemm covers the joined call."""
    hit = _transposed.get(tuple(map(id, ws)))  # fast path: these weights passed the checks below, unchanged since
    if (hit is None or x.dtype != torch.float32 or not x.is_cpu or x.shape[0] > MAX_ROWS or hit[1] != _stamp(ws)
            or (torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in ws)))):
        if (x.dtype != torch.float32 or x.device.type != "cpu" or x.shape[0] > MAX_ROWS or library() is None
                or any(w.dtype != torch.float32 for w in ws)
                or (torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in ws)))
                or not all(_shape_ok(x.shape[1], w.shape[1], False) for w in ws)):
            return None
        hit = _cached(ws, lambda *w: torch.cat(w, dim=1).transpose(1, 2))  # [E, K, sum N_i]
    k, n = x.shape[1], hit[2].shape[2]
    if x.stride(1) != 1:
        x = x.contiguous()
    out = torch.empty(x.shape[0], n, dtype=torch.float32)
    _state["lib"].fixed_rows(x.data_ptr(), x.shape[0], k, x.stride(0), hit[3] + 4 * e * k * n, n, None,
                             out.data_ptr(), n, KC)
    return out


def warm(module: torch.nn.Module) -> int:
    """Build the library and run, ahead of a session's first turns, the checks its first decode steps
    would run: every 2-D float32 parameter of `module` as a linear weight (with and without a bias).
    Returns the number of shapes checked (0 when the path is off)."""
    if library() is None:
        return 0
    done = 0
    for p in module.parameters():
        if p.dim() in (2, 3) and p.dtype == torch.float32:  # linear weights; stacked experts [E, N, K]
            for with_bias in (False, True):
                key = (p.shape[-1], p.shape[-2], with_bias)
                if key not in _checked:
                    _checked[key] = _check(*key)
                    done += 1
    return done
