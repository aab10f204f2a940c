"""Split-KV attention in one order the project fixes: the same bits in training, prefill and decode, on
AMD and Intel alike.

kernels/split_attention.c computes each query row's attention in an order written out there (scores
d-sequential by fused multiply-add, the exact row max, our own exp polynomial, per-split sums and
P_j @ V_j, the splits merged by a binary tree). A row's bits depend only on that row, the slots it
sees and `split`; never on how many rows share the call, on the slots past what it sees, or on the
vendor's BLAS. That is what kernels.splitkv's gemm path had to borrow from MKL's strict CNR mode,
whose promise holds on Intel only: this path needs no library mode at all, just AVX2 and FMA.

It is also the fast path: one pass over cache-sized tiles in place of a padded score gemm plus
separate mask, max, sub, exp, sum, P @ V and merge passes over the whole [rows x slots] matrix.

Contract:
  attention(q[B, Hq, Tq, Dh], k/v[B, Hkv, S, Dh], q_pos[B, Tq], kv_len[B], split) -> [B, Hq, Tq, Dh] | None
      Row (b, h, t) attends to the slots c <= q_pos[b, t] with c < kv_len[b]. None when the path does
      not apply: KERNELS_FUSED_ATTENTION=0, the library unavailable (kernels.native.why()), a tensor
      not float32 on the CPU, Dh or split not a multiple of 8; the caller runs kernels.splitkv's gemm path.
  With autograd on, the forward is the same kernel (so the trainer's logits equal the sampler's bit
  for bit) and the backward recomputes softmax with torch ops in blocks of ROW_BLOCK rows; gradients
  are not part of the bitwise contract.
  Rows run in blocks of ROW_BLOCK; with torch.get_num_threads() > 1 the blocks are spread over that
  many threads (ctypes drops the GIL). Threads change which core computes a row, never its order.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import torch

from kernels import native

ROW_BLOCK = 256  # rows per kernel call (bounds the work space; not in the bits)
TILE = 24  # split_attention.c's TW: slots per score tile

_pool: dict[int, ThreadPoolExecutor] = {}


def available() -> bool:
    """Whether this process runs attention through split_attention.c."""
    return os.environ.get("KERNELS_FUSED_ATTENTION", "1") != "0" and native.library() is not None


def why() -> str:
    if os.environ.get("KERNELS_FUSED_ATTENTION", "1") == "0":
        return "off (KERNELS_FUSED_ATTENTION=0)"
    return native.why()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, kv_len: torch.Tensor,
              split: int) -> torch.Tensor | None:
    b, hq, tq, dh = q.shape
    hkv = k.shape[1]
    if (not available() or dh % 8 or split % 8 or split < 8 or q.device.type != "cpu"
            or any(t.dtype != torch.float32 for t in (q, k, v))):
        return None
    rep = hq // hkv
    scale = 1.0 / math.sqrt(dh)
    pos = q_pos.to(torch.long)
    limit = torch.clamp(kv_len.to(torch.long), max=k.shape[2])
    vis = torch.minimum(pos + 1, limit[:, None])  # [B, Tq]: slots each query sees
    if tq and int(vis.min()) < 1:
        raise ValueError("every query must see slot 0: q_pos >= 0 and kv_len >= 1")
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    outs = []
    for bi in range(b):
        qg = (q[bi] * scale).reshape(hkv, rep * tq, dh)  # scale folded into q, rows head-major as in splitkv
        rows = vis[bi].repeat(rep).contiguous()
        if grad:
            o = _Attention.apply(qg, k[bi], v[bi], rows, split)
        else:
            o = forward(qg, k[bi], v[bi], rows, split)
        outs.append(o.reshape(hq, tq, dh))
    return outs[0][None] if b == 1 else torch.stack(outs)


def forward(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vis: torch.Tensor, split: int) -> torch.Tensor:
    """qg [Hkv, M, Dh] (scaled rows), k/v [Hkv, S, Dh], vis [M] int64 (row m sees slots < vis[m]) -> [Hkv, M, Dh]."""
    lib = native.library()
    hkv, m, dh = qg.shape
    qg = qg.detach().contiguous()
    k, v = k.detach(), v.detach()
    if k.stride(2) != 1:
        k = k.contiguous()
    if v.stride(2) != 1:
        v = v.contiguous()
    vis = vis.contiguous()
    out = torch.empty(hkv, m, dh, dtype=torch.float32)
    if m == 0:
        return out
    jobs = []
    for h in range(hkv):
        for r0 in range(0, m, ROW_BLOCK):
            jobs.append((h, r0, min(m, r0 + ROW_BLOCK)))
    ptrs = (qg.data_ptr(), k.data_ptr(), v.data_ptr(), vis.data_ptr(), out.data_ptr())
    strides = (k.stride(0), k.stride(1), v.stride(0), v.stride(1))

    def run(job: tuple[int, int, int]) -> None:
        h, r0, r1 = job
        reach = int(vis[r0:r1].max())
        ns = -(-reach // split)
        lds = max(ns * split, -(-reach // TILE) * TILE)
        rows = r1 - r0
        sc = torch.empty(rows, lds, dtype=torch.float32)
        ls = torch.empty(rows, ns, dtype=torch.float32)
        nodes = torch.empty(rows, ns, dh, dtype=torch.float32)
        kt = torch.empty(dh * TILE, dtype=torch.float32)
        q0, k0, v0, vis0, o0 = ptrs
        ks, kr, vs, vr = strides
        lib.split_attention(q0 + 4 * (h * m + r0) * dh, rows, dh, vis0 + 8 * r0, k0 + 4 * h * ks, kr,
                            v0 + 4 * h * vs, vr, split, o0 + 4 * (h * m + r0) * dh, dh, sc.data_ptr(), lds,
                            ls.data_ptr(), nodes.data_ptr(), ns, kt.data_ptr())

    threads = torch.get_num_threads()
    if threads > 1 and len(jobs) > 1:
        pool = _pool.get(threads) or _pool.setdefault(threads, ThreadPoolExecutor(threads, "fused-attention"))
        list(pool.map(run, jobs))
    else:
        for job in jobs:
            run(job)
    return out


class _Attention(torch.autograd.Function):
    """The kernel's forward; the backward of softmax(qg k^T) v by torch ops, recomputed per row block."""

    @staticmethod
    def forward(ctx, qg, k, v, vis, split):  # noqa: D102
        out = forward(qg, k, v, vis, split)
        ctx.save_for_backward(qg, k, v, vis, out)
        return out

    @staticmethod
    def backward(ctx, go):  # noqa: D102
        qg, k, v, vis, out = ctx.saved_tensors
        hkv, m, dh = qg.shape
        hi = int(vis.max())
        ks, vs = k[:, :hi], v[:, :hi]
        dq = torch.empty_like(qg)
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        delta = (go * out).sum(-1, keepdim=True)
        slots = torch.arange(hi)
        for r0 in range(0, m, ROW_BLOCK):
            r1 = min(m, r0 + ROW_BLOCK)
            reach = int(vis[r0:r1].max())
            kb, vb = ks[:, :reach], vs[:, :reach]
            s = torch.bmm(qg[:, r0:r1], kb.transpose(1, 2))
            s.masked_fill_(slots[None, None, :reach] >= vis[None, r0:r1, None], float("-inf"))
            p = torch.softmax(s, -1)
            g = go[:, r0:r1]
            dv[:, :reach] += torch.bmm(p.transpose(1, 2), g)
            ds = p * (torch.bmm(g, vb.transpose(1, 2)) - delta[:, r0:r1])
            dq[:, r0:r1] = torch.bmm(ds, kb)
            dk[:, :reach] += torch.bmm(ds.transpose(1, 2), qg[:, r0:r1])
        return dq, dk, dv, None, None
