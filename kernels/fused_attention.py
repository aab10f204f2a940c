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
  attention_cached(q, ks, vs, q_pos, lengths, split): a batched turn, each session against its own cache.
  Rows run in blocks of ROW_BLOCK, spread over kernels.threads' workers where there are several (ctypes
  drops the GIL). Threads change which core computes a row, never its order.
"""

from __future__ import annotations

import math
import os
import threading

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


def _visible(q_pos: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """vis [B, Tq]: the slots each query sees (its position + 1, at most its row's limit)."""
    vis = torch.minimum(q_pos.to(torch.long) + 1, limit[:, None])
    if vis.numel() and int(vis.min()) < 1:
        raise ValueError("every query must see slot 0: q_pos >= 0 and kv_len >= 1")
    return vis


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, kv_len: torch.Tensor,
              split: int) -> torch.Tensor | None:
    if not _applies(q, k, v, split):
        return None
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (k, v))
        return attention_cached(q, list(k), list(v), q_pos, kv_len.tolist(), split)
    b, hq, tq, dh = q.shape
    hkv = k.shape[1]
    vis = _visible(q_pos, torch.clamp(kv_len.to(torch.long), max=k.shape[2])).repeat(1, hq // hkv)
    qg = (q * (1.0 / math.sqrt(dh))).reshape(b, hkv, hq // hkv * tq, dh)  # scale folded in, rows head-major
    outs = [_Attention.apply(qg[bi], k[bi], v[bi], vis[bi].contiguous(), split).reshape(hq, tq, dh)
            for bi in range(b)]
    return outs[0][None] if b == 1 else torch.stack(outs)


def attention_cached(q: torch.Tensor, ks: list[torch.Tensor], vs: list[torch.Tensor], q_pos: torch.Tensor,
                     lengths: list[int], split: int) -> torch.Tensor | None:
    """A batched turn's attention, each session against its own cache: q [B, Hq, T, Dh], ks/vs B tensors
    [Hkv, >= lengths[b], Dh], q_pos [B, T], lengths B ints -> [B, Hq, T, Dh]. Row (b, h, t) sees the slots
    <= q_pos[b, t] and < lengths[b]. The per-session work here is pointer arithmetic (one tensor op for all
    sessions' scaling, rows and output), and every session's row blocks go to kernels.threads together.
    None where the path does not apply (or autograd is on)."""
    b, hq, tq, dh = q.shape
    if (not b or torch.is_grad_enabled() or not _applies(q, ks[0], vs[0], split)
            or any(t.stride(-1) != 1 or t.dtype != torch.float32 for t in (*ks, *vs))):
        return None
    hkv = ks[0].shape[0]
    m = hq // hkv * tq
    qg = (q * (1.0 / math.sqrt(dh))).contiguous()  # [B, Hq, T, Dh] = [B, Hkv, M, Dh]: rows head-major
    limit = torch.tensor([min(n, k.shape[1]) for n, k in zip(lengths, ks, strict=True)])
    vis = _visible(q_pos, limit).repeat(1, hq // hkv).contiguous()  # [B, M]
    out = torch.empty(b, hq, tq, dh, dtype=torch.float32)
    specs = []
    for bi, seen in enumerate(vis.tolist()):
        specs += _specs(qg.data_ptr() + 4 * bi * hkv * m * dh, vis.data_ptr() + 8 * bi * m, seen, ks[bi], vs[bi],
                        out.data_ptr() + 4 * bi * hkv * m * dh, hkv, dh)
    _run_specs(specs, dh, split, (qg, vis, out, ks, vs))
    return out


def _specs(q0: int, vis0: int, seen: list[int], k: torch.Tensor, v: torch.Tensor, o0: int, hkv: int,
           dh: int) -> list[tuple]:
    """One kernel call's arguments per (kv head, block of ROW_BLOCK rows) of one sequence: rows q0 [Hkv, M, Dh]
    and out o0 alike, vis0 [M] int64 (values `seen`), k / v [Hkv, >= max(seen), Dh] with unit last stride."""
    m = len(seen)
    (kst, kr), (vst, vr) = k.stride()[:2], v.stride()[:2]
    return [(q0 + 4 * (h * m + r0) * dh, min(m, r0 + ROW_BLOCK) - r0, vis0 + 8 * r0, k.data_ptr() + 4 * h * kst, kr,
             v.data_ptr() + 4 * h * vst, vr, o0 + 4 * (h * m + r0) * dh, max(seen[r0 : r0 + ROW_BLOCK]))
            for r0 in range(0, m, ROW_BLOCK) for h in range(hkv)]


def _run_specs(specs: list[tuple], dh: int, split: int, keep: tuple) -> None:
    """One kernel call per spec (q, rows, vis, k, ldk, v, ldv, out pointers and strides, and the rows' reach),
    their work space carved from one allocation, run on kernels.threads."""
    lib = native.library()
    shapes = []
    total = 0
    for spec in specs:
        rows, reach = spec[1], spec[8]
        ns = -(-reach // split)
        lds = max(ns * split, -(-reach // TILE) * TILE)
        shapes.append((ns, lds, total))
        total += rows * (lds + ns + ns * dh) + dh * TILE
    work = _work_space(total)
    w0 = work.data_ptr()
    jobs = []
    for (qp, rows, visp, kp, ldk, vp, ldv, op, _), (ns, lds, off) in zip(specs, shapes, strict=True):
        sc = w0 + 4 * off
        ls = sc + 4 * rows * lds
        nodes = ls + 4 * rows * ns
        kt = nodes + 4 * rows * ns * dh
        jobs.append(_Job(lib.split_attention, (qp, rows, dh, visp, kp, ldk, vp, ldv, split, op, dh, sc, lds, ls, nodes,
                                               ns, kt), (keep, work)))
    threads.run(jobs)


def _work_space(floats: int) -> torch.Tensor:
    """This thread's scratch buffer of at least `floats` floats, kept between calls: a batched turn needs tens
    of MB, and a fresh allocation that size is mapped anew by the OS each time (a page fault per 4 KB,
    measured to halve the score kernel's speed at 24 sessions). Contents are never read before written."""
    buf = getattr(_local, "work", None)
    if buf is None or buf.numel() < floats:
        buf = _local.work = torch.empty(max(floats, 1 << 20), dtype=torch.float32)
    return buf


_local = threading.local()


def forward(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vis: torch.Tensor, split: int) -> torch.Tensor:
    """qg [Hkv, M, Dh] (scaled rows), k/v [Hkv, S, Dh], vis [M] int64 (row m sees slots < vis[m]) -> [Hkv, M, Dh]."""
    hkv, m, dh = qg.shape
    qg, k, v, vis = qg.detach().contiguous(), k.detach(), v.detach(), vis.contiguous()
    k = k if k.stride(2) == 1 else k.contiguous()
    v = v if v.stride(2) == 1 else v.contiguous()
    out = torch.empty(hkv, m, dh, dtype=torch.float32)
    _run_specs(_specs(qg.data_ptr(), vis.data_ptr(), vis.tolist(), k, v, out.data_ptr(), hkv, dh), dh, split,
               (qg, k, v, vis, out))
    return out


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
