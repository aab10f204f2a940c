"""Decoder-only transformer (RMSNorm, RoPE, GQA, SwiGLU dense or MoE FFN) over kernels.ops.

One `forward` serves both paths: the whole sequence at once (training; causal mask by position)
and a chunk appended to per-session preallocated KV caches written by position (streaming).
RoPE angles come from one precomputed table indexed by absolute position, so a position's rotation
is the same bits whichever path or chunk computed it. K is stored rotated; compaction moves K to a
new position by rotating it by the (negative) shift with the same table (`rerotate`).
Every matmul, norm, attention, MoE and SiLU goes through kernels.ops, so `kernels.deterministic()`
makes each position's bits independent of the path, chunk and batch that computed it; RoPE is
plain mul/add, which rounds the same in ATen's vector body and scalar tail.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import kernels
from interaction_actor.model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


def rope_table(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [max_seq_len, head_dim/2] computed once in float64."""
    half = cfg.head_dim // 2
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
    ang = torch.arange(cfg.max_seq_len, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., Dh] rotated (half-split convention) by cos/sin [..., Dh/2] broadcast over heads."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.hq, self.hkv, self.dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wqkv = nn.Parameter(torch.randn((self.hq + 2 * self.hkv) * self.dh, cfg.d_model) * 0.02)
        self.wo = nn.Parameter(torch.randn(cfg.d_model, self.hq * self.dh) * 0.02 / math.sqrt(2 * cfg.n_layers))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                layer: int, caches: list[torch.Tensor] | None, starts: list[int] | None,
                lengths: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = kernels.linear(x, self.wqkv)
        q = qkv[..., : self.hq * self.dh].view(b, t, self.hq, self.dh)
        k = qkv[..., self.hq * self.dh : (self.hq + self.hkv) * self.dh].view(b, t, self.hkv, self.dh)
        v = qkv[..., (self.hq + self.hkv) * self.dh :].view(b, t, self.hkv, self.dh)
        q = apply_rope(q, cos, sin).transpose(1, 2)  # [B, Hq, T, Dh]
        k = apply_rope(k, cos, sin).transpose(1, 2)
        v = v.transpose(1, 2)
        if caches is None:
            kv_len = lengths if lengths is not None else torch.full((b,), t, dtype=torch.long, device=x.device)
            o = kernels.attention(q, k, v, positions, kv_len, causal=lengths is None)
        else:
            ks, vs = [], []
            for i, cache in enumerate(caches):
                s = starts[i]
                cache[layer, 0, :, s : s + t] = k[i]
                cache[layer, 1, :, s : s + t] = v[i]
                ks.append(cache[layer, 0, :, : s + t])
                vs.append(cache[layer, 1, :, : s + t])
            # every session's attention in one call (kernels spreads them over its threads)
            o = kernels.attention_cached(q, ks, vs, positions, [s + t for s in starts])
        o = o.transpose(1, 2).reshape(b, t, self.hq * self.dh)
        return kernels.linear(o, self.wo)


class DenseFFN(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.f = cfg.ffn_dim
        self.w13 = nn.Parameter(torch.randn(2 * cfg.ffn_dim, cfg.d_model) * 0.02)
        self.w2 = nn.Parameter(torch.randn(cfg.d_model, cfg.ffn_dim) * 0.02 / math.sqrt(2 * cfg.n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = kernels.linear(x, self.w13)
        return kernels.linear(kernels.silu(h[..., : self.f]) * h[..., self.f :], self.w2)


class MoEFFN(nn.Module):
    """Top-k routed SwiGLU experts (kernels.moe_ffn)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        e, f, d = cfg.moe_experts, cfg.ffn_dim, cfg.d_model
        self.top_k = cfg.moe_top_k
        self.router = nn.Parameter(torch.randn(e, d) * 0.02)
        self.w1 = nn.Parameter(torch.randn(e, f, d) * 0.02)
        self.w3 = nn.Parameter(torch.randn(e, f, d) * 0.02)
        self.w2 = nn.Parameter(torch.randn(e, d, f) * 0.02 / math.sqrt(2 * cfg.n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        out = kernels.moe_ffn(flat, kernels.linear(flat, self.router), self.w1, self.w3, self.w2, self.top_k)
        return out.reshape(shape)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = MoEFFN(cfg) if cfg.moe_experts else DenseFFN(cfg)


class Transformer(nn.Module):
    """forward(x [B, T, D], positions [B, T]) -> final-normed hidden [B, T, D].

    Sequence mode (caches None): the whole sequence, causal by position; `lengths` [B] masks
    right padding. Cache mode: `caches[b]` is session b's [layers, 2, Hkv, capacity, Dh] cache,
    `starts[b]` the position of x[b, 0]; the chunk's K/V are written in place at
    starts[b]..starts[b]+T-1 and attention reads slots 0..starts[b]+T-1 of that cache only.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        cos, sin = rope_table(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def new_cache(self, capacity: int) -> torch.Tensor:
        c = self.cfg
        return torch.zeros(c.n_layers, 2, c.n_kv_heads, capacity, c.head_dim, device=self.rope_cos.device)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, caches: list[torch.Tensor] | None = None,
                starts: list[int] | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if int(positions.max()) >= self.cfg.max_seq_len:
            raise ValueError(f"position {int(positions.max())} beyond max_seq_len {self.cfg.max_seq_len}")
        cos = self.rope_cos[positions][:, :, None, :]
        sin = self.rope_sin[positions][:, :, None, :]
        for i, blk in enumerate(self.blocks):
            x = x + blk.attn(blk.attn_norm(x), cos, sin, positions, i, caches, starts, lengths)
            x = x + blk.ffn(blk.ffn_norm(x))
        return self.norm(x)

    def rerotate(self, k: torch.Tensor, shift: int) -> torch.Tensor:
        """K [..., S, Dh] stored rotated at positions p -> rotated at p - shift (same table)."""
        cos = self.rope_cos[shift]
        sin = -self.rope_sin[shift]
        return apply_rope(k, cos, sin)
