"""kernels.native: the fixed-order rows give the padded gemm path's bits, faster.

Real compiled code (kernels/fixed_rows.c built by cc on first use) against the real MKL gemm path; seeds
named in each test. Where no compiler or no AVX2/FMA exists the path is off and the tests say so.
"""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch

import kernels
from kernels import batch_invariant as bi
from kernels import cnr, native, probe

HAS_AVX2 = {"avx2", "fma"} <= native._cpu_flags()
CAN_BUILD = HAS_AVX2 and shutil.which("cc") is not None

needs_native = pytest.mark.skipif(native.library() is None, reason=f"kernels.native is off here: {native.why()}")


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    cnr.pin_one_thread()
    yield
    torch.set_num_threads(prev)


@pytest.mark.skipif(not CAN_BUILD, reason="no cc or no AVX2/FMA on this CPU: the native path is meant to be off")
def test_the_native_library_builds_where_a_compiler_and_avx2_exist():
    assert native.library() is not None, native.why()


@needs_native
@pytest.mark.parametrize("k", [1, 16, 48, 64, 100, 192, 193, 384, 385, 512, 513, 1200])
def test_fixed_order_rows_equal_the_padded_gemm_bit_for_bit(k):
    """What the runtime relies on: `native.rows` gives the padded gemm's bits, or None where this CPU's
    gemm sums in another order (the shape is refused and runs the padded gemm; on an Intel Xeon of
    2026-12-03 every shape with k >= 193). A refusal must be earned: where shapes are refused, the fixed
    order really differs from the padded gemm on some of them."""
    g = torch.Generator().manual_seed(1000 + k)
    refused: list[bool] = []  # per refused case: whether the fixed order would have matched anyway
    for n, bias_on in itertools.product((1, 5, 16, 24, 48, 80, 288, 1024), (False, True)):
        w, x = torch.randn(n, k, generator=g), torch.randn(8, k, generator=g)
        b = torch.randn(n, generator=g) if bias_on else None
        with torch.no_grad():
            ref = bi.padded_gemm(x, w, b)
            for m in (1, 2, 3):
                out = native.rows(x[:m], w, b)
                if out is None:
                    refused.append(torch.equal(native.run(x[:m], w, b), ref[:m]))
                else:
                    assert torch.equal(out, ref[:m]), (k, n, bias_on, m)
    assert not refused or not all(refused), f"k={k}: {len(refused)} shapes refused that the fixed order gets right"


@needs_native
def test_a_reduction_order_that_differs_from_the_gemm_is_refused_for_that_shape(monkeypatch):
    monkeypatch.setattr(native, "KC", 100)  # a block length MKL does not use: K = 512 reduces differently
    monkeypatch.setattr(native, "_checked", {})
    g = torch.Generator().manual_seed(7)
    x, w = torch.randn(1, 512, generator=g), torch.randn(64, 512, generator=g)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="K=512 N=64"):
        assert native.rows(x, w, None) is None
    with torch.no_grad(), kernels.deterministic():
        assert torch.equal(kernels.linear(x, w), bi.padded_gemm(x, w))


@needs_native
def test_a_deterministic_one_row_linear_runs_the_native_rows(monkeypatch):
    calls = []
    real = native.run
    monkeypatch.setattr(native, "run", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    g = torch.Generator().manual_seed(8)
    x, w = torch.randn(1, 1, 192, generator=g), torch.randn(320, 192, generator=g)
    with torch.no_grad(), kernels.deterministic():
        out = kernels.linear(x, w)
    assert calls and calls[-1] == (1, 192)
    assert torch.equal(out, bi.padded_gemm(x, w))


def test_with_the_native_path_off_a_row_takes_the_padded_gemm(monkeypatch):
    monkeypatch.setitem(native._state, "lib", None)
    g = torch.Generator().manual_seed(9)
    x, w = torch.randn(2, 192, generator=g), torch.randn(80, 192, generator=g)
    with torch.no_grad():
        assert native.rows(x, w, None) is None
        with kernels.deterministic():
            assert torch.equal(kernels.linear(x, w), bi.padded_gemm(x, w))


@needs_native
def test_rows_that_need_gradients_take_the_padded_gemm():
    g = torch.Generator().manual_seed(10)
    x, w = torch.randn(1, 64, generator=g), torch.randn(32, 64, generator=g).requires_grad_()
    assert native.rows(x, w, None) is None


def test_the_probe_reports_whether_the_native_path_is_on():
    assert "native" in probe.report().describe()
