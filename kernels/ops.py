"""The ops the interaction model computes with, behind one switch.

Every model module calls these functions (never F.linear / sdpa directly), so that
`with deterministic():` routes the whole model through the batch-invariant kernels of this
package, and the default path uses plain torch ops. Signatures are the contract:

  linear(x[..., K], weight[N, K], bias[N] | None) -> [..., N]
  rms_norm(x[..., D], weight[D], eps) -> [..., D]
  log_softmax(x, dim=-1)
  embedding_bag_sum(table[V, D], idx[..., B]) -> [..., D]      (sum over the last index axis)
  attention(q[B, Hq, Tq, Dh], k[B, Hkv, S, Dh], v[B, Hkv, S, Dh], q_pos[B, Tq], kv_len[B]) -> [B, Hq, Tq, Dh]
      causal by absolute position: query at absolute position p sees cache slots 0..p
      (and only slots < kv_len[b]); GQA when Hq is a multiple of Hkv.
  moe_ffn(x[T, D], router_logits[T, E], w1[E, F, D], w3[E, F, D], w2[E, D, F], top_k) -> [T, D]
      SwiGLU experts; top-k softmax-renormalised routing; experts summed in slot order.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

_state = threading.local()


def is_deterministic() -> bool:
    return getattr(_state, "deterministic", False)


@contextlib.contextmanager
def deterministic(enabled: bool = True):
    """Route every op of this module through the batch-invariant kernels while active."""
    prev = is_deterministic()
    _state.deterministic = enabled
    try:
        yield
    finally:
        _state.deterministic = prev


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return F.log_softmax(x, dim=dim)


def embedding_bag_sum(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return table[idx].sum(dim=-2)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, kv_len: torch.Tensor
) -> torch.Tensor:
    b, hq, tq, dh = q.shape
    s = k.shape[2]
    rep = hq // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    slots = torch.arange(s, device=q.device)
    mask = (slots[None, None, :] <= q_pos[:, :, None]) & (slots[None, None, :] < kv_len[:, None, None])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, :, :])


def moe_ffn(
    x: torch.Tensor,
    router_logits: torch.Tensor,
    w1: torch.Tensor,
    w3: torch.Tensor,
    w2: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    weights, experts = torch.topk(router_logits.float().softmax(-1), top_k, dim=-1)
    weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
    out = torch.zeros_like(x)
    for slot in range(top_k):
        e = experts[:, slot]
        h = F.silu(torch.einsum("td,tfd->tf", x, w1[e])) * torch.einsum("td,tfd->tf", x, w3[e])
        out = out + weights[:, slot, None] * torch.einsum("tf,tdf->td", h, w2[e])
    return out
