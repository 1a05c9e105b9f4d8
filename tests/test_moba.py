"""MoBA (arXiv 2502.13189): the gate, the reference vs the efficient PyTorch path (outputs and
gradients), the paper's invariants, the model component (hybrid, sparse decoding) and bad input.
The Triton kernel has its own file, tests/test_moba_kernel.py."""

import math

import pytest
import torch

from kimi_mini.layers import MultiHeadAttention, causal_attention
from kimi_mini.moba import (
    MobaAttention,
    merge_attention,
    moba_attention,
    moba_gate,
    moba_select,
    moba_sparsity,
)
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.testing import assert_close


def _qkv(B, H, T, D, dtype=torch.float32, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, generator=g).to(dtype).requires_grad_(requires_grad)
                 for _ in range(3))


def _gate_by_loops(q, k, block_size, top_k):
    """The gate straight from the paper, one query at a time (tiny inputs only)."""
    B, H, T, D = q.shape
    n = math.ceil(T / block_size)
    gate = torch.zeros(B, H, T, n, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                cur = t // block_size
                gate[b, h, t, cur] = True
                blocks = k[b, h].double().split(block_size)
                # eligible: the blocks wholly before the current one
                scores = {i: float(q[b, h, t].double() @ blocks[i].mean(0)) for i in range(cur)}
                for i in sorted(scores, key=scores.get, reverse=True)[: top_k - 1]:
                    gate[b, h, t, i] = True
    return gate


# ------------------------------------------------------------------------------------------- gate


@pytest.mark.parametrize("T,bs,k", [(37, 8, 3), (40, 8, 2), (33, 16, 5)], ids=lambda x: str(x))
def test_gate_matches_the_paper_by_loops(T, bs, k):
    q, kk, _ = _qkv(2, 2, T, 8)
    assert torch.equal(moba_gate(q, kk, bs, k), _gate_by_loops(q, kk, bs, k))


def test_gate_counts_min_block_index_plus_one_and_top_k():
    # invariant 4: a query in block j attends exactly min(j + 1, top_k) blocks
    q, k, _ = _qkv(1, 3, 130, 8)
    for top_k in (1, 2, 3, 7):
        gate = moba_gate(q, k, 16, top_k)
        j = torch.arange(130) // 16
        expected = torch.minimum(j + 1, torch.tensor(top_k))
        assert torch.equal(gate.sum(-1), expected.expand(1, 3, 130)), top_k
        assert gate[..., torch.arange(130), j].all()  # the current block, always
        later = torch.arange(gate.shape[-1])[None, :] > j[:, None]
        assert not (gate & later).any()  # never a future block


def test_select_lists_history_in_descending_score():
    q, k, _ = _qkv(1, 1, 64, 4, seed=3)
    hist = moba_select(q, k, 8, 4)  # [1, 1, 64, 3]
    assert hist.shape == (1, 1, 64, 3)
    means = k[0, 0].view(8, 8, 4).mean(1)
    t = 63  # block 7: 7 eligible blocks, 3 slots
    scores = q[0, 0, t] @ means[:7].T
    assert hist[0, 0, t].tolist() == scores.topk(3).indices.tolist()
    assert hist[0, 0, 10].tolist() == [0, -1, -1]  # block 1: one eligible block, two empty slots


def test_sparsity_matches_the_paper():
    assert moba_sparsity(64 * 512, 512, 3) == pytest.approx(0.953125)  # "95.31% for 64 blocks, top-3"
    assert moba_sparsity(1000, 512, 3) == 0.0


# --------------------------------------------------------------------------- naive vs efficient path

CASES = [  # (T, block_size, top_k, dtype)
    (63, 16, 1, torch.float32),
    (63, 16, 2, torch.float32),
    (130, 16, 3, torch.float32),
    (130, 32, 2, torch.float32),
    (257, 32, 3, torch.float32),
    (257, 16, 4, torch.float32),
    (100, 16, 10, torch.float32),  # top_k >= n_blocks
    (130, 16, 3, torch.float16),
    (257, 32, 3, torch.bfloat16),
]


@pytest.mark.parametrize("T,bs,top_k,dtype", CASES,
                         ids=[f"T{T}-B{bs}-k{k}-{str(d)[6:]}" for T, bs, k, d in CASES])
def test_torch_path_matches_naive_outputs_and_gradients(T, bs, top_k, dtype):
    q, k, v = _qkv(2, 3, T, 16, dtype, requires_grad=True)
    do = torch.randn(2, 3, T, 16, generator=torch.Generator().manual_seed(9)).to(dtype)
    results = {}
    for impl in ("naive", "torch"):
        o = moba_attention(q, k, v, bs, top_k, impl=impl)
        assert o.dtype == dtype and o.shape == q.shape
        results[impl] = (o, *torch.autograd.grad(o, (q, k, v), do))
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    for name, a, b in zip(("o", "dq", "dk", "dv"), results["torch"], results["naive"], strict=True):
        assert_close(a, b, rtol=tol, atol=tol, what=f"{name} torch vs naive")


def test_explicit_part_path_matches_the_fused_kernel_path(monkeypatch):
    # The fused CPU flash kernel is private PyTorch API; the explicit softmax path must agree with it.
    import kimi_mini.moba.efficient as moba_mod

    q, k, v = _qkv(2, 2, 130, 16, requires_grad=True)
    do = torch.randn(2, 2, 130, 16, generator=torch.Generator().manual_seed(5))
    runs = []
    for fused in (True, False):
        monkeypatch.setattr(moba_mod, "_use_fused", lambda x, fused=fused: fused)
        o = moba_attention(q, k, v, 16, 3, impl="torch")
        runs.append((o, *torch.autograd.grad(o, (q, k, v), do)))
    for name, a, b in zip(("o", "dq", "dk", "dv"), *runs, strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-6, what=f"{name} explicit vs fused")


def test_naive_gradients_match_finite_differences():
    q, k, v = (t.double().requires_grad_() for t in _qkv(1, 1, 13, 4))
    assert torch.autograd.gradcheck(lambda q, k, v: moba_attention(q, k, v, 4, 2, impl="naive"), (q, k, v))


# ------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("impl", ["naive", "torch"])
def test_top_k_covering_all_blocks_is_causal_attention(impl):
    # invariant 1: T <= block_size · top_k  ⇒  MoBA = full causal attention
    q, k, v = _qkv(2, 2, 75, 16)
    for bs, top_k in ((16, 5), (25, 3), (75, 1), (8, 10)):
        assert_close(moba_attention(q, k, v, bs, top_k, impl=impl), causal_attention(q, k, v, impl="naive"),
                     rtol=1e-5, what=f"block {bs} top-{top_k}")


@pytest.mark.parametrize("impl", ["naive", "torch"])
def test_top_k_one_is_block_diagonal_causal_attention(impl):
    # invariant 2
    q, k, v = _qkv(1, 2, 70, 8)
    out = moba_attention(q, k, v, 16, 1, impl=impl)
    for s in range(0, 70, 16):
        e = min(s + 16, 70)
        assert_close(out[:, :, s:e], causal_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], impl="naive"),
                     rtol=1e-5, what=f"block at {s}")


