"""Property tests of the core ops (hypothesis): random valid shapes agree across implementations, stay
finite and causal; random invalid arguments are a ``ValueError``.

Profiles: ``ci`` (default: few examples, part of ``make test``) and ``thorough`` (many):
``HYPOTHESIS_PROFILE=thorough pytest tests/test_properties.py``.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimi_mini.layers import causal_attention
from kimi_mini.moba import moba_attention
from kimi_mini.moe import moe_experts, sigmoid_topk_route
from kimi_mini.optim import newton_schulz
from kimi_mini.testing import assert_close

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _randn(shape, seed, dtype=torch.float32, contiguous=True):
    g = torch.Generator().manual_seed(seed)
    if contiguous or len(shape) != 4:
        return torch.randn(*shape, generator=g).to(dtype)
    B, H, T, D = shape  # a non-contiguous [B, H, T, D] view of a [B, T, H, D] tensor, as attention layers make
    return torch.randn(B, T, H, D, generator=g).to(dtype).transpose(1, 2)


moba_shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 70), st.sampled_from([2, 4, 8, 16]),
                        st.integers(1, 40), st.integers(1, 6), st.booleans(), st.integers(0, 2**16))


@given(moba_shapes)
def test_moba_naive_equals_torch_finite_and_causal(args):
    B, H, T, D, block, top_k, contiguous, seed = args
    q, k, v = (_randn((B, H, T, D), seed + i, contiguous=contiguous) for i in range(3))
    ref = moba_attention(q, k, v, block, top_k, impl="naive")
    out = moba_attention(q, k, v, block, top_k, impl="torch")
    assert out.shape == q.shape and torch.isfinite(out).all()
    assert_close(out, ref, rtol=1e-4, atol=1e-5, what=f"torch vs naive {args}")
    if T > 1:  # causality: changing the last position never changes earlier outputs
        k2, v2 = k.clone(), v.clone()
        k2[:, :, -1] += 5.0
        v2[:, :, -1] -= 3.0
        out2 = moba_attention(q, k2, v2, block, top_k, impl="torch")
        assert torch.equal(out2[:, :, :-1], out[:, :, :-1])


@settings(max_examples=4)
@given(st.integers(1, 40), st.sampled_from([16, 32]), st.integers(1, 3), st.integers(0, 1000))
def test_moba_triton_in_the_interpreter_equals_naive(T, D, top_k, seed):
    q, k, v = (_randn((1, 2, T, D), seed + i) for i in range(3))
    ref = moba_attention(q, k, v, 16, top_k, impl="naive")
    assert_close(moba_attention(q, k, v, 16, top_k, impl="triton"), ref, rtol=1e-4, atol=1e-5, what="triton")


@given(st.integers(1, 2), st.integers(1, 50), st.integers(0, 2), st.sampled_from([1, 2]), st.integers(0, 2**16))
def test_causal_attention_naive_equals_torch(B, t_q, extra, group, seed):
    H_kv = 2
    q = _randn((B, H_kv * group, t_q, 8), seed)
    k, v = _randn((B, H_kv, t_q + extra, 8), seed + 1), _randn((B, H_kv, t_q + extra, 8), seed + 2)
    assert_close(causal_attention(q, k, v, "torch"), causal_attention(q, k, v, "naive"), rtol=1e-5, atol=1e-6)


@given(st.integers(0, 40), st.integers(1, 8), st.data(), st.integers(1, 12), st.integers(0, 2**16))
def test_moe_naive_equals_torch(N, E, data, h, seed):
    top_k = data.draw(st.integers(1, E))  # top_k = n_experts included
    x, logits = _randn((N, 6), seed), _randn((N, E), seed + 1)
    w1, w3, w2 = _randn((E, 6, h), seed + 2), _randn((E, 6, h), seed + 3), _randn((E, h, 6), seed + 4)
    idx, wts = sigmoid_topk_route(logits, None, top_k, 2.0)
    if N:
        assert_close(wts.sum(-1), torch.full((N,), 2.0), rtol=1e-6, atol=1e-6, what="weights sum to the scale")
    ref = moe_experts(x, idx, wts, w1, w3, w2, impl="naive")
    out = moe_experts(x, idx, wts, w1, w3, w2, impl="torch")
    assert out.shape == (N, 6) and torch.isfinite(out).all()
    assert_close(out, ref, rtol=1e-5, atol=1e-5, what="moe torch vs naive")


@given(st.integers(0, 3), st.integers(0, 24), st.integers(1, 24), st.integers(0, 2**16))
def test_newton_schulz_is_finite_and_keeps_the_shape(batch, m, n, seed):
    G = _randn((batch, m, n) if batch else (m, n), seed)
    X = newton_schulz(G)
    assert X.shape == G.shape and torch.isfinite(X).all()
    if m and n and batch == 0:  # NS(Gᵀ) = NS(G)ᵀ: the transposed input takes the same path
        assert_close(newton_schulz(G.mT), X.mT, rtol=1e-5, atol=1e-5)


@given(st.one_of(st.integers(-10, 0), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=3)))
def test_moba_rejects_any_bad_block_size(block_size):
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(ValueError, match="block_size"):
        moba_attention(q, q, q, block_size, 2)


@given(st.integers(1, 6), st.one_of(st.integers(-5, 0), st.integers(7, 20)))
def test_route_rejects_top_k_outside_1_to_n_experts(E, top_k):
    top_k = top_k if top_k <= 0 else E + top_k
    with pytest.raises(ValueError, match="top_k"):
        sigmoid_topk_route(torch.randn(3, E), None, top_k)


@given(st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf"))))
def test_route_rejects_a_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        sigmoid_topk_route(torch.randn(3, 4), None, 2, scale)


def test_nan_query_rows_propagate_identically_in_every_impl():
    q, k, v = (_randn((1, 2, 40, 16), i) for i in range(3))
    q[0, 1, 21] = float("nan")
    outs = {impl: moba_attention(q, k, v, 8, 3, impl=impl) for impl in ("naive", "torch", "triton")}
    for impl, o in outs.items():
        nan_rows = o.isnan().any(-1)
        assert nan_rows[0, 1, 21] and nan_rows.sum() == 1, impl


# ------------------------------------------------------------------ topic kernels and metrics (issue 29)
@settings(max_examples=4)
@given(st.integers(0, 9), st.integers(1, 40), st.integers(0, 2**16))
def test_token_logprobs_triton_equals_torch_and_is_a_log_probability(N, V, seed):
    from kimi_mini.prompts.rank import token_logprobs

    logits = _randn((N, V), seed)
    targets = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(seed))
    ref = token_logprobs(logits, targets, impl="torch")
    assert ref.shape == (N,) and bool((ref <= 1e-6).all())
    assert_close(token_logprobs(logits, targets, impl="triton"), ref, rtol=1e-4, atol=1e-5)


@given(st.integers(1, 9), st.integers(1, 20), st.data())
def test_token_logprobs_rejects_any_out_of_range_target(N, V, data):
    from kimi_mini.prompts.rank import token_logprobs

    bad = data.draw(st.one_of(st.integers(-1000, -1), st.integers(V, V + 1000)))
    targets = torch.zeros(N, dtype=torch.long)
    targets[data.draw(st.integers(0, N - 1))] = bad
    for impl in ("torch", "triton"):
        with pytest.raises(ValueError, match="targets"):
            token_logprobs(torch.randn(N, V), targets, impl=impl)


@settings(max_examples=4)
@given(st.integers(1, 30), st.integers(1, 9), st.integers(1, 5), st.integers(0, 2**16))
def test_central_moments_triton_equals_torch_equals_reference(N, D, K, seed):
    from kimi_mini.kernels.moments import central_moments
    from kimi_mini.rationale.cmd import central_moments_reference, central_moments_torch

    x = _randn((N, D), seed)
    ref = central_moments_reference(x, K)
    assert_close(central_moments_torch(x, K), ref, rtol=1e-4, atol=1e-5)
    assert_close(central_moments(x, K), ref, rtol=1e-4, atol=1e-4)


@given(st.integers(1, 20), st.integers(1, 6), st.integers(0, 2**16))
def test_cmd_is_zero_on_itself_symmetric_and_non_negative(N, D, seed):
    from kimi_mini.rationale.cmd import cmd

    x, y = _randn((N, D), seed), _randn((N + 1, D), seed + 1)
    assert float(cmd(x, x)) == 0.0
    assert float(cmd(x, y)) >= 0.0 and abs(float(cmd(x, y)) - float(cmd(y, x))) < 1e-5


@settings(max_examples=4)
@given(st.integers(0, 12), st.integers(1, 9), st.integers(1, 3), st.integers(1, 3), st.integers(1, 5),
       st.booleans(), st.integers(0, 2**16))
def test_polynomial_fusion_triton_equals_torch_equals_naive(N, D, P, R, K, transposed, seed):
    from kimi_mini.fusion.ops import polynomial_fusion

    z = _randn((D, N), seed).t() if transposed else _randn((N, D), seed)  # a non-contiguous z is valid too
    factors = _randn((P, R, D, K), seed + 1) / D ** 0.5
    ref = polynomial_fusion(z, factors, "naive")
    assert ref.shape == (N, K)
    assert_close(polynomial_fusion(z, factors, "torch"), ref, rtol=1e-4, atol=1e-5)
    assert_close(polynomial_fusion(z, factors, "triton"), ref, rtol=1e-4, atol=1e-4)


positions = st.lists(st.integers(1, 60), max_size=12, unique=True).map(sorted)


@given(positions, positions, st.integers(2, 5))
def test_boundary_similarity_is_in_0_1_symmetric_and_1_on_itself(ref, hyp, n_t):
    from kimi_mini.storywars.metrics import boundary_similarity

    b = boundary_similarity(ref, hyp, n_t)
    assert 0.0 <= b <= 1.0 and b == boundary_similarity(hyp, ref, n_t)
    assert boundary_similarity(ref, ref, n_t) == 1.0


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=20), st.integers(0, 2**16))
def test_spearman_is_in_minus1_1_and_1_on_a_monotone_map(x, seed):
    from kimi_mini.storywars.metrics import spearman

    y = [2 * v for v in x]  # doubling is exact in floating point: order and ties kept
    rho = spearman(x, list(reversed(x)))
    assert -1.0 - 1e-9 <= rho <= 1.0 + 1e-9
    assert spearman(x, y) == (0.0 if len(set(x)) == 1 else pytest.approx(1.0))


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=6).filter(
    lambda v: any(not math.isfinite(e) for e in v)))
def test_spearman_rejects_non_finite_scores(x):
    from kimi_mini.storywars.metrics import spearman

    with pytest.raises(ValueError, match="x"):
        spearman(x, list(range(len(x))))


@given(st.integers(1, 4), st.integers(1, 8), st.integers(0, 2**16))
def test_rationale_metrics_are_fractions_and_perfect_on_gold(B, T, seed):
    from kimi_mini.rationale.metrics import rationale_metrics

    g = torch.Generator().manual_seed(seed)
    sel, gold = torch.rand(B, T, generator=g) < 0.5, torch.rand(B, T, generator=g) < 0.5
    m = rationale_metrics(sel, gold)
    assert all(0.0 <= v <= 1.0 for v in m.values())
    if gold.any():
        assert rationale_metrics(gold, gold)["f1"] == 1.0


@settings(max_examples=3)
@given(st.integers(1, 7), st.integers(1, 70), st.sampled_from([None, 16, 32]), st.integers(0, 2**16))
def test_logprob_kernel_is_log_softmax_gather_in_value_and_gradient(N, V, block_v, seed):
    from kimi_mini.kernels.logprob import token_logprobs

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, V, generator=g, requires_grad=True)
    t = torch.randint(0, V, (N,), generator=g)
    t[0] = -100  # an ignored row: 0, and no gradient
    w = torch.randn(N, generator=g)
    got = token_logprobs(x, t, block_v=block_v)
    (got * w).sum().backward()
    dx, x.grad = x.grad.clone(), None
    want = torch.log_softmax(x, -1).gather(-1, t.clamp_min(0)[:, None])[:, 0] * (t != -100)
    (want * w).sum().backward()
    assert got[0] == 0.0 and bool((dx[0] == 0).all())
    assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    assert_close(dx, x.grad, rtol=1e-4, atol=1e-5)


@settings(max_examples=4)
@given(st.integers(2, 20), st.integers(1, 5), st.floats(-100, 100), st.integers(0, 2**16))
def test_central_moments_kernel_shift_moves_only_the_mean(N, D, shift, seed):
    from kimi_mini.kernels.moments import central_moments

    x = _randn((N, D), seed)
    a, b = central_moments(x, 4), central_moments(x + shift, 4)  # central moments c_k (k >= 2) ignore a shift
    assert_close(b[0], a[0] + shift, rtol=1e-5, atol=1e-4)
    assert_close(b[1:], a[1:], rtol=1e-3, atol=1e-3 * (1 + abs(shift)) ** 2)
    assert bool((a[1] >= 0).all())  # c_2 is a variance


@given(st.integers(0, 8), st.integers(1, 6), st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**16))
def test_polynomial_fusion_of_order_one_is_linear(N, D, R, K, seed):
    from kimi_mini.fusion.ops import polynomial_fusion

    z, factors = _randn((N, D), seed), _randn((1, R, D, K), seed + 1)
    assert_close(polynomial_fusion(z, factors), z @ factors[0].sum(0), rtol=1e-5, atol=1e-5)  # P = 1: Σ_r W_r z


labels = st.lists(st.sampled_from("abc"), min_size=1, max_size=12)


@given(labels, st.data())
def test_macro_f1_is_a_fraction_one_on_itself_and_blind_to_label_names(gold, data):
    from kimi_mini.storywars.metrics import macro_f1

    pred = data.draw(st.lists(st.sampled_from("abc"), min_size=len(gold), max_size=len(gold)))
    f = macro_f1(gold, pred)
    assert 0.0 <= f <= 1.0 and macro_f1(gold, gold) == 1.0
    assert f == pytest.approx(macro_f1(pred, gold))  # per-class F1 is symmetric in (gold, pred); the union too
    rename = dict(zip("abc", data.draw(st.permutations("xyz")), strict=True))
    assert f == pytest.approx(macro_f1([rename[v] for v in gold], [rename[v] for v in pred]))


words = st.lists(st.sampled_from(["the", "cat", "sat", "on", "a", "mat"]), max_size=10).map(" ".join)


@given(words, words)
def test_rouge_l_token_f1_is_a_symmetric_fraction_and_one_on_itself(a, b):
    from kimi_mini.storywars.metrics import rouge_l

    r = rouge_l(a, b)
    assert 0.0 <= r <= 1.0 and r == pytest.approx(rouge_l(b, a))
    assert rouge_l(a, a) == (1.0 if a else 0.0)
    assert rouge_l(a.upper(), b) == r  # lower-cased word tokens


@given(st.lists(st.integers(-50, 50), min_size=2, max_size=15), st.data())
def test_spearman_is_invariant_under_monotone_maps_and_flips_sign_under_reversal(x, data):
    from kimi_mini.storywars.metrics import spearman

    y = data.draw(st.lists(st.integers(-50, 50), min_size=len(x), max_size=len(x)))
    rho = spearman(x, y)
    assert spearman([v ** 3 + 7 for v in x], y) == pytest.approx(rho)  # strictly increasing: same ranks
    assert spearman(x, [math.exp(v / 10) for v in y]) == pytest.approx(rho)
    assert spearman(x, [-v for v in y]) == pytest.approx(-rho)
    assert spearman(y, x) == pytest.approx(rho)


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=2, max_size=20).filter(
    lambda r: len({s for _, s in r}) == 2))
def test_demographic_parity_gap_is_a_fraction_blind_to_which_group_is_which(rows):
    from kimi_mini.invariance.probe import demographic_parity_gap

    y, s = torch.tensor([a for a, _ in rows]), torch.tensor([b for _, b in rows])
    gap = demographic_parity_gap(y, s)
    assert 0.0 <= gap <= 1.0 and gap == pytest.approx(demographic_parity_gap(y, 1 - s))
    assert demographic_parity_gap(torch.zeros_like(y), s) == 0.0  # a constant prediction is parity


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=8), st.floats(1, 1e3), st.floats(0, 5))
def test_budget_penalty_is_zero_within_budget_capped_and_monotone(n, budget, weight):
    from kimi_mini.agentic.rl import budget_penalty

    n_t = torch.tensor(n)
    b = torch.full_like(n_t, budget)
    p = budget_penalty(n_t, b, weight)
    assert bool((p <= 0).all()) and bool((p >= -weight - 1e-6).all())
    assert bool((p[n_t <= b] == 0).all())
    assert bool((budget_penalty(n_t + 1.0, b, weight) <= p + 1e-6).all())  # a longer answer never earns more


@given(st.integers(1, 3), st.integers(2, 5), st.floats(0.01, 2.0), st.floats(-5, 5), st.integers(0, 2**16))
def test_k15_loss_is_non_negative_and_blind_to_a_per_task_reward_offset(N, K, tau, offset, seed):
    from kimi_mini.agentic.rl import k15_policy_loss

    g = torch.Generator().manual_seed(seed)
    new, old, r = torch.randn(N, K, generator=g), torch.randn(N, K, generator=g), torch.rand(N, K, generator=g)
    loss = k15_policy_loss(new, old, r, tau)
    assert float(loss) >= 0.0
    assert_close(k15_policy_loss(new, old, r + offset, tau), loss, rtol=1e-4, atol=1e-5)  # only r − r̄ counts
    assert float(k15_policy_loss(old, old, torch.ones(N, K), tau)) == 0.0  # π = π_old, equal rewards: nothing to do
