"""Kimi K2's MoE layer (kimi_mini.moe): router, routed scale, balancing, impl agreement, model wiring."""

import math

import pytest
import torch

from kimi_mini.model import KimiConfig, KimiMini, count_params
from kimi_mini.moe import (
    MoE,
    bias_update,
    expected_route_scale,
    max_violation,
    moe_bias_update_callback,
    moe_experts,
    moe_layers,
    sequence_aux_loss,
    sigmoid_topk_route,
)
from kimi_mini.testing import assert_close


# ------------------------------------------------------------------------------------ router
def test_route_matches_hand_computation():
    logits = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    idx, w = sigmoid_topk_route(logits, None, 2, scale=3.0)
    assert idx.tolist() == [[1, 3]]
    s = torch.sigmoid(torch.tensor([2.0, 1.0]))
    assert_close(w[0], 3.0 * s / s.sum(), rtol=1e-6, what="weights")
    assert idx.dtype == torch.int64 and w.dtype == torch.float32


def test_bias_selects_but_never_weights():
    torch.manual_seed(0)
    logits = torch.randn(50, 6)
    bias = torch.zeros(6)
    bias[4] = 10.0  # expert 4 is always chosen, whatever its score
    idx, w = sigmoid_topk_route(logits, bias, 3, scale=2.5)
    assert (idx == 4).any(-1).all()
    s = torch.sigmoid(logits).gather(-1, idx)  # unbiased scores of the chosen experts
    assert_close(w, 2.5 * s / s.sum(-1, keepdim=True), rtol=1e-6, what="weights from unbiased scores")
    assert_close(w.sum(-1), torch.full((50,), 2.5), rtol=1e-6, what="row sums")
    # a bias that does not change the ranking changes nothing at all
    idx0, w0 = sigmoid_topk_route(logits, None, 3, 2.5)
    idx1, w1 = sigmoid_topk_route(logits, torch.full((6,), 0.3), 3, 2.5)
    assert torch.equal(idx0, idx1) and torch.equal(w0, w1)


def test_route_is_computed_in_fp32():
    logits = torch.randn(8, 5).to(torch.bfloat16)
    _, w = sigmoid_topk_route(logits, None, 2)
    assert w.dtype == torch.float32


@pytest.mark.parametrize("bad", [0, 5, 2.0, True], ids=["zero", "too-big", "float", "bool"])
def test_route_rejects_bad_top_k(bad):
    with pytest.raises(ValueError, match="top_k"):
        sigmoid_topk_route(torch.randn(3, 4), None, bad)


def test_route_rejects_bad_logits_and_bias():
    with pytest.raises(ValueError, match="logits"):
        sigmoid_topk_route(torch.randn(2, 3, 4), None, 1)
    with pytest.raises(ValueError, match="logits"):
        sigmoid_topk_route(torch.randn(3, 0), None, 1)
    with pytest.raises(ValueError, match="bias"):
        sigmoid_topk_route(torch.randn(3, 4), torch.zeros(5), 1)


@pytest.mark.parametrize("n_experts,top_k,expected", [(64, 6, 2.446), (384, 8, 2.827)],
                         ids=["moonlight-64-top6", "k2-384-top8"])
def test_expected_route_scale_reproduces_moonlight_and_k2(n_experts, top_k, expected):
    rho = expected_route_scale(n_experts, top_k, samples=20_000)
    assert abs(rho - expected) < 0.002, rho
    assert rho < math.sqrt(top_k)  # √k is the equal-scores bound


def test_expected_route_scale_rejects_bad_input():
    with pytest.raises(ValueError, match="n_experts"):
        expected_route_scale(0, 1)
    with pytest.raises(ValueError, match="top_k"):
        expected_route_scale(4, 5)


# --------------------------------------------------------------------------------- balancing
def test_max_violation():
    assert max_violation(torch.tensor([5, 5, 5, 5])).item() == 0.0
    assert max_violation(torch.tensor([8, 0, 0, 0])).item() == pytest.approx(3.0)
    assert max_violation(torch.tensor([3, 1])).item() == pytest.approx(0.5)
    assert max_violation(torch.zeros(4)).item() == 0.0
    assert max_violation(torch.tensor([[2, 2], [4, 0]])).tolist() == [0.0, 1.0]


def test_bias_update_rules():
    bias = torch.zeros(4)
    counts = torch.tensor([10, 2, 2, 2])  # mean 4: expert 0 over-, the others under-loaded
    ds = bias_update(bias, counts, 0.1, rule="deepseek")
    assert_close(ds, torch.tensor([-0.1, 0.1, 0.1, 0.1]), what="deepseek")
    ml = bias_update(bias, counts, 0.1, rule="moonlight")
    assert_close(ml, torch.tensor([-0.15, 0.05, 0.05, 0.05]), atol=1e-7, what="moonlight")
    assert abs(ml.sum().item()) < 1e-7  # zero-mean update
    with pytest.raises(ValueError, match="rule"):
        bias_update(bias, counts, 0.1, rule="adam")


