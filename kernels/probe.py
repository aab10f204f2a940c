"""Does the batch-invariant path hold on this CPU? Measured at start-up, not assumed.

The deterministic kernels rest on one fact about the BLAS underneath: within the shape class that
kernels.batch_invariant fixes (padded rows and columns, one MKL thread), a row's K order does not
depend on how many rows share the gemm. No vendor documents that for every CPU, so `report()` checks
it on this one: seeded random rows through `linear`, `bmm`, split-KV attention and the MoE paths, each
alone, in batches of 1..20 and more rows, at several offsets, compared bit for bit with the same rows
computed in one big call. About 0.1 s, once per process (cached).

`kernels.ops` calls it the first time the deterministic mode is switched on; when it fails, a
RuntimeWarning and a log line say which op and shape broke on which CPU: a session's bits may then
depend on its batch-mates here, and the bitwise tests say so (tests/conftest.py: `bitwise`).
"""

from __future__ import annotations

import dataclasses
import platform
import warnings
from functools import cache

import torch

from kernels import batch_invariant as bi
from kernels import cnr, fused_attention, moe, native, splitkv

ROW_COUNTS = (*range(1, 21), 33, 40)


@dataclasses.dataclass(frozen=True)
class Report:
    """The probe's verdict: `holds` when every op gave every row the same bits in every batch."""

    holds: bool
    cpu: str
    strict_cnr: bool
    failures: tuple[str, ...]

    def describe(self) -> str:
        head = f"batch invariance {'holds' if self.holds else 'does NOT hold'} on {self.cpu}"
        head += (f" (MKL strict CNR {'on' if self.strict_cnr else 'off'}; native fixed-order rows {native.why()};"
                 f" fused split-KV attention {'on' if fused_attention.available() else fused_attention.why()})")
        return head if self.holds else head + ": " + "; ".join(self.failures[:6])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _rows_differ(fn, x: torch.Tensor) -> list[tuple[int, int]]:
    ref = fn(x)
    bad = []
    for m in ROW_COUNTS:
        for start in sorted({0, 1, x.shape[0] - m}):
            if start + m <= x.shape[0] and not torch.equal(fn(x[start : start + m]), ref[start : start + m]):
                bad.append((m, start))
    return bad


def _checks(g: torch.Generator) -> list[str]:
    failures = []
    # linear at the model's kinds of shapes, narrow outputs (routers) included, with and without bias
    for k, n in ((64, 128), (192, 320), (256, 1024), (1024, 256), (192, 6), (80, 12)):
        x, w, b = torch.randn(40, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
        for bias in (None, b):
            bad = _rows_differ(lambda t, w=w, bias=bias: bi.linear(t, w, bias), x)
            if bad:
                failures.append(f"linear K={k} N={n}{' +bias' if bias is not None else ''}: (rows, offset) {bad[:3]}")
    # bmm with a batch of groups, narrow and wide right-hand sides
    for n in (5, 40, 257):
        a, bm = torch.randn(3, 40, 64, generator=g), torch.randn(3, 64, n, generator=g)
        bad = _rows_differ(lambda t, bm=bm: bi.bmm(t.transpose(0, 1), bm).transpose(0, 1), a.transpose(0, 1))
        if bad:
            failures.append(f"bmm K=64 N={n}: (rows, offset) {bad[:3]}")
    # split-KV attention: the whole sequence, then one token at a time against a growing cache
    hq, hkv, dh, s_len, split = 4, 2, 16, 45, 16
    q, k, v = (torch.randn(1, h, s_len, dh, generator=g) for h in (hq, hkv, hkv))
    full = splitkv.attention(q, k, v, torch.arange(s_len)[None], torch.tensor([s_len]), split=split)
    for p in (0, 1, 5, 15, 16, 30, 44):
        one = splitkv.attention(q[:, :, p : p + 1], k[:, :, : p + 1], v[:, :, : p + 1], torch.tensor([[p]]),
                                torch.tensor([p + 1]), split=split)
        if not torch.equal(one, full[:, :, p : p + 1]):
            failures.append(f"split-KV attention: token {p} alone differs from the whole sequence")
            break
    # MoE: gather+gemv equals grouped, and a token's output does not depend on the other tokens
    e, f, d = 6, 48, 64
    w1, w3 = torch.randn(e, f, d, generator=g) * 0.1, torch.randn(e, f, d, generator=g) * 0.1
    w2 = torch.randn(e, d, f, generator=g) * 0.1
    x, router = torch.randn(12, d, generator=g), torch.randn(12, e, generator=g)
    grouped = moe.moe_ffn(x, router, w1, w3, w2, 2, path="grouped")
    if not torch.equal(moe.moe_ffn(x, router, w1, w3, w2, 2, path="gather"), grouped):
        failures.append("MoE: gather+gemv differs from grouped")
    if not torch.equal(moe.moe_ffn(x[3:4], router[3:4], w1, w3, w2, 2), grouped[3:4]):
        failures.append("MoE: one token alone differs from the same token among 12")
    return failures


@cache
def report() -> Report:
    """Run the probe once in this process (seeded; no grad) and return its verdict."""
    was_pinned = cnr.pinned()
    try:
        with torch.no_grad():
            failures = _checks(torch.Generator().manual_seed(20261130))
    finally:
        if cnr.pinned() and not was_pinned:
            cnr.set_local_threads(0)
    return Report(holds=not failures, cpu=cpu_name(), strict_cnr=cnr.strict(), failures=tuple(failures))


def warn_if_broken(stacklevel: int = 3) -> Report:
    """The report; a RuntimeWarning (once per process) when batch invariance does not hold here."""
    r = report()
    if not r.holds and not _warned:
        _warned.append(True)
        warnings.warn(r.describe(), RuntimeWarning, stacklevel=stacklevel)
    return r


_warned: list[bool] = []
