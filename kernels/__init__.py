"""Latency kernels and batch-invariant ops for the interaction model (imports only torch).

`kernels.ops` is the dispatch surface the model calls; `deterministic()` switches it to the
batch-invariant implementations so the trainer and the streaming sampler agree bit for bit.
"""

from kernels.ops import (
    attention,
    deterministic,
    embedding_bag_sum,
    is_deterministic,
    linear,
    log_softmax,
    moe_ffn,
    rms_norm,
)

__all__ = [
    "attention",
    "deterministic",
    "embedding_bag_sum",
    "is_deterministic",
    "linear",
    "log_softmax",
    "moe_ffn",
    "rms_norm",
]
