"""Batch-invariant CPU ops: a row's result never depends on how many rows share the call or where it sits.

Matmul. MKL's sgemm picks its kernel from the shape (gemv for one row, small-matrix kernels for a few
rows or a few columns, thread splits for bigger problems), and each kernel reduces K in its own order.
So the project fixes the shape class of every gemm it issues and the threads that run it:
- rows: at least MIN_ROWS_STRICT (4) when MKL is in strict CNR mode, else at least MIN_ROWS (16) and a
  multiple of ROW_BLOCK (4); fewer rows are zero-padded;
- columns: at least MIN_COLS (16); a narrower right-hand side is zero-padded;
- threads: MKL runs one thread on the calling thread (kernels.cnr.pin_one_thread), so no thread split
  depends on the problem size.
Within that class one packed kernel runs whose K order depends on (K, N) alone. Measured, row by row
against a 256-row call for K in 16..1024 and N in 1..255: on an AMD EPYC (AVX2) rows 1-3 and columns
1-11 run other kernels, with or without strict CNR, and two threads split small problems differently;
on an Intel AVX-512 machine strict CNR held for every M and the fallback held from 16 rows. No vendor
documents this, so kernels.probe re-checks it on the running CPU before the deterministic mode is used
and says so when it does not hold.
One to three rows (a decode step) do not run the padded gemm when kernels.native is on: its
fixed-order rows (kernels/fixed_rows.c) reproduce that gemm's per-row order at gemv speed, checked
bit for bit per (K, N) before use.
Row reductions (mean, sum, max) use ATen's row-local reduction, which splits one row
across threads only when the whole call is a single row of >= 32768 elements (`row_sum` pads that
case). Elementwise ops: ATen's fused sigmoid/silu/gelu loops round their tails differently from
the vector body, so `silu`/`gelu` are built from ops that do not (exp, erf, add, mul, div).
`embedding_bag_sum` sums each bag on its own in bag order (ATen's embedding_bag).
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F

from kernels import cnr, native, threads

ROW_BLOCK = 4  # sgemm micro-tile rows (fallback without strict CNR)
MIN_ROWS = 16  # fallback: fewer rows than this and MKL switches to small-matrix / gemv kernels
MIN_ROWS_STRICT = 4  # strict CNR: 1-3 rows take gemv / small kernels on AMD (Intel: any row count)
MIN_COLS = 16  # fewer columns than 12 take another kernel (AMD EPYC, with or without strict CNR)
THREAD_ROWS = 128  # linears of at least this many rows (a batched turn) are cut across kernels.threads
_PARALLEL_GRAIN = 32768  # ATen splits a reduction over threads only beyond this many elements


def padded_rows(m: int, batched: bool = False) -> int:
    """The row count a gemm of m rows runs with (`batched` kept for callers; the rule is the same).
    Strict CNR: >= MIN_ROWS_STRICT. Fallback: >= MIN_ROWS and a multiple of ROW_BLOCK."""
    if cnr.strict():
        return max(m, MIN_ROWS_STRICT)
    return max(MIN_ROWS, -(-m // ROW_BLOCK) * ROW_BLOCK)


def padded_cols(n: int) -> int:
    """The column count a gemm of n columns runs with."""
    return max(n, MIN_COLS)


def pad_rows(x: torch.Tensor, dim: int = 0, batched: bool = False, to: int | None = None) -> torch.Tensor:
    """x with zero rows appended along `dim` up to `to` (default padded_rows); x itself when aligned."""
    m = x.shape[dim]
    extra = (padded_rows(m, batched) if to is None else to) - m
    if extra <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [M, K] @ b [K, N], each row computed by the same sgemm kernel whatever M."""
    cnr.pin_one_thread()
    m, n = a.shape[0], b.shape[1]
    mp, np_ = padded_rows(m), padded_cols(n)
    if m == mp and n == np_:
        return torch.mm(a, b)
    return torch.mm(pad_rows(a, to=mp), pad_rows(b, 1, to=np_))[:m, :n]


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [G, M, K] @ b [G, K, N], each row invariant to M and G."""
    cnr.pin_one_thread()
    m, n = a.shape[1], b.shape[2]
    mp, np_ = padded_rows(m, batched=True), padded_cols(n)
    if m == mp and n == np_:
        return torch.bmm(a, b)
    return torch.bmm(pad_rows(a, 1, to=mp), pad_rows(b, 2, to=np_))[:, :m, :n]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x[..., K] @ weight[N, K]^T (+ bias): per-row result independent of the leading dims' sizes.

    Aligned shapes are exactly F.linear (addmm with the bias); others run padded: the same F.linear on
    zero rows appended (`padded_input`) and zero columns, both sliced off.
    """
    cnr.pin_one_thread()
    k = x.shape[-1]
    n = weight.shape[0]
    m = x.numel() // k if k else 0
    if m == 0:
        return x.new_zeros(*x.shape[:-1], n)
    mp = padded_rows(m)
    if m < mp and m <= native.MAX_ROWS:  # 1-3 rows: the fixed-order rows equal to the padded gemm's (native)
        out = native.rows(x.reshape(m, k), weight, bias)
        if out is not None:
            return out.view(*x.shape[:-1], n)
    if m >= THREAD_ROWS and threads.count() > 1 and not torch.is_grad_enabled():
        return _row_parts(x.reshape(m, k), weight, bias).view(*x.shape[:-1], n)
    return padded_gemm(x, weight, bias, mp)