def test_update_bias_balances_a_skewed_router():
    torch.manual_seed(0)
    moe = MoE(16, 8, 2, 8, bias_update_speed=0.02)
    with torch.no_grad():
        moe.router.weight[0] += 0.5  # with inputs of mean 1, expert 0 wins for every token
    x = torch.randn(4, 64, 16) + 1.0
    before = None
    for _ in range(150):
        with torch.no_grad():
            moe(x)
        counts = moe.update_bias_()
        before = before if before is not None else max_violation(counts).item()
    after = max_violation(counts).item()
    assert before > 1.5 and after < 0.5 * before, (before, after)
    assert abs(moe.expert_bias.sum().item()) < 1e-4  # Moonlight's rule keeps Σb = 0
    assert moe.load_counts.sum().item() == 0  # reset after each update


def test_update_bias_is_outside_autograd_and_eval_does_not_count():
    moe = MoE(8, 4, 2, 8)
    moe.eval()
    moe(torch.randn(1, 5, 8))
    assert moe.load_counts.sum().item() == 0
    moe.train()
    y = moe(torch.randn(2, 5, 8))
    assert moe.load_counts.sum().item() == 2 * 5 * 2
    y.sum().backward()
    assert not moe.expert_bias.requires_grad and moe.expert_bias.grad is None
    assert "expert_bias" in moe.state_dict() and "load_counts" not in moe.state_dict()
    off = MoE(8, 4, 2, 8, bias_update_speed=0.0)
    off(torch.randn(2, 5, 8))
    off.update_bias_()
    assert torch.equal(off.expert_bias, torch.zeros(4))


def test_sequence_aux_loss_value_and_gradient():
    # perfectly balanced: each of 2 tokens picks a different one of 2 experts, uniform scores → 1
    scores = torch.full((2, 2), 0.5)
    idx = torch.tensor([[0], [1]])
    assert sequence_aux_loss(scores, idx, n_seq=1).item() == pytest.approx(1.0)
    # all tokens to expert 0, whose normalised score is 0.75: f = (2, 0), P = (0.75, 0.25) → 1.5
    scores = torch.tensor([[0.75, 0.25], [0.75, 0.25]])
    assert sequence_aux_loss(scores, torch.tensor([[0], [0]]), n_seq=1).item() == pytest.approx(1.5)
    # the aux loss reaches the router when enabled, and only then
    torch.manual_seed(0)
    x = torch.randn(2, 7, 8)
    grads = []
    for alpha in (0.0, 0.1):
        torch.manual_seed(1)
        moe = MoE(8, 4, 2, 8, aux_loss_alpha=alpha)
        moe(x).sum().backward()
        grads.append(moe.router.weight.grad.clone())
    assert (grads[0] - grads[1]).abs().max() > 1e-4
    assert moe.last_aux_loss is not None and moe.last_aux_loss.item() > 0


# ----------------------------------------------------------------------------- implementations
def _grads(moe, x, dy):
    moe.zero_grad()
    x = x.clone().requires_grad_()
    y = moe(x)
    y.backward(dy)
    return [y.detach(), x.grad] + [p.grad.clone() for p in moe.parameters()]


CASES = [(2, 63, 7, 3), (1, 130, 5, 2), (3, 17, 4, 4)]


@pytest.mark.parametrize("B,T,E,k", CASES, ids=[f"B{b}-T{t}-E{e}-k{k}" for b, t, e, k in CASES])
def test_naive_and_torch_impls_agree(B, T, E, k):
    torch.manual_seed(0)
    moe = MoE(24, E, k, 20, route_scale=2.0)
    with torch.no_grad():
        moe.expert_bias[0] = -5.0  # expert 0 gets no token (unless k = E): the empty-segment path
    x, dy = torch.randn(B, T, 24), torch.randn(B, T, 24)
    out = {}
    for impl in ("naive", "torch"):
        moe.impl = impl
        out[impl] = _grads(moe, x, dy)
    names = ["y", "dx"] + [n for n, _ in moe.named_parameters()]
    for name, a, b in zip(names, out["torch"], out["naive"], strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-6, what=name)
    if k < E:  # the starved expert gets exactly zero gradient
        assert out["naive"][names.index("experts.w1.weight")][0].abs().max() == 0


def test_identical_experts_reduce_to_one_scaled_expert():
    # weights sum to ρ, so with every routed expert equal the routed output is ρ·FFN(x)
    torch.manual_seed(0)
    moe = MoE(16, 6, 3, 12, n_shared=0, route_scale=2.827)
    with torch.no_grad():
        for w in (moe.experts.w1.weight, moe.experts.w3.weight, moe.experts.w2.weight):
            w.copy_(w[0:1].expand_as(w))
    x = torch.randn(2, 9, 16)
    w1, w3, w2 = moe.experts.w1.weight[0], moe.experts.w3.weight[0], moe.experts.w2.weight[0]
    expected = 2.827 * ((torch.nn.functional.silu(x @ w1) * (x @ w3)) @ w2)
    for impl in ("naive", "torch"):
        moe.impl = impl
        assert_close(moe(x), expected, rtol=1e-5, what=impl)


