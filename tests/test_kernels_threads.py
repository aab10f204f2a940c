"""kernels.threads: work spread over worker threads gives the same bits as on one thread.

Real torch gemms and the real compiled attention kernel, on seeded data; the thread count is set and
restored by each test. Batch invariance is what makes the split free, so every test compares bits.
"""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import batch_invariant as bi
from kernels import fused_attention, threads


@pytest.fixture
def two_workers():
    before = dict(threads._config)
    threads.set_threads(2)
    yield
    threads.set_threads(before["threads"], before["initializer"], before["initargs"])


def test_a_big_linear_split_over_two_workers_gives_the_one_thread_bits(two_workers):
    g = torch.Generator().manual_seed(31)
    x, w, b = torch.randn(700, 192, generator=g), torch.randn(576, 192, generator=g), torch.randn(576, generator=g)
    with torch.inference_mode():
        split = bi.linear(x, w, b)
        threads.set_threads(1)
        whole = bi.linear(x, w, b)
    assert torch.equal(split, whole)


def test_workers_run_under_the_callers_inference_mode(two_workers):
    g = torch.Generator().manual_seed(32)
    w = torch.nn.Parameter(torch.randn(64, 32, generator=g))
    with torch.inference_mode():
        out = bi.linear(torch.randn(300, 32, generator=g), w)
    assert out.is_inference() and not out.requires_grad


def test_a_job_that_fails_raises_in_the_caller(two_workers):
    def bad() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        threads.run([lambda: None, bad, lambda: None])


def test_one_thread_runs_the_jobs_in_order_on_the_caller():
    before = dict(threads._config)
    threads.set_threads(1)
    try:
        seen: list[int] = []
        threads.run([lambda i=i: seen.append(i) for i in range(5)])
    finally:
        threads.set_threads(before["threads"], before["initializer"], before["initargs"])
    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.skipif(not fused_attention.available(), reason=f"fused attention is off here: {fused_attention.why()}")
def test_several_sessions_attention_together_equals_each_alone(two_workers):
    g = torch.Generator().manual_seed(33)
    qs, ks, vs, pos, lengths = [], [], [], [], []
    for s in (300, 700, 40):
        qs.append(torch.randn(1, 3, 40, 64, generator=g))
        ks.append(torch.randn(1, s, 64, generator=g))
        vs.append(torch.randn(1, s, 64, generator=g))
        pos.append(torch.arange(s - 40, s))
        lengths.append(s)
    q = torch.cat(qs)
    with torch.no_grad(), kernels.deterministic():
        together = kernels.attention_cached(q, ks, vs, torch.stack(pos), lengths)
        alone = [kernels.attention(q[i : i + 1], ks[i][None], vs[i][None], pos[i][None], torch.tensor([lengths[i]]))
                 for i in range(3)]
    assert torch.equal(together, torch.cat(alone))
