"""Latency kernels and batch-invariant ops for the interaction model (imports only torch).

`kernels.ops` is the dispatch surface the model calls; `deterministic()` switches it to the
batch-invariant implementations so the trainer and the streaming sampler agree bit for bit.
Importing the package puts MKL in strict CNR mode (kernels.cnr) before it computes anything.

Which guarantee holds where: the deterministic path fixes the shape class of every gemm and runs MKL
on one thread per calling thread (kernels.batch_invariant), which made it batch-invariant on an AMD
EPYC (AVX2, where strict CNR alone is not enough) and on an Intel AVX-512 machine. Nothing documents
that for other CPUs, so the first switch into the deterministic mode runs kernels.probe on this CPU
and warns when it does not hold; the test suite marks its bit-for-bit tests `bitwise` accordingly.
The decode step's 1-3 row linears and its attention run kernels.native (C, compiled on first use):
each output in one reduction order written in kernels/fixed_rows.c, the order MKL's AVX2 gemm gives a
row on this project's AMD EPYC; it is checked against the gemm path per shape and used only where
equal, so on another CPU it either matches or steps aside (`interplay bench kernels`: native_rows).
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
