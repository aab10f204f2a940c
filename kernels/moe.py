"""Batch-invariant MoE FFN: a gather+gemv decode path and a grouped per-expert path with the same bits.

Routing: the top-k router logits, softmax over them (= the top-k of the softmax, renormalised). Each (token, slot) pair runs its
expert's SwiGLU through kernels.batch_invariant.mm, whose row bits do not depend on the row count;
the k slot outputs are then summed in slot order. `gather` indexes the routed expert's weights for
each (token, slot) pair and contracts the token with them (gemv; gpt-fast's mixtral-moe shape, here
on weight views instead of a gathered copy; each gemv in kernels.native's fixed order, which equals the
gemm's rows and is checked per shape); `grouped` runs one gemm per expert over the rows routed
to it. `auto` picks gather up to GATHER_MAX_TOKENS tokens (decode), grouped above (prefill, training).
"""

from __future__ import annotations

import torch

from kernels import native
from kernels.batch_invariant import mm, row_sum, silu

GATHER_MAX_TOKENS = 1  # auto: gather+gemv up to this many tokens (bench_kernels: grouped wins from 4 on)


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, E] logits -> (weights [T, k] float32, experts [T, k] long), row-local: the top-k logits and the
    softmax over just those (in exact arithmetic the full softmax's top-k renormalised; 4 ops, not 8)."""
    top, experts = torch.topk(router_logits.float(), top_k, dim=-1)  # sorted: the row max comes first
    e = torch.exp(top - top[:, :1])
    return e / row_sum(e, keepdim=True), experts


def _combine(ys: list[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """Slot outputs ys[slot] [T, D] and their weights w [T, k] -> [T, D], summed in slot order (elementwise:
    a token's bits are the same combined alone or with others)."""
    out = ys[0] * w[:, 0, None]
    for slot in range(1, len(ys)):
        out = out + ys[slot] * w[:, slot, None]
    return out


def _gate_up_down(xi: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor, e: int) -> torch.Tensor:
    """Expert e's SwiGLU of one token [1, D] -> [1, D]: kernels.native's fixed-order rows where they apply
    (the padded gemm's bits at a gemv's cost, gate and up in one call), else the padded gemms."""
    gu = native.expert_rows(xi, (w1, w3), e)
    if gu is None:
        return mm(silu(mm(xi, w1[e].t())) * mm(xi, w3[e].t()), w2[e].t())
    f = w1.shape[1]
    h = silu(gu[:, :f]) * gu[:, f:]
    out = native.expert_rows(h, (w2,), e)
    return mm(h, w2[e].t()) if out is None else out


def moe_gather(x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor,
               w2: torch.Tensor) -> torch.Tensor:
    """Gather+gemv: per (token, slot) pair, the routed expert's weights contract that one token."""
    w = weights.to(x.dtype)
    outs = [_combine([_gate_up_down(x[i : i + 1], w1, w3, w2, e) for e in row], w[i : i + 1])
            for i, row in enumerate(experts.tolist())]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def moe_grouped(x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor,
                w2: torch.Tensor) -> torch.Tensor:
    """Grouped: for each expert with tokens, one gemm over the (token, slot) rows routed to it."""
    t, k = experts.shape
    d = x.shape[1]
    flat = experts.reshape(-1)
    y = x.new_empty(t * k, d)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=w1.shape[0]).tolist()
    start = 0
    for ex, c in enumerate(counts):
        if not c:
            continue
        rows = order[start : start + c]
        start += c
        xe = x[rows // k]
        h = silu(mm(xe, w1[ex].t())) * mm(xe, w3[ex].t())
        y[rows] = mm(h, w2[ex].t())
    y = y.view(t, k, d)
    return _combine([y[:, slot] for slot in range(k)], weights.to(x.dtype))


def moe_ffn(x: torch.Tensor, router_logits: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor,
            top_k: int, *, path: str = "auto") -> torch.Tensor:
    """x [T, D] -> [T, D]; path "gather", "grouped" or "auto" (gather for <= GATHER_MAX_TOKENS tokens)."""
    if path not in ("auto", "gather", "grouped"):
        raise ValueError(f"unknown moe path {path!r}; use 'auto', 'gather' or 'grouped'")
    if x.shape[0] == 0:
        return x.new_zeros(x.shape)
    weights, experts = route(router_logits, top_k)
    if path == "gather" or (path == "auto" and x.shape[0] <= GATHER_MAX_TOKENS):
        return moe_gather(x, weights, experts, w1, w3, w2)
    return moe_grouped(x, weights, experts, w1, w3, w2)
