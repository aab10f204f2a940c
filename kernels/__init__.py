"""Latency kernels and batch-invariant ops for the interaction model (imports only torch).

`kernels.ops` is the dispatch surface the model calls; `deterministic()` switches it to the
batch-invariant implementations so the trainer and the streaming sampler agree bit for bit.
Importing the package puts MKL in strict CNR mode (kernels.cnr) before it computes anything.

Which guarantee holds where:
- Attention (every path: training, chunked prefill, decode) runs kernels.fused_attention where the C
  library builds (cc, AVX2 + FMA, float32 on the CPU): each row in one order written out in
  kernels/split_attention.c, our own exp included, so its bits hold by construction on any such CPU,
  AMD or Intel, with no vendor mode involved.
- The linears, norms and MoE stay on MKL gemms with a fixed shape class and one MKL thread per calling
  thread (kernels.batch_invariant). That made them batch-invariant on an AMD EPYC (AVX2, where strict
  CNR alone is not enough) and on an Intel AVX-512 machine, but no vendor documents it for every CPU,
  so the first switch into the deterministic mode runs kernels.probe on this CPU and warns when it does
  not hold; the test suite marks its bit-for-bit tests `bitwise` accordingly.
- The decode step's 1-3 row linears run kernels.native (kernels/fixed_rows.c): the order MKL's AVX2
  gemm gives a row on this project's AMD EPYC, checked against the gemm per shape and used only where
  equal, so on another CPU it either matches or steps aside (`interplay bench kernels`: native_rows).
- Without the C library (no compiler, another ISA, CUDA) attention takes kernels.splitkv's gemm path,
  whose guarantee is the MKL one above.
"""

from kernels import cnr

cnr.enable()

from kernels.ops import (  # noqa: E402
    attention,
    attention_cached,
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
    "attention_cached",
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