def test_moe_experts_and_layer_reject_bad_input():
    with pytest.raises(ValueError, match="impl"):
        MoE(8, 4, 2, 8, impl="cuda")
    with pytest.raises(ValueError, match="n_experts"):
        MoE(8, 0, 1, 8)
    with pytest.raises(ValueError, match="top_k"):
        MoE(8, 4, 5, 8)
    with pytest.raises(ValueError, match="x"):
        MoE(8, 4, 2, 8)(torch.randn(3, 8))
    w = torch.randn(4, 8, 6)
    with pytest.raises(ValueError, match="impl"):
        moe_experts(torch.randn(3, 8), torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2), w, w,
                    torch.randn(4, 6, 8), impl="fast")


def test_bias_stays_fp32_when_the_model_is_cast():
    moe = MoE(8, 4, 2, 8).to(torch.bfloat16)
    assert moe.expert_bias.dtype == torch.float32 and moe.router.weight.dtype == torch.bfloat16
    y = moe(torch.randn(1, 3, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


# ------------------------------------------------------------------------------- in the model
def _moe_config(**opts):
    ffn_options = dict(n_experts=4, top_k=2, first_k_dense_replace=1, bias_update_speed=0.01)
    ffn_options.update(opts)
    return KimiConfig(d_model=32, n_layers=3, n_heads=2, d_ff=96, max_seq_len=32, ffn="moe",
                      ffn_options=ffn_options)


def test_registered_ffn_with_dense_first_layers():
    model = KimiMini(_moe_config())
    kinds = [type(b.ffn).__name__ for b in model.blocks]
    assert kinds == ["SwiGLU", "MoE", "MoE"]
    moe = model.blocks[1].ffn
    assert moe.d_expert == 96 // 3  # d_ff / (top_k + n_shared): activated FFN width = dense width
    tokens = torch.randint(0, 256, (2, 16))
    _, loss = model(tokens, tokens)
    loss.backward()
    assert moe.experts.w2.weight.grad is not None and torch.isfinite(loss)
    with pytest.raises(ValueError, match="ffn_options"):
        KimiMini(_moe_config(capacity=2))


def test_activated_parameters_count():
    cfg = _moe_config()
    total, activated = count_params(cfg)
    d, h, E, k = 32, 32, 4, 2
    # per MoE layer, the E − k routed experts a token does not use are the difference
    assert total - activated == 2 * (E - k) * 3 * d * h
    model = KimiMini(cfg)
    assert sum(p.numel() for p in model.parameters()) == total
    # K2's MoE layer on the meta device: 384 experts × 3 × 7168 × 2048 + router + shared
    with torch.device("meta"):
        k2 = MoE(7168, 384, 8, 2048, n_shared=1, route_scale=2.827)
    per_expert = 3 * 7168 * 2048
    assert sum(p.numel() for p in k2.parameters()) == 385 * per_expert + 384 * 7168
    assert k2.activated_numel() == 9 * per_expert + 384 * 7168


def test_bias_update_callback_records_maxvio_and_moves_bias():
    torch.manual_seed(0)
    model = KimiMini(_moe_config())
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    cb = moe_bias_update_callback(record_loads=True)
    tokens = torch.randint(0, 256, (2, 16))
    record = {}
    _, loss = model(tokens, tokens)
    loss.backward()
    opt.step()
    cb(1, model, opt, record)
    layers = moe_layers(model)
    assert len(layers) == 2 and len(record["maxvio_layers"]) == 2 and len(record["loads"]) == 2
    assert [sum(c) for c in record["loads"]] == [2 * 16 * 2] * 2
    expected = [max_violation(torch.tensor(c)).item() for c in record["loads"]]
    assert record["maxvio_layers"] == pytest.approx(expected)
    assert any(m.expert_bias.abs().sum() > 0 for m in layers)


def test_moe_runs_under_autocast():
    torch.manual_seed(0)
    moe = MoE(16, 4, 2, 8)
    x = torch.randn(2, 5, 16, requires_grad=True)
    idx32, w32, _ = moe.route(x.detach().reshape(10, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx16, w16, _ = moe.route(x.detach().reshape(10, 16))
        ys = {}
        for impl in ("naive", "torch"):
            moe.impl = impl
            ys[impl] = moe(x)
    assert torch.equal(idx16, idx32) and torch.equal(w16, w32)  # the router stays fp32
    assert_close(ys["torch"], ys["naive"], rtol=2e-2, atol=2e-2, what="bf16 autocast")
    ys["torch"].float().sum().backward()
    assert torch.isfinite(x.grad).all() and moe.experts.w1.weight.grad.dtype == torch.float32
