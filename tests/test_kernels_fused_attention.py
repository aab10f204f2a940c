"""kernels.fused_attention: split-KV attention in the order kernels/split_attention.c fixes.

Real compiled code (cc on first use) on real tensors; every test names its seed. The properties are
the ones the model's bitwise tests lean on (a row's bits never depend on its call, its chunking, the
slots past what it sees, or the thread count), plus agreement with a float64 softmax and its gradient.
Where the library cannot be built (no cc, no AVX2/FMA) the path is off and these tests skip with that reason.
"""

from __future__ import annotations

import math

import pytest
import torch

from kernels import fused_attention as fa
from kernels import splitkv

pytestmark = pytest.mark.skipif(not fa.available(), reason=f"fused attention is off here: {fa.why()}")


def _qkv(seed: int, hq: int, hkv: int, t: int, s: int, dh: int, grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, h, n, dh, generator=g) for h, n in ((hq, t), (hkv, s), (hkv, s)))
    if grad:
        for x in (q, k, v):
            x.requires_grad_()
    return q, k, v


def _reference(q, k, v, pos, kv_len):
    """softmax(q k^T / sqrt(d)) v in float64, causal by absolute position, slots < kv_len."""
    n = int(kv_len[0])
    rep = q.shape[1] // k.shape[1]
    kk, vv = (x[:, :, :n].repeat_interleave(rep, 1).double() for x in (k, v))
    s = q.double() @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1])
    hidden = torch.arange(n)[None, None, :] > pos[:, :, None]
    return (s.masked_fill(hidden[:, None], float("-inf")).softmax(-1) @ vv).float()


def _full(q, k, v, split=256):
    t = q.shape[2]
    return fa.attention(q, k, v, torch.arange(t)[None], torch.tensor([t]), split)


@pytest.mark.parametrize("hq,hkv,dh", [(3, 1, 64), (4, 2, 16), (2, 2, 8)])
def test_fused_attention_agrees_with_a_float64_softmax(hq, hkv, dh):
    q, k, v = _qkv(1, hq, hkv, 600, 600, dh)
    with torch.no_grad():
        got = _full(q, k, v)
    ref = _reference(q, k, v, torch.arange(600)[None], torch.tensor([600]))
    assert (got - ref).abs().max().item() < 2e-5


def test_a_chunk_appended_to_a_cache_gets_the_bits_of_the_whole_sequence():
    q, k, v = _qkv(2, 3, 1, 700, 700, 64)
    with torch.no_grad():
        full = _full(q, k, v)
        for t0, t1 in ((0, 55), (200, 255), (250, 310), (511, 514), (645, 700)):
            chunk = fa.attention(q[:, :, t0:t1], k, v, torch.arange(t0, t1)[None], torch.tensor([t1]), 256)
            assert torch.equal(chunk, full[:, :, t0:t1]), (t0, t1)


def test_a_decode_token_gets_the_bits_of_its_row_in_the_whole_sequence():
    q, k, v = _qkv(3, 4, 2, 530, 530, 16)
    with torch.no_grad():
        full = _full(q, k, v, split=16)
        for p in (0, 1, 15, 16, 17, 255, 256, 529):
            one = fa.attention(q[:, :, p : p + 1], k, v, torch.tensor([[p]]), torch.tensor([p + 1]), 16)
            assert torch.equal(one, full[:, :, p : p + 1]), p


def test_a_row_never_depends_on_the_slots_past_its_position():
    q, k, v = _qkv(4, 3, 1, 300, 300, 64)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 150:] = torch.randn(1, 1, 150, 64, generator=torch.Generator().manual_seed(5)) * 100
    v2[:, :, 150:] = float("nan")
    with torch.no_grad():
        assert torch.equal(_full(q, k, v)[:, :, :150], _full(q, k2, v2)[:, :, :150])


def test_slots_at_or_past_kv_len_are_never_read():
    q, k, v = _qkv(6, 3, 1, 40, 400, 64)
    k[:, :, 300:], v[:, :, 300:] = float("nan"), float("nan")
    with torch.no_grad():
        out = fa.attention(q, k, v, torch.arange(260, 300)[None], torch.tensor([300]), 256)
    assert torch.isfinite(out).all()


def test_more_threads_give_the_same_bits():
    q, k, v = _qkv(7, 3, 1, 900, 900, 64)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one = _full(q, k, v)
        torch.set_num_threads(2)
        with torch.no_grad():
            two = _full(q, k, v)
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(one, two)


def test_the_training_forward_gives_the_inference_bits():
    q, k, v = _qkv(8, 3, 1, 320, 320, 64, grad=True)
    trained = _full(q, k, v)
    with torch.no_grad():
        assert torch.equal(trained, _full(q, k, v))


def test_gradients_agree_with_the_float64_reference():
    q, k, v = _qkv(9, 4, 2, 300, 300, 16, grad=True)
    w = torch.randn(1, 4, 300, 16, generator=torch.Generator().manual_seed(10))
    (_full(q, k, v) * w).sum().backward()
    got = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    (_reference(q, k, v, torch.arange(300)[None], torch.tensor([300])) * w).sum().backward()
    for a, x in zip(got, (q, k, v), strict=True):
        assert (a - x.grad).abs().max().item() < 1e-4


def test_large_scores_stay_finite_and_pick_the_largest_slot():
    q, k, v = _qkv(11, 1, 1, 1, 64, 64)
    k[0, 0, 17] = q[0, 0, 0] * 40.0  # one slot scores far above the rest
    with torch.no_grad():
        out = fa.attention(q, k, v, torch.tensor([[63]]), torch.tensor([64]), 256)
    assert torch.allclose(out[0, 0, 0], v[0, 0, 17], atol=1e-5)


def test_split_kv_attention_runs_the_fused_path_when_it_is_on(monkeypatch):
    calls = []
    real = fa._run_specs  # every call of the C kernel goes through it
    monkeypatch.setattr(fa, "_run_specs", lambda *a: calls.append(1) or real(*a))
    q, k, v = _qkv(12, 3, 1, 8, 8, 64)
    with torch.no_grad():
        splitkv.attention(q, k, v, torch.arange(8)[None], torch.tensor([8]))
    assert calls


def test_with_the_fused_path_switched_off_the_gemm_path_runs(monkeypatch):
    monkeypatch.setenv("KERNELS_FUSED_ATTENTION", "0")
    q, k, v = _qkv(13, 3, 1, 8, 8, 64)
    assert fa.attention(q, k, v, torch.arange(8)[None], torch.tensor([8]), 256) is None
    with torch.no_grad():
        out = splitkv.attention(q, k, v, torch.arange(8)[None], torch.tensor([8]))
    assert torch.allclose(out, _reference(q, k, v, torch.arange(8)[None], torch.tensor([8])), atol=2e-5)


def test_a_head_dim_that_is_not_a_multiple_of_8_takes_the_gemm_path():
    q, k, v = _qkv(14, 2, 1, 4, 4, 12)
    assert fa.attention(q, k, v, torch.arange(4)[None], torch.tensor([4]), 256) is None
