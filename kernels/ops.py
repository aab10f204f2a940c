"""The ops the interaction model computes with, behind one switch.

Every model module calls these functions (never F.linear / sdpa directly), so that
`with deterministic():` (this thread) or `set_deterministic_default(True)` (every thread outside such a
block) routes the whole model through the batch-invariant kernels of this package; the default
path uses plain torch ops. Signatures are the contract:

  linear(x[..., K], weight[N, K], bias[N] | None) -> [..., N]
  rms_norm(x[..., D], weight[D], eps) -> [..., D]
  log_softmax(x, dim=-1)
  silu(x), gelu(x)                                              (elementwise; gelu is the erf form)
  embedding_bag_sum(table[V, D], idx[..., B]) -> [..., D]      (sum over the last index axis; one
      implementation for both paths: ATen's embedding_bag is the fast kernel and batch-invariant)
  attention(q[B, Hq, Tq, Dh], k[B, Hkv, S, Dh], v[B, Hkv, S, Dh], q_pos[B, Tq], kv_len[B]) -> [B, Hq, Tq, Dh]
      causal by absolute position: query at absolute position p sees cache slots 0..p
      (and only slots < kv_len[b]); GQA when Hq is a multiple of Hkv.
  attention_cached(q[B, Hq, T, Dh], ks, vs, q_pos[B, T], lengths) -> [B, Hq, T, Dh]
      a batched turn: ks[b] / vs[b] [Hkv, >= lengths[b], Dh] are session b's own cache; row (b, h, t)
      sees slots <= q_pos[b, t] and < lengths[b], exactly as attention() on that session alone.
  moe_ffn(x[T, D], router_logits[T, E], w1[E, F, D], w3[E, F, D], w2[E, D, F], top_k) -> [T, D]
      SwiGLU experts; top-k softmax-renormalised routing; experts summed in slot order.

Deterministic implementations: kernels.batch_invariant (linear, rms_norm, log_softmax, silu, gelu,
embedding_bag_sum), kernels.splitkv (split-KV attention), kernels.moe (gather+gemv / grouped). Optional
keyword arguments (`split`, `q_block` for attention; `path` for moe_ffn) only act on that path.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

from kernels import batch_invariant as _bi
from kernels import cnr
from kernels import fused_attention as _fused
from kernels import moe as _moe
from kernels import splitkv as _att

_state = threading.local()


_default = {"deterministic": False}


def is_deterministic() -> bool:
    return getattr(_state, "deterministic", _default["deterministic"])


def set_deterministic_default(enabled: bool) -> None:
    """The mode of every thread outside a `deterministic()` block (a runtime's setting; default False)."""
    if enabled:
        _probe_once()
    _default["deterministic"] = bool(enabled)


def _probe_once() -> None:
    """The first switch into the deterministic mode runs kernels.probe on this CPU: a RuntimeWarning says
    so when batch invariance does not hold here (the mode still runs; its bits may then depend on the batch)."""
    if not _default.get("probed"):
        _default["probed"] = True
        from kernels import probe

        probe.warn_if_broken(stacklevel=4)


@contextlib.contextmanager
def deterministic(enabled: bool = True):
    """Route every op of this module through the batch-invariant kernels while active."""
    if enabled:
        _probe_once()
    prev = getattr(_state, "deterministic", None)
    was_pinned = cnr.pinned()
    _state.deterministic = enabled
    try:
        yield
    finally:
        if cnr.pinned() and not was_pinned:  # the block's gemms pinned MKL to one thread: undo it
            cnr.set_local_threads(0)
        if prev is None:
            del _state.deterministic
        else:
            _state.deterministic = prev


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if is_deterministic():
        return _bi.linear(x, weight, bias)
    return F.linear(x, weight, bias)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    if is_deterministic():
        return _bi.rms_norm(x, weight, eps)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    if is_deterministic():
        return _bi.log_softmax(x, dim)
    return F.log_softmax(x, dim=dim)


def silu(x: torch.Tensor) -> torch.Tensor:
    if is_deterministic():
        return _bi.silu(x)
    return F.silu(x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    if is_deterministic():
        return _bi.gelu(x)
    return F.gelu(x)


def embedding_bag_sum(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    # one implementation for both paths: ATen's embedding_bag is the fast kernel and batch-invariant
    return _bi.embedding_bag_sum(table, idx)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, kv_len: torch.Tensor,
    *, split: int = _att.SPLIT, q_block: int = _att.Q_BLOCK, causal: bool = False,
) -> torch.Tensor:
    """`causal=True` promises q_pos[b] == arange(Tq) and kv_len[b] == S == Tq for every row (a whole
    sequence): the default path then skips the masked half; the deterministic path ignores the hint."""
    if is_deterministic():
        return _att.attention(q, k, v, q_pos, kv_len, split=split, q_block=q_block)
    gqa = q.shape[1] != k.shape[1]
    if causal:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    s = k.shape[2]
    slots = torch.arange(s, device=q.device)
    mask = (slots[None, None, :] <= q_pos[:, :, None]) & (slots[None, None, :] < kv_len[:, None, None])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, :, :], enable_gqa=gqa)


def attention_cached(q: torch.Tensor, ks: list[torch.Tensor], vs: list[torch.Tensor], q_pos: torch.Tensor,
                     lengths: list[int], *, split: int = _att.SPLIT) -> torch.Tensor:
    """A batched turn, each session against its own cache (see the contract above); the deterministic path
    runs all sessions together (kernels.fused_attention.attention_cached), each row the bits of its own call."""
    if is_deterministic():
        out = _fused.attention_cached(q, ks, vs, q_pos, lengths, split)
        if out is not None:
            return out
    outs = [attention(q[i : i + 1], ks[i][None], vs[i][None], q_pos[i : i + 1],
                      torch.tensor([lengths[i]], dtype=torch.long, device=q.device), split=split)
            for i in range(q.shape[0])]
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


def moe_ffn(
    x: torch.Tensor,
    router_logits: torch.Tensor,
    w1: torch.Tensor,
    w3: torch.Tensor,
    w2: torch.Tensor,
    top_k: int,
    *,
    path: str = "auto",
) -> torch.Tensor:
    if is_deterministic():
        return _moe.moe_ffn(x, router_logits, w1, w3, w2, top_k, path=path)
    weights, experts = torch.topk(router_logits.float().softmax(-1), top_k, dim=-1)
    weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
    out = torch.zeros_like(x)
    for slot in range(top_k):
        e = experts[:, slot]
        h = F.silu(torch.einsum("td,tfd->tf", x, w1[e])) * torch.einsum("td,tfd->tf", x, w3[e])
        out = out + weights[:, slot, None] * torch.einsum("tf,tdf->td", h, w2[e])
    return out