@pytest.mark.parametrize("impl", ["naive", "torch"])
def test_future_keys_never_change_the_past(impl):
    # invariant 3: editing k, v after t leaves outputs up to t untouched (gate included)
    q, k, v = _qkv(1, 2, 96, 8)
    t = 53
    k2, v2 = k.clone(), v.clone()
    k2[:, :, t + 1:] += 5 * torch.randn_like(k2[:, :, t + 1:])
    v2[:, :, t + 1:] -= 3.0
    a = moba_attention(q, k, v, 8, 3, impl=impl)
    b = moba_attention(q, k2, v2, 8, 3, impl=impl)
    # (up to rounding: the fused kernel may tile a differently sized batch of rows differently)
    assert_close(a[:, :, : t + 1], b[:, :, : t + 1], rtol=1e-6, atol=1e-7, what="outputs up to t")
    assert not torch.allclose(a[:, :, t + 1:], b[:, :, t + 1:])


def test_sparse_selection_differs_from_causal_attention():
    # the test above could pass with a MoBA that ignores the gate; this one could not
    q, k, v = _qkv(1, 2, 96, 8)
    out = moba_attention(q, k, v, 8, 2, impl="torch")
    full = causal_attention(q, k, v, impl="naive")
    assert torch.allclose(out[:, :, :16], full[:, :, :16], atol=1e-6)  # blocks 0, 1: everything is selected
    assert (out[:, :, 24:] - full[:, :, 24:]).abs().max() > 1e-2


@pytest.mark.parametrize("impl", ["naive", "torch"])
def test_batch_equals_each_sequence_alone(impl):
    # invariant 6
    q, k, v = _qkv(3, 2, 50, 8)
    together = moba_attention(q, k, v, 8, 3, impl=impl)
    for b in range(3):
        alone = moba_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], 8, 3, impl=impl)
        assert_close(together[b:b + 1], alone, rtol=1e-6, what=f"sequence {b}")


def test_merge_attention_by_log_sum_exp_equals_attention_over_the_union():
    g = torch.Generator().manual_seed(4)
    s, v = torch.randn(5, 12, generator=g), torch.randn(12, 3, generator=g)
    parts = [(torch.softmax(s[:, sl], -1) @ v[sl], torch.logsumexp(s[:, sl], -1))
             for sl in (slice(0, 7), slice(7, 12))]
    o, lse = merge_attention(*parts[0], *parts[1])
    assert_close(o, torch.softmax(s, -1) @ v, rtol=1e-6, what="merged output")
    assert_close(lse, torch.logsumexp(s, -1), rtol=1e-6, what="merged lse")


# ------------------------------------------------------------------------------------- the model


def _moba_config(**over):
    opts = dict(block_size=8, top_k=2, full_attention_layers=1)
    opts.update(over.pop("attention_options", {}))
    base = dict(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=96, attention="moba",
                attention_options=opts)
    base.update(over)
    return KimiConfig(**base)


