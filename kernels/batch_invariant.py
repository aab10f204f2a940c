"""Batch-invariant CPU ops: a row's result never depends on how many rows share the call or where it sits.

Matmul: by default MKL's sgemm picks its algorithm from the shape (gemv for one row, small-matrix
kernels for a few, thread splits for many) and so reduces K in an order that depends on M, at sizes
that differ between AVX2 and AVX-512. `kernels.cnr` puts MKL in strict CNR mode, where one K order
holds for every M, N, batch and thread count (one-row bmm excepted: padded to BMM_MIN_ROWS); then
`mm`/`linear` are the plain calls. Without strict CNR they pad rows to >= MIN_ROWS in multiples of
ROW_BLOCK, which is batch-invariant on this repo's AVX-512 machine but not on MKL's AVX2 path.
Row reductions (mean, sum, max) use ATen's row-local reduction, which splits one row
across threads only when the whole call is a single row of >= 32768 elements (`row_sum` pads that
case). Elementwise ops: ATen's fused sigmoid/silu/gelu loops round their tails differently from
the vector body, so `silu`/`gelu` are built from ops that do not (exp, erf, add, mul, div).
`embedding_bag_sum` sums each bag on its own in bag order (ATen's embedding_bag).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels import cnr

ROW_BLOCK = 4  # sgemm micro-tile rows (fallback without strict CNR)
MIN_ROWS = 16  # fallback: fewer rows than this and MKL switches to small-matrix / gemv kernels
BMM_MIN_ROWS = 4  # strict CNR: a one-row bmm takes another path than mm; from 2 rows on it does not
_PARALLEL_GRAIN = 32768  # ATen splits a reduction over threads only beyond this many elements


def padded_rows(m: int, batched: bool = False) -> int:
    """The row count a gemm of m rows runs with. Strict CNR: m (a batched gemm: >= BMM_MIN_ROWS).
    Fallback: >= MIN_ROWS and a multiple of ROW_BLOCK."""
    if cnr.strict():
        return max(m, BMM_MIN_ROWS) if batched else m
    return max(MIN_ROWS, -(-m // ROW_BLOCK) * ROW_BLOCK)


def pad_rows(x: torch.Tensor, dim: int = 0, batched: bool = False) -> torch.Tensor:
    """x with zero rows appended along `dim` up to padded_rows (x itself when already aligned)."""
    m = x.shape[dim]
    extra = padded_rows(m, batched) - m
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [M, K] @ b [K, N], each row computed by the same sgemm kernel whatever M."""
    m = a.shape[0]
    if m == padded_rows(m):
        return torch.mm(a, b)
    return torch.mm(pad_rows(a), b)[:m]


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [G, M, K] @ b [G, K, N], each row invariant to M and G."""
    m = a.shape[1]
    if m == padded_rows(m, batched=True):
        return torch.bmm(a, b)
    return torch.bmm(pad_rows(a, 1, batched=True), b)[:, :m]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x[..., K] @ weight[N, K]^T (+ bias): per-row result independent of the leading dims' sizes.

    Aligned row counts are exactly F.linear (addmm with the bias); others run padded.
    """
    k = x.shape[-1]
    n = weight.shape[0]
    m = x.numel() // k if k else 0
    if m == 0:
        return x.new_zeros(*x.shape[:-1], n)
    if m == padded_rows(m):
        return F.linear(x, weight, bias)
    out = F.linear(pad_rows(x.reshape(m, k)), weight, bias)[:m]
    return out.view(*x.shape[:-1], n)


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
    """x / sqrt(mean(x^2) + eps) * weight; the mean is a row-local reduction, sqrt and division exact."""
    xf = x.float()
    ms = row_sum(xf * xf, keepdim=True) / xf.shape[-1]
    return (xf / torch.sqrt(ms + eps)).to(x.dtype) * weight


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
    e = torch.exp(-x)  # the same three ops in place (inference)
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
