"""Split-KV attention with fixed, left-aligned splits: the same bits in training, chunked prefill and decode.

The KV axis is cut into splits of `split` positions starting at absolute slot 0. A query row's
scores are one fp32 gemm (rows and columns padded as kernels.batch_invariant says); its max is the exact max
over the slots it sees. Each split j then yields its partial sum l_j (a row-local sum of its `split`
probabilities) and partial output o_j = P_j @ V_j (a batched gemm with K = split always; the last,
partial split is zero-padded to `split`). Splits are merged in order by a binary tree over their absolute indices, so the splits a
query cannot see (exact zeros) never change the result: the whole sequence (training), a chunk
appended to a cache, and a one-token decode step reduce the same numbers in the same order.
The max is taken over the row rather than rescaled per split because this path has every score in
memory; a streaming GPU kernel would carry (m_j, l_j, o_j) and rescale at the merge.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels import cnr
from kernels.batch_invariant import MIN_COLS as GEMM_MIN_COLS
from kernels.batch_invariant import padded_cols, padded_rows

SPLIT = 256  # KV positions per split: the tile of every path (64 and 128 measured slower on small's turns)
Q_BLOCK = 256  # queries per block in the full-sequence path (bounds memory; not in the bits)
MIN_COLS = 16  # the smallest split accepted


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, kv_len: torch.Tensor,
              *, split: int = SPLIT, q_block: int = Q_BLOCK) -> torch.Tensor:
    """q[B, Hq, Tq, Dh], k/v[B, Hkv, S, Dh], q_pos[B, Tq], kv_len[B] -> [B, Hq, Tq, Dh] (see kernels.ops)."""
    b, hq, tq, dh = q.shape
    hkv = k.shape[1]
    if hq % hkv:
        raise ValueError(f"query heads {hq} must be a multiple of kv heads {hkv}")
    if split < MIN_COLS or q_block < 1:
        raise ValueError(f"split must be >= {MIN_COLS} and q_block >= 1")
    scale = 1.0 / math.sqrt(dh)
    cnr.pin_one_thread()
    lens = kv_len.tolist()
    pos = q_pos.to(torch.long)
    if b == 1 and tq <= q_block:
        return _block(q[0], k[0], v[0], pos[0], int(lens[0]), split, scale)[None]
    out = q.new_empty(b, hq, tq, dh)
    for bi in range(b):
        for t0 in range(0, tq, q_block):
            t1 = min(tq, t0 + q_block)
            out[bi, :, t0:t1] = _block(q[bi, :, t0:t1], k[bi], v[bi], pos[bi, t0:t1], int(lens[bi]), split, scale)
    return out


def _hidden_mask(pos: list[int], rep: int, mp: int, lo: int, hi: int, device: torch.device) -> torch.Tensor:
    """[Mp, hi - lo] bool: row (head-major, then query) cannot see slot lo + c. Cached: every layer of
    a forward asks for the same one."""
    key = (tuple(pos), rep, mp, lo, hi, str(device))
    mask = _MASKS.get(key)
    if mask is None:
        rows = torch.tensor(pos * rep + [max(pos)] * (mp - rep * len(pos)), device=device)
        mask = torch.arange(lo, hi, device=device)[None, :] > rows[:, None]
        if len(_MASKS) >= 16:
            _MASKS.clear()
        _MASKS[key] = mask
    return mask


_MASKS: dict[tuple, torch.Tensor] = {}


def merge_splits(o: torch.Tensor) -> torch.Tensor:
    """o [H, n, ...] split partials -> [H, ...]: a binary tree over absolute split indices (0+1, 2+3, ...;
    an odd last node moves up alone). Splits past a row's last visible one are exact zeros, so a row
    gets the same bits whatever n its call had."""
    inplace = not (torch.is_grad_enabled() and o.requires_grad)  # same additions either way
    while o.shape[1] > 1:  # node 2i absorbs node 2i+1; the even nodes are the next level
        n = o.shape[1]
        h = n // 2
        if inplace:
            o[:, 0 : 2 * h : 2] += o[:, 1 : 2 * h : 2]
            o = o[:, 0::2]
        else:
            pairs = o[:, 0 : 2 * h : 2] + o[:, 1 : 2 * h : 2]
            o = torch.cat([pairs, o[:, 2 * h :]], dim=1) if n % 2 else pairs
    return o[:, 0]


def _block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, length: int, split: int,
           scale: float) -> torch.Tensor:
    """q [Hq, T, Dh] at positions pos [T] against k/v [Hkv, S, Dh] (slots < length) -> [Hq, T, Dh]."""
    hq, t, dh = q.shape
    hkv = k.shape[0]
    rep = hq // hkv
    m = rep * t
    pl = pos.tolist()
    p_min, p_max = min(pl), max(pl)
    hi = min(length, p_max + 1, k.shape[1])  # slots [0, hi) hold everything any row may see
    if hi < 1 or p_min < 0:
        raise ValueError("every query must see slot 0: q_pos >= 0 and kv_len >= 1")
    n = -(-hi // split)
    span = n * split
    mp = padded_rows(m, batched=True)
    qg = (q * scale).reshape(hkv, m, dh)  # scale folded into q: exact for the presets' power-of-4 head dims
    if mp != m:
        qg = F.pad(qg, (0, 0, 0, mp - m))
    kt = k[:, :hi].transpose(1, 2)
    if padded_cols(hi) != hi:  # too few slots for the gemm's shape class: zero columns, sliced off
        kt = F.pad(kt, (0, padded_cols(hi) - hi))
    s = torch.bmm(qg, kt)  # [Hkv, Mp, >= hi] scaled scores of the slots anyone sees
    if s.shape[2] != hi:
        s = s[:, :, :hi]
    lo = min(p_min + 1, hi)  # every row sees the slots < lo
    if not (torch.is_grad_enabled() and s.requires_grad):  # inference: in place
        if lo < hi:
            s[:, :, lo:].masked_fill_(_hidden_mask(pl, rep, mp, lo, hi, q.device), float("-inf"))
        # p = exp(score - row max): the max is exact, over the visible slots only
        s.sub_(s.amax(-1, keepdim=True)).exp_()
    else:  # training: the same arithmetic, out of place for autograd
        if lo < hi:
            hidden = _hidden_mask(pl, rep, mp, lo, hi, q.device)
            s = torch.cat([s[:, :, :lo], s[:, :, lo:].masked_fill(hidden, float("-inf"))], dim=-1)
        s = torch.exp(s - s.amax(-1, keepdim=True))
    # per split j: o_j = P_j @ V_j (a batched gemm with K = split) and l_j = the row sum of P_j (a
    # row-local reduction of `split` elements); the last split is zero-padded to `split`, P and V alike
    whole = (n - 1) * split
    vdt = v[:, :hi]
    if dh < GEMM_MIN_COLS:  # keep the PV gemm's column count in its shape class
        vdt = F.pad(vdt, (0, GEMM_MIN_COLS - dh))
    p_last = s[:, :, whole:] if span == hi else F.pad(s[:, :, whole:], (0, span - hi))  # [Hkv, Mp, split]
    v_last = vdt[:, whole:] if span == hi else F.pad(vdt[:, whole:], (0, 0, 0, span - hi))
    o = torch.bmm(p_last, v_last)[:, None]  # [Hkv, 1, Mp, Dv]
    lsum = p_last.sum(-1)[:, None]  # [Hkv, 1, Mp]
    if n > 1:
        p = s[:, :, :whole].unflatten(2, (n - 1, split)).transpose(1, 2)  # [Hkv, n-1, Mp, split] (a view)
        vw = vdt[:, :whole].unflatten(1, (n - 1, split))  # [Hkv, n-1, split, Dv] (a view)
        o_whole = torch.matmul(p, vw) if hkv > 1 else torch.bmm(p[0], vw[0])[None]
        o = torch.cat([o_whole, o], dim=1)  # [Hkv, n, Mp, Dv]
        lsum = torch.cat([p.sum(-1), lsum], dim=1)  # [Hkv, n, Mp]
    o = merge_splits(o)[:, :m, :dh]
    lsum = merge_splits(lsum)[:, :m, None]
    return (o / lsum).reshape(hq, t, dh)