def _row_parts(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [M, K] cut into one block of rows per kernels.threads worker, each block its own padded gemm: the
    rows' bits are the whole gemm's (the invariance this module exists for), the work on every core."""
    m, n = x.shape[0], weight.shape[0]
    out = x.new_empty(m, n)
    step = -(-m // threads.count())

    def part(r0: int, r1: int):
        def run() -> None:
            out[r0:r1] = padded_gemm(x[r0:r1], weight, bias)
        return run

    threads.run([part(r0, min(m, r0 + step)) for r0 in range(0, m, step)])
    return out


def padded_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                mp: int | None = None) -> torch.Tensor:
    """linear's gemm path: F.linear on rows and columns padded to the shape class (mp rows at least)."""
    cnr.pin_one_thread()
    k = x.shape[-1]
    n = weight.shape[0]
    m = x.numel() // k
    mp, np_ = padded_rows(m) if mp is None else mp, padded_cols(n)
    if m == mp and n == np_:
        return F.linear(x, weight, bias)
    if n != np_:
        weight = pad_rows(weight, to=np_)
        bias = None if bias is None else pad_rows(bias, to=np_)
    out = F.linear(padded_input(x, mp), weight, bias).narrow(0, 0, m)
    if n != np_:
        return out.narrow(1, 0, n).reshape(*x.shape[:-1], n)
    return out.view(*x.shape[:-1], n)


_buffers = threading.local()


def padded_input(x: torch.Tensor, mp: int) -> torch.Tensor:
    """x [..., K] as m = x.numel() / K rows [m, K] with zero rows appended up to mp: the values of
    pad_rows(x.reshape(m, K), to=mp).

    With grad mode off, x is copied into this thread's buffer for (x's shape, mp, dtype, device), whose
    rows m.. are zero once and never written: one copy instead of a fresh zero-padded tensor per call
    (the decode step pads every one-row linear). The buffer is only an input, overwritten by this
    thread's next call with that key; a gemm's result never aliases it. With grad mode on (autograd
    may save the input), pad_rows."""
    k = x.shape[-1]
    m = x.numel() // k
    if m >= mp or torch.is_grad_enabled():
        return pad_rows(x.reshape(m, k), to=mp)
    cache = getattr(_buffers, "rows", None)
    if cache is None:
        cache = _buffers.rows = {}
    key = (x.shape, mp, x.dtype, x.device)
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= 64:
            cache.clear()
        with torch.inference_mode(False):  # a normal tensor: writable inside and outside inference mode
            buf = torch.zeros(mp, k, dtype=x.dtype, device=x.device)
        hit = cache[key] = (buf, buf.narrow(0, 0, m).view(x.shape))  # (the buffer, its first m rows as x)
    hit[1].copy_(x)
    return hit[0]


def _one_big_row(x: torch.Tensor) -> bool:
    return x.numel() >= _PARALLEL_GRAIN and x.numel() == x.shape[-1] and torch.get_num_threads() > 1


def row_sum(x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Sum over the last axis, row-local (never split across threads)."""
    if _one_big_row(x):
        flat = x.reshape(1, -1)
        s = torch.cat([flat, torch.zeros_like(flat)], 0).sum(-1)[:1]
        return s.view(*x.shape[:-1], 1) if keepdim else s.view(x.shape[:-1])
    return x.sum(-1, keepdim=keepdim)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight; the mean is a row-local reduction, sqrt and division exact.
    Without autograd (float32) the same ops run in place on their fresh results."""
    xf = x.float()
    ms = row_sum(xf * xf, keepdim=True)
    if torch.is_grad_enabled() or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return (xf / torch.sqrt(ms / xf.shape[-1] + eps)).to(x.dtype) * weight
    ms.div_(xf.shape[-1]).add_(eps).sqrt_()
    return torch.div(xf, ms).mul_(weight)


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x - max - log(sum(exp(x - max))) along `dim`, each row reduced on its own."""
    moved = dim % x.dim() != x.dim() - 1
    if moved:
        x = x.movedim(dim, -1)
    z = x - x.amax(-1, keepdim=True)
    out = z - torch.log(row_sum(torch.exp(z), keepdim=True))
    return out.movedim(-1, dim) if moved else out


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis, row-local (used for MoE routing)."""
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / row_sum(e, keepdim=True)


def silu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x) as x / (exp(-x) + 1): ops whose vector body and tail round alike."""
    if torch.is_grad_enabled() and x.requires_grad:
        return x / (torch.exp(-x) + 1.0)
    e = torch.neg(x).exp_()  # the same ops in place (inference)
    e += 1.0
    return torch.div(x, e, out=e)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU from erf, add and mul, which round alike in ATen's vector body and tail."""
    return x * 0.5 * (torch.erf(x * (1.0 / math.sqrt(2.0))) + 1.0)


def embedding_bag_sum(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table[V, D], idx[..., B] -> [..., D]: rows gathered, summed over B.

    ATen's embedding_bag (fbgemm on CPU) sums each bag on its own, row after row in bag order, vector
    lanes across D: a bag's bits depend on its indices alone, not on the other bags of the call.
    """
    b = idx.shape[-1]
    out = F.embedding_bag(idx.reshape(-1, b), table, mode="sum")
    return out.view(*idx.shape[:-1], table.shape[1])