def test_hybrid_keeps_full_attention_in_the_last_layers():
    model = KimiMini(_moba_config(n_layers=4, attention_options=dict(full_attention_layers=2)))
    kinds = [type(b.attn) for b in model.blocks]
    assert kinds == [MobaAttention, MobaAttention, MultiHeadAttention, MultiHeadAttention]
    assert model.blocks[0].attn.block_size == 8 and model.blocks[0].attn.top_k == 2
    all_moba = KimiMini(_moba_config(attention_options=dict(full_attention_layers=0)))
    assert all(type(b.attn) is MobaAttention for b in all_moba.blocks)


def test_moba_model_with_covering_top_k_equals_the_full_attention_model():
    torch.manual_seed(0)
    moba = KimiMini(_moba_config(attention_options=dict(block_size=16, top_k=6, full_attention_layers=0)))
    full = KimiMini(_moba_config(attention="mha").replace(attention_options={}))
    full.load_state_dict(moba.state_dict())
    tokens = torch.randint(0, 256, (2, 90))
    assert_close(moba(tokens)[0], full(tokens)[0], rtol=1e-5, what="logits")


@pytest.mark.parametrize("chunks", [[13] + [1] * 70, [5, 20, 1, 1, 30, 26]],
                         ids=["token-by-token", "chunked"])
def test_sparse_decoding_equals_prefill(chunks):
    torch.manual_seed(0)
    model = KimiMini(_moba_config()).eval()
    tokens = torch.randint(0, 256, (2, sum(chunks)))
    with torch.no_grad():
        prefill, _ = model(tokens)
        cache, outs, pos = model.new_cache(), [], 0
        for c in chunks:
            outs.append(model(tokens[:, pos:pos + c], cache=cache)[0])
            pos += c
    assert_close(torch.cat(outs, 1), prefill, rtol=1e-5, atol=1e-5, what="decoded vs prefill logits")
    state = cache.layers[0]
    assert state["means"].shape == (2, 4, sum(chunks) // 8, 4 * 2)  # one mean key per completed block
    assert_close(state["means"][:, :, 2], state["k"].repeat_interleave(2, 1)[:, :, 16:24].mean(2), rtol=1e-6,
                 what="cached block mean")


def test_generate_with_cache_equals_generate_without():
    torch.manual_seed(1)
    model = KimiMini(_moba_config())
    prompt = torch.randint(0, 256, (2, 11))
    a = model.generate(prompt, 30, temperature=0)
    b = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert torch.equal(a, b)


def test_moba_model_trains():
    torch.manual_seed(2)
    model = KimiMini(_moba_config(attention_options=dict(impl="torch")))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.arange(64).repeat(4, 1) % 7  # a periodic sequence: learnable in a few steps
    losses = []
    for _ in range(30):
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# -------------------------------------------------------------------------------------- bad input


def test_bad_arguments_raise_value_error_naming_them():
    q, k, v = _qkv(1, 2, 20, 8)
    with pytest.raises(ValueError, match="block_size"):
        moba_attention(q, k, v, 0, 2)
    with pytest.raises(ValueError, match="top_k"):
        moba_attention(q, k, v, 4, 0)
    with pytest.raises(ValueError, match="impl"):
        moba_attention(q, k, v, 4, 2, impl="cuda")
    with pytest.raises(ValueError, match="k:"):
        moba_attention(q, k[:, :, :10], v, 4, 2)
    with pytest.raises(ValueError, match="v:"):
        moba_attention(q, k, v.double(), 4, 2)
    with pytest.raises(ValueError, match="q:"):
        moba_attention(q[0], k, v, 4, 2)
    with pytest.raises(ValueError, match="device"):
        moba_attention(q, k.to("meta"), v, 4, 2)
    with pytest.raises(ValueError, match="floating"):
        moba_attention(q.long(), k.long(), v.long(), 4, 2)
    with pytest.raises(ValueError, match="block_size"):
        moba_gate(q, k, -3, 2)
    with pytest.raises(ValueError, match="attention_options"):
        KimiMini(_moba_config(attention_options=dict(blocksize=8)))
    with pytest.raises(ValueError, match="full_attention_layers"):
        KimiMini(_moba_config(attention_options=dict(full_attention_layers=-1)))
    with pytest.raises(ValueError, match="top_k"):
        KimiMini(_moba_config(attention_options=dict(top_k=0)))


# ----------------------------------------------------------------------------- exercises and bench


def test_bench_quick_reports_the_summary_keys():
    from kimi_mini.bench.moba import bench_moba

    res = bench_moba(quick=True)
    assert [r["T"] for r in res.rows] == [512, 1024]
    assert res.summary["speedup_vs_sdpa_32k"] > 0
    assert "memory_vs_sdpa_32k" in res.summary
    assert res.rows[-1]["sparsity"] == pytest.approx(1 - 128 * 3 / 1024)
