"""Split-KV attention with fixed, left-aligned splits: the same bits in training, chunked prefill and decode.

The KV axis is cut into splits of `split` positions starting at absolute slot 0. A query row's
scores are one fp32 gemm (rows and columns padded as kernels.batch_invariant says); its max is the exact max
over the slots it sees. Each split j then yields its partial sum l_j (a row-local sum of its `split`
probabilities) and partial output o_j = P_j @ V_j (a batched gemm with K = split always; the last,
partial split is zero-padded to `split`). Splits are merged in order by a binary tree over their absolute indices, so the splits a
query cannot see (exact zeros) never change the result: the whole sequence (training), a chunk
appended to a cache, and a one-token decode step reduce the same numbers in the same order.
Where kernels.fused_attention applies (the C library built, AVX2 + FMA, float32 on the CPU: the
usual case) every call runs it instead: the same structure in an order kernels/split_attention.c
fixes, which holds on any such CPU without MKL's help and is faster. The gemm path below is the
fallback (no compiler, another ISA, KERNELS_FUSED_ATTENTION=0, CUDA); its guarantee rests on MKL's
row order (kernels.probe checks it at start-up).
The max is taken over the row rather than rescaled per split because this path has every score in
memory; a streaming GPU kernel would carry (m_j, l_j, o_j) and rescale at the merge.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels import cnr, fused_attention
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
    fused = fused_attention.attention(q, k, v, q_pos, kv_len, split)
    if fused is not None:  # the order split_attention.c fixes (every path of the process takes it)
        return fused
    scale = 1.0 / math.sqrt(dh)
    cnr.pin_one_thread()
    lens = kv_len.tolist()
    pos = (q_pos if q_pos.dtype == torch.long else q_pos.to(torch.long)).tolist()
    if b == 1 and tq <= q_block:
        return _block(q[0], k[0], v[0], pos[0], int(lens[0]), split, scale)[None]
    out = q.new_empty(b, hq, tq, dh)
    for bi in range(b):
        for t0 in range(0, tq, q_block):
            t1 = min(tq, t0 + q_block)
            out[bi, :, t0:t1] = _block(q[bi, :, t0:t1], k[bi], v[bi], pos[bi][t0:t1], int(lens[bi]), split, scale)
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


def merge_nodes(nodes: torch.Tensor) -> torch.Tensor:
    """Split partials stacked in absolute split order [n, ...] -> their sum by a binary tree over the split
    indices (0+1, 2+3, ...; an odd last node moves up alone), one vectorized add per tree level. Splits
    past a row's last visible one are exact zeros, so a row gets the same bits whatever number of splits
    its call had. Out of place (autograd records it; the additions are the same either way)."""
    while nodes.shape[0] > 1:
        n = nodes.shape[0]
        pairs = nodes[0 : n - 1 : 2] + nodes[1:n:2]
        nodes = torch.cat([pairs, nodes[n - 1 :]]) if n % 2 else pairs
    return nodes[0]


def _block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pl: list[int], length: int, split: int,
           scale: float) -> torch.Tensor:
    """q [Hq, T, Dh] at positions pl (T ints) against k/v [Hkv, S, Dh] (slots < length) -> [Hq, T, Dh]."""
    hq, t, dh = q.shape
    hkv = k.shape[0]
    rep = hq // hkv
    m = rep * t
    p_min, p_max = min(pl), max(pl)
    hi = min(length, p_max + 1, k.shape[1])  # slots [0, hi) hold everything any row may see
    if hi < 1 or p_min < 0:
        raise ValueError("every query must see slot 0: q_pos >= 0 and kv_len >= 1")
    qg = (q * scale).reshape(hkv, m, dh)  # scale folded into q: exact for the presets' power-of-4 head dims
    lo = min(p_min + 1, hi)  # every row sees the slots < lo
    return _gemm_block(qg, k, v, pl, rep, hi, lo, split).reshape(hq, t, dh)


def _gemm_block(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pl: list[int], rep: int, hi: int, lo: int,
                split: int) -> torch.Tensor:
    """Scores as one padded bmm, the exact row max, exp, then per split P_j @ V_j and l_j merged by the tree:
    qg [Hkv, M, Dh] (M = rep x len(pl), head-major) -> [Hkv, M, Dh]."""
    hkv, m, dh = qg.shape
    mp = padded_rows(m, batched=True)
    if mp != m:
        qg = F.pad(qg, (0, 0, 0, mp - m))
    kt = (k if hi == k.shape[1] else k.narrow(1, 0, hi)).transpose(1, 2)
    if padded_cols(hi) != hi:  # too few slots for the gemm's shape class: zero columns, sliced off
        kt = F.pad(kt, (0, padded_cols(hi) - hi))
    s = torch.bmm(qg, kt)  # [Hkv, Mp, >= hi] scaled scores of the slots anyone sees
    if s.shape[2] != hi:
        s = s.narrow(2, 0, hi)
    if not (torch.is_grad_enabled() and s.requires_grad):  # inference: in place
        if lo < hi:
            s.narrow(2, lo, hi - lo).masked_fill_(_hidden_mask(pl, rep, mp, lo, hi, qg.device), float("-inf"))
        # p = exp(score - row max): the max is exact, over the visible slots only
        s.sub_(s.amax(-1, keepdim=True)).exp_()
    else:  # training: the same arithmetic, out of place for autograd
        if lo < hi:
            hidden = _hidden_mask(pl, rep, mp, lo, hi, qg.device)
            s = torch.cat([s[:, :, :lo], s[:, :, lo:].masked_fill(hidden, float("-inf"))], dim=-1)
        s = torch.exp(s - s.amax(-1, keepdim=True))
    vdt = v if dh >= GEMM_MIN_COLS else F.pad(v.narrow(1, 0, hi), (0, GEMM_MIN_COLS - dh))  # PV gemm columns
    acc = merge_nodes(_split_nodes(s, vdt, hi, split))  # [Hkv, Mp, Dv+1]: sum of P_j @ V_j | sum of l_j
    o = acc.narrow(2, 0, dh) / acc.narrow(2, vdt.shape[2], 1)
    return o if mp == m else o.narrow(1, 0, m)


def _split_nodes(p: torch.Tensor, v: torch.Tensor, hi: int, split: int) -> torch.Tensor:
    """P [Hkv, Mp, hi] (exp'd scores) and V [Hkv, >= hi, Dv] -> the nodes [P_j @ V_j | l_j] of every split j,
    stacked in order [n, Hkv, Mp, Dv+1]: o_j a batched gemm with K = split always, l_j the row sum of P_j (a
    row-local reduction of `split` elements). The last split is zero-padded to `split`, P and V alike;
    the whole splits are strided views (no copy), so that one tree (merge_nodes) merges o and l."""
    n = -(-hi // split)
    whole = (n - 1) * split
    p_last, v_last = p.narrow(2, whole, hi - whole), v.narrow(1, whole, hi - whole)
    if hi - whole != split:
        p_last, v_last = F.pad(p_last, (0, whole + split - hi)), F.pad(v_last, (0, 0, 0, whole + split - hi))
    last = torch.cat([torch.bmm(p_last, v_last), p_last.sum(-1, keepdim=True)], dim=-1)[None]
    if n == 1:
        return last
    hkv, mp, dv = p.shape[0], p.shape[1], v.shape[2]
    (ph, pr, pc), (vh, vs, vd) = p.stride(), v.stride()
    if hkv == 1:  # the gemm's batch is the splits: [n-1, Mp, split] @ [n-1, split, Dv]
        pw = p.as_strided((n - 1, mp, split), (split * pc, pr, pc), p.storage_offset())
        vw = v.as_strided((n - 1, split, dv), (split * vs, vs, vd), v.storage_offset())
        return torch.cat([torch.cat([torch.bmm(pw, vw), pw.sum(-1, keepdim=True)], dim=-1).unsqueeze(1), last])
    pw = p.as_strided((hkv, n - 1, mp, split), (ph, split * pc, pr, pc), p.storage_offset())  # [Hkv, n-1, Mp, split]
    vw = v.as_strided((hkv, n - 1, split, dv), (vh, split * vs, vs, vd), v.storage_offset())  # [Hkv, n-1, split, Dv]
    return torch.cat([torch.cat([torch.matmul(pw, vw), pw.sum(-1, keepdim=True)], dim=-1).transpose(0, 1), last])
