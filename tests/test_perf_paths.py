"""The performance paths behind ``impl="torch"`` (issue 16) equal the references they replace: MoE's
sorted segment loop (int32 radix sort) vs the naive loop (outputs and every gradient, a zero routing
weight, fp64 gradcheck, skewed routing, unused experts); MoBA's in-place lerp merge vs ``merge_attention``."""

import pytest
import torch

from kimi_mini.moba import efficient as moba_efficient
from kimi_mini.moba.naive import merge_attention
from kimi_mini.moe import experts as ex
from kimi_mini.testing import assert_close


def _case(N, d, E, k, h, dtype=torch.float32, seed=0, skew=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=g, dtype=dtype)
    if skew:  # every token picks expert 0 first: padding would exceed the budget
        rest = torch.stack([torch.randperm(E - 1, generator=g)[: k - 1] + 1 for _ in range(N)])
        idx = torch.cat([torch.zeros(N, 1, dtype=torch.long), rest], 1)
    else:
        idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(N)])
    w = torch.rand(N, k, generator=g, dtype=dtype)
    ws = [0.3 * torch.randn(E, *s, generator=g, dtype=dtype) for s in ((d, h), (d, h), (h, d))]
    return x, idx, w, ws


def _run(fn, x, idx, w, ws, dy):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, *ws)]
    out = fn(leaves[0], idx, leaves[1], *leaves[2:])
    out.backward(dy)
    return [out] + [t.grad for t in leaves]


NAMES = ["out", "dx", "dweights", "dw1", "dw3", "dw2"]


@pytest.mark.parametrize("N,d,E,k,h", [(63, 16, 8, 2, 12), (130, 24, 5, 3, 7), (201, 8, 4, 1, 5)],
                         ids=["N63-E8-k2", "N130-E5-k3", "N201-E4-k1"])
def test_moe_segments_equal_naive(N, d, E, k, h):
    x, idx, w, ws = _case(N, d, E, k, h)
    w[0, 0] = 0.0  # a real pair with weight exactly 0 still gets its routing-weight gradient
    dy = torch.randn(N, d, generator=torch.Generator().manual_seed(1))
    segments = _run(ex._experts_sorted, x, idx, w, ws, dy)
    naive = _run(ex._experts_naive, x, idx, w, ws, dy)
    for name, b, c in zip(NAMES, segments, naive, strict=True):
        assert_close(b, c, rtol=1e-5, atol=1e-5, what=f"segments vs naive {name}")


def test_moe_segments_gradcheck_fp64():
    x, idx, w, ws = _case(11, 6, 4, 2, 5, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (x, w, *ws)]
    fn = lambda x, w, w1, w3, w2: ex._experts_sorted(x, idx, w, w1, w3, w2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("skew", [True, False], ids=["skewed", "unused-experts"])
def test_moe_segments_skewed_and_unused_experts(skew):
    x, idx, w, ws = _case(64, 8, 8, 2, 4, skew=skew)
    if not skew:
        idx = idx % 3  # experts 3..7 chosen by no token: their gradients are exactly zero
        idx[:, 1] = (idx[:, 0] + 1) % 3
    dy = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    got, ref = _run(ex._experts_sorted, x, idx, w, ws, dy), _run(ex._experts_naive, x, idx, w, ws, dy)
    for name, a, b in zip(NAMES, got, ref, strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-5, what=name)
    if not skew:
        assert all(torch.equal(g[3:], torch.zeros_like(g[3:])) for g in got[3:])


def test_moba_lerp_merge_equals_merge_attention():
    g = torch.Generator().manual_seed(0)
    o, o_p = torch.randn(50, 8, generator=g), torch.randn(20, 8, generator=g)
    lse, lse_p = 3 * torch.randn(50, generator=g), 3 * torch.randn(20, generator=g)
    r = torch.randperm(50, generator=g)[:20]
    want_o, want_lse = o.clone(), lse.clone()
    want_o[r], want_lse[r] = merge_attention(o[r], lse[r], o_p, lse_p)
    moba_efficient._merge_rows_(o, lse, r, o_p, lse_p)
    assert_close(o, want_o, rtol=1e-6, atol=1e-6, what="o")
    assert_close(lse, want_lse, rtol=1e-6, atol=1e-6, what="lse")
