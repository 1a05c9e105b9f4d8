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


# ------------------------------------------------------------------ MoBA's issue-16 paths vs the reference


def _moba_qkv(T, bs_seed=0, B=2, H=2, D=8):
    g = torch.Generator().manual_seed(bs_seed)
    return [torch.randn(B, H, T, D, generator=g).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("piece_rows,bucket_elems,split_rows", [(3, 1 << 19, 64), (5, 1, 1), (1024, 1 << 19, 64)],
                         ids=["tiny-pieces", "one-piece-per-call-split-in-backward", "defaults"])
def test_moba_pieces_and_buckets_equal_naive(monkeypatch, piece_rows, bucket_elems, split_rows):
    # Key blocks cut into pieces (a rest cut in two, some buckets padded, some K/V views; lone pieces
    # split in two for the backward, odd ones padded) must give the reference's outputs and gradients.
    from kimi_mini.moba import moba_attention

    monkeypatch.setattr(moba_efficient, "_PIECE_ROWS", piece_rows)
    monkeypatch.setattr(moba_efficient, "_BUCKET_ELEMS", bucket_elems)
    monkeypatch.setattr(moba_efficient, "_SPLIT_ROWS", split_rows)
    q, k, v = _moba_qkv(203)
    do = torch.randn_like(q)
    runs = {}
    for impl in ("naive", "torch"):
        o = moba_attention(q, k, v, 16, 4, impl=impl)
        runs[impl] = (o, *torch.autograd.grad(o, (q, k, v), do))
    for name, a, b in zip(("o", "dq", "dk", "dv"), runs["torch"], runs["naive"], strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-5, what=f"{name} (pieces of {piece_rows} rows)")


def test_moba_buckets_cover_each_choice_once(monkeypatch):
    # Every (query, chosen block) pair of every slot lands in exactly one bucket row, no bucket holds a
    # query twice, and a K/V view names the bucket's own block.
    monkeypatch.setattr(moba_efficient, "_PIECE_ROWS", 7)
    q, k, _ = (t.detach() for t in _moba_qkv(300, B=1, H=3))
    bs, n, T = 16, -(-300 // 16), 300
    hist = moba_efficient._history(q, k, bs, 4)
    seen = []
    for tr, tg, full, block in moba_efficient._history_buckets(hist, T, n, bs, lambda g, m: g * m):
        assert full == bool((tr >= 0).all())
        if block is not None:
            assert tg.tolist() == [block]
        real = tr[tr >= 0]
        assert real.unique().numel() == real.numel()  # no query twice in a bucket: merges never collide
        for row, grp in zip(tr.tolist(), tg.tolist(), strict=True):
            seen += [(r, grp) for r in row if r >= 0]
    want = []
    flat = torch.nn.functional.pad(hist, (0, 0, 0, n * bs - T), value=-1).reshape(-1, n * bs, hist.shape[-1])
    for bh in range(flat.shape[0]):
        for t in range(n * bs):
            want += [(bh * n * bs + t, bh * n + b) for b in flat[bh, t].tolist() if b >= 0]
    assert sorted(seen) == sorted(want)


def test_moba_history_selection_equals_moba_select_and_topk():
    # The compact int16 selection, the max-pass top-(k-1) and the chunked prefill loop against a
    # plain topk over all eligible blocks.
    from kimi_mini.moba import block_means, moba_select
    from kimi_mini.moba.naive import _top_blocks

    q, k, _ = (t.detach() for t in _moba_qkv(333, B=2, H=3, D=8))
    for bs, top_k in ((8, 3), (16, 5), (32, 2), (8, 7)):
        sel = moba_select(q, k, bs, top_k)
        assert torch.equal(moba_efficient._history(q, k, bs, top_k).long(), sel)
        n = -(-333 // bs)
        scores = q @ block_means(k, bs, n - 1).transpose(-1, -2)  # [B, H, T, n-1]
        eligible = torch.arange(n - 1)[None, :] < (torch.arange(333) // bs)[:, None]
        scores = scores.masked_fill(~eligible, float("-inf"))
        kk = min(top_k - 1, n - 1)
        vals, idx = scores.topk(kk, -1)
        assert torch.equal(sel, idx.masked_fill(vals == float("-inf"), -1))
        s2 = scores.clone()
        v2, i2 = _top_blocks(s2, kk)
        assert torch.equal(v2, vals)  # indices agree wherever a block is eligible (ties among -inf aside)
        assert torch.equal(i2.masked_fill(v2 == float("-inf"), -1), idx.masked_fill(vals == float("-inf"), -1))


@pytest.mark.parametrize("bs", [16, 15, 14], ids=["even", "odd-no-split", "even-small"])
def test_moba_split_current_block_equals_one_causal_call(bs):
    # The current block as two causal half-squares plus the off-diagonal rectangle, merged by lse,
    # equals one causal call over the whole block (forward and backward).
    g = torch.Generator().manual_seed(3)
    qb, kb, vb, dob = (torch.randn(6, bs, 8, generator=g, dtype=torch.float64) for _ in range(4))
    o, lse = moba_efficient._diag_forward(qb, kb, vb, 0.3)
    o_ref, lse_ref = moba_efficient.attend_part(qb, kb, vb, True, 0.3)
    assert_close(o, o_ref, rtol=1e-12, atol=1e-12, what="o")
    assert_close(lse, lse_ref, rtol=1e-12, atol=1e-12, what="lse")
    got = moba_efficient._diag_backward(dob, qb, kb, vb, o_ref, lse_ref, 0.3)
    want = moba_efficient.attend_part_backward(dob, qb, kb, vb, o_ref, lse_ref, True, 0.3)
    for name, a, b in zip(("dq", "dk", "dv"), got, want, strict=True):
        assert_close(a, b, rtol=1e-10, atol=1e-10, what=name)


def test_moe_autocast_path_equals_the_hand_written_backward():
    # Under autocast the sorted loop is differentiated by autograd; outside it the hand-written backward
    # runs. In fp32 (autocast to fp32 changes nothing numerically) the two agree, gradients included.
    x, idx, w, ws = _case(96, 16, 6, 2, 8)
    dy = torch.randn(96, 16, generator=torch.Generator().manual_seed(4))
    hand = _run(ex._experts_sorted, x, idx, w, ws, dy)
    auto = _run(ex._experts_sorted_autograd, x, idx, w, ws, dy)
    for name, a, b in zip(NAMES, hand, auto, strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-5, what=f"hand-written vs autograd {name}")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ex._experts_sorted(*[t.detach() for t in (x,)], idx, w, *ws)
    assert out.dtype == torch.bfloat16  # the autocast branch: matmuls in bf16, like a Linear
    assert_close(out.float(), hand[0], rtol=5e-2, atol=5e-2, what="bf16 autocast output")


def test_moba_forward_profile_counts_the_pairs_of_the_dense_mask():
    from kimi_mini.moba import moba_gate

    q, k, v = (t.detach() for t in _moba_qkv(203, B=1, H=2))
    prof = moba_efficient.moba_forward_profile(q, k, v, 16, 3)
    T = 203
    mask = moba_gate(q, k, 16, 3).repeat_interleave(16, dim=-1)[..., :T] & torch.ones(T, T, dtype=torch.bool).tril()
    assert prof["pairs"] == int(mask.sum())
    assert prof["causal_pairs"] == 2 * T * (T + 1) // 2
    assert prof["pairs"] <= prof["computed_pairs"] <= prof["causal_pairs"]
    assert {"gate", "current block", "history attention", "merges"} <= set(prof["ms"])
    assert abs(prof["total_ms"] - sum(prof["ms"].values())) < 1e-6
