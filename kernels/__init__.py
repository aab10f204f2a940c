"""Latency kernels and batch-invariant ops for the interaction model (imports only torch).

`kernels.ops` is the dispatch surface the model calls; `deterministic()` switches it to the
batch-invariant implementations so the trainer and the streaming sampler agree bit for bit.
Importing the package puts MKL in strict CNR mode (kernels.cnr) before it computes anything.
"""

from kernels import cnr

cnr.enable()

from kernels.ops import (  # noqa: E402
    attention,
    deterministic,
    embedding_bag_sum,
    gelu,
    is_deterministic,
    linear,
    log_softmax,
    moe_ffn,
    rms_norm,
    set_deterministic_default,
    silu,
)

__all__ = [
    "attention",
    "deterministic",
    "embedding_bag_sum",
    "gelu",
    "is_deterministic",
    "linear",
    "log_softmax",
    "moe_ffn",
    "rms_norm",
    "set_deterministic_default",
    "silu",
]
