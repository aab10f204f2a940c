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
  attention_many(calls, split): the same for several sessions' calls at once (the batched turn).
  Rows run in blocks of ROW_BLOCK, spread over kernels.threads' workers where there are several (ctypes
  drops the GIL). Threads change which core computes a row, never its order.
"""

from __future__ import annotations

import math
import os

import torch

from kernels import native, threads

ROW_BLOCK = 256  # rows per kernel call (bounds the work space; not in the bits)
TILE = 24  # split_attention.c's TW: slots per score tile

def available() -> bool:
    """Whether this process runs attention through split_attention.c."""
    return os.environ.get("KERNELS_FUSED_ATTENTION", "1") != "0" and native.library() is not None


def why() -> str:
    if os.environ.get("KERNELS_FUSED_ATTENTION", "1") == "0":
        return "off (KERNELS_FUSED_ATTENTION=0)"
    return native.why()


def _applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: int) -> bool:
    return (available() and q.shape[-1] % 8 == 0 and split % 8 == 0 and split >= 8 and q.device.type == "cpu"
            and all(t.dtype == torch.float32 for t in (q, k, v)))


def _rows(q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, kv_len: torch.Tensor) -> torch.Tensor:
    """vis [B, Tq]: the slots each query sees (its position + 1, at most kv_len and the cache's length)."""
    limit = torch.clamp(kv_len.to(torch.long), max=k.shape[2])
    vis = torch.minimum(q_pos.to(torch.long) + 1, limit[:, None])
    if q.shape[2] and int(vis.min()) < 1:
        raise ValueError("every query must see slot 0: q_pos >= 0 and kv_len >= 1")
    return vis


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, kv_len: torch.Tensor,
              split: int) -> torch.Tensor | None:
    if not _applies(q, k, v, split):
        return None
    b, hq, tq, dh = q.shape
    hkv = k.shape[1]
    rep = hq // hkv
    scale = 1.0 / math.sqrt(dh)
    vis = _rows(q, k, q_pos, kv_len)
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


def attention_many(calls: list[tuple[torch.Tensor, ...]], split: int) -> list[torch.Tensor] | None:
    """`attention(*call, split)` for each (q, k, v, q_pos, kv_len) of `calls` (batch 1 each: one session and
    its own cache), the row blocks of all of them spread over the threads together; a row's bits are those
    of its call alone. None where any call would not take this path (or autograd is on)."""
    if not calls or torch.is_grad_enabled() or not all(_applies(c[0], c[1], c[2], split) for c in calls):
        return None
    pending, outs = [], []
    for q, k, v, q_pos, kv_len in calls:  # all jobs first: a worker waiting for the GIL held here would stall
        _, hq, tq, dh = q.shape
        hkv, rep = k.shape[1], hq // k.shape[1]
        limit = min(int(kv_len[0]), k.shape[2])
        vis = [min(p + 1, limit) for p in q_pos[0].tolist()]
        if vis and min(vis) < 1:
            raise ValueError("every query must see slot 0: q_pos >= 0 and kv_len >= 1")
        qg = (q[0] * (1.0 / math.sqrt(dh))).reshape(hkv, rep * tq, dh)
        out, jobs = _jobs(qg, k[0], v[0], torch.tensor(vis * rep, dtype=torch.long), split)
        pending += jobs
        outs.append(out.reshape(1, hq, tq, dh))
    threads.run(pending)
    return outs


def forward(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vis: torch.Tensor, split: int) -> torch.Tensor:
    """qg [Hkv, M, Dh] (scaled rows), k/v [Hkv, S, Dh], vis [M] int64 (row m sees slots < vis[m]) -> [Hkv, M, Dh]."""
    out, jobs = _jobs(qg, k, v, vis, split)
    threads.run(jobs)
    return out


def _jobs(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vis: torch.Tensor, split: int) -> tuple:
    """The output tensor and one job per (kv head, block of ROW_BLOCK rows) that fills its part: the kernel
    call with its arguments and work space bound here, so a worker runs C without Python work (the GIL)."""
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
    q0, k0, v0, vis0, o0 = qg.data_ptr(), k.data_ptr(), v.data_ptr(), vis.data_ptr(), out.data_ptr()
    (ks, kr), (vs, vr) = k.stride()[:2], v.stride()[:2]
    seen = vis.tolist()
    jobs = []
    for r0 in range(0, m, ROW_BLOCK):
        r1 = min(m, r0 + ROW_BLOCK)
        reach = max(seen[r0:r1])
        ns = -(-reach // split)
        lds = max(ns * split, -(-reach // TILE) * TILE)
        for h in range(hkv):
            work = torch.empty((r1 - r0) * (lds + ns + ns * dh) + dh * TILE, dtype=torch.float32)
            w0 = work.data_ptr()
            sc, ls = w0, w0 + 4 * (r1 - r0) * lds
            nodes = ls + 4 * (r1 - r0) * ns
            kt = nodes + 4 * (r1 - r0) * ns * dh
            jobs.append(_Job(lib.split_attention, (q0 + 4 * (h * m + r0) * dh, r1 - r0, dh, vis0 + 8 * r0,
                                                   k0 + 4 * h * ks, kr, v0 + 4 * h * vs, vr, split,
                                                   o0 + 4 * (h * m + r0) * dh, dh, sc, lds, ls, nodes, ns, kt),
                             (qg, k, v, vis, out, work)))
    return out, jobs


class _Job:
    """One kernel call: the function, its arguments, and the tensors its pointers point into (kept alive)."""

    __slots__ = ("fn", "args", "keep")

    def __init__(self, fn, args: tuple, keep: tuple) -> None:
        self.fn, self.args, self.keep = fn, args, keep

    def __call__(self) -> None:
        self.fn(*self.args)


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
