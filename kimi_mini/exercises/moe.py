"""Exercises of notebook 01 (MoE): K2's routing weights, and Moonlight's bias update."""

from __future__ import annotations

import torch
from torch import Tensor

from kimi_mini.exercises import register_exercise
from kimi_mini.moe import bias_update, sigmoid_topk_route


def routing_weights(logits: Tensor, bias: Tensor, top_k: int, scale: float) -> tuple[Tensor, Tensor]:
    """Exercise solution: K2's routing, as :func:`sigmoid_topk_route`: ``(indices, weights)``, ``[N, k]``."""
    return sigmoid_topk_route(logits, bias, top_k, scale)


def _wrong_routing_weights(logits, bias, top_k, scale):
    choice = torch.sigmoid(logits.float()) + bias
    top = choice.topk(top_k, dim=-1)
    return top.indices, top.values / top.values.sum(-1, keepdim=True) * scale  # weights from biased scores


def _check_routing_weights(candidate) -> None:
    g = torch.Generator().manual_seed(0)
    cases = [
        (torch.tensor([[0.0, 2.0, -1.0, 1.0]]), torch.zeros(4), 2, 1.0),
        (torch.randn(6, 8, generator=g), torch.zeros(8), 3, 2.446),
        (torch.randn(6, 8, generator=g), torch.linspace(-0.5, 0.5, 8), 2, 2.827),  # bias changes the choice
    ]
    for logits, bias, k, scale in cases:
        got = candidate(logits.clone(), bias.clone(), k, scale)
        assert isinstance(got, tuple) and len(got) == 2, "return a pair (indices, weights)"
        idx, w = got
        want_idx, want_w = sigmoid_topk_route(logits, bias, k, scale)
        assert tuple(idx.shape) == tuple(want_idx.shape) and tuple(w.shape) == tuple(want_w.shape), (
            f"indices and weights must both be [N, top_k] = {tuple(want_idx.shape)}, got "
            f"{tuple(idx.shape)} and {tuple(w.shape)}")
        # compare as sets per token: sort both by expert id
        order_got, order_want = idx.long().argsort(-1), want_idx.argsort(-1)
        assert torch.equal(idx.long().gather(-1, order_got), want_idx.gather(-1, order_want)), (
            "wrong experts selected: pick the top_k of sigmoid(logits) + bias (the bias *selects*)")
        w_sorted, want_sorted = w.float().gather(-1, order_got), want_w.gather(-1, order_want)
        assert torch.allclose(w.float().sum(-1), torch.full_like(want_w[:, 0], scale), atol=1e-5), (
            f"the weights of a token must sum to scale={scale} (renormalise, then multiply by scale)")
        assert torch.allclose(w_sorted, want_sorted, atol=1e-5), (
            "weights must come from the *unbiased* sigmoid scores of the selected experts, renormalised "
            "(the bias only changes which experts are chosen)")


def moonlight_bias_update(bias: Tensor, counts: Tensor, speed: float) -> Tensor:
    """Exercise solution: ``b + u·(sign(c̄ − c) − mean(sign(c̄ − c)))`` (see :func:`bias_update`)."""
    return bias_update(bias, counts, speed, rule="moonlight")


def _wrong_moonlight_bias_update(bias, counts, speed):
    step = torch.sign(counts.float() - counts.float().mean())  # raises the bias of the busiest experts
    return bias + speed * (step - step.mean())


def _check_moonlight_bias_update(candidate) -> None:
    cases = [
        (torch.zeros(4), torch.tensor([10, 2, 2, 2]), 0.1),
        (torch.tensor([0.3, -0.1, 0.0, 0.2, 0.0]), torch.tensor([4, 4, 9, 1, 2]), 1e-3),  # c_0 = c̄: no sign
        (torch.zeros(3), torch.tensor([5, 5, 5]), 0.5),  # balanced: nothing moves
    ]
    for bias, counts, u in cases:
        got = candidate(bias.clone(), counts.clone(), u)
        want = moonlight_bias_update(bias, counts, u)
        assert torch.is_tensor(got) and got.shape == want.shape, (
            f"return the new bias, shape {tuple(want.shape)}")
        delta = got.float() - bias
        busiest = int(counts.argmax())
        assert not (delta[busiest] > 0), (
            f"counts {counts.tolist()}: expert {busiest} is over-loaded, so its bias must go down, not up "
            "(e = mean(c) - c is negative for it)")
        assert abs(float(delta.sum())) < 1e-6, "Moonlight's update has zero mean: subtract mean(sign(e))"
        assert torch.allclose(got.float(), want, atol=1e-7), (
            f"counts {counts.tolist()}, u={u}: expected {want.tolist()}, got {got.tolist()}")


register_exercise("moe_routing_weights", solution=routing_weights, wrong=_wrong_routing_weights,
                  checker=_check_routing_weights,
                  description="K2 routing: select top-k of sigmoid + bias, weight by unbiased renormalised "
                              "scores times the routed scale")
register_exercise("moe_bias_update", solution=moonlight_bias_update, wrong=_wrong_moonlight_bias_update,
                  checker=_check_moonlight_bias_update,
                  description="aux-loss-free balancing step with Moonlight's zero-mean sign rule")


# ------------------------------------------------------- predict, then run: MaxVio without balancing
SKEW_EXPERTS, SKEW_TOPK, SKEW_STEPS, SKEW_TOKENS = 8, 2, 60, 512


def simulate_bias_balancing(speed: float, seed: int = 0) -> float:
    """What the checker runs: a router whose logits favour experts 0 and 1 by +4 (every token's top-2 is
    {0, 1} at first) routes 512 tokens per step for 60 steps; after each step Moonlight's bias update with
    ``speed`` u. Returns the MaxVio of the last step."""
    from kimi_mini.moe import max_violation

    g = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(SKEW_EXPERTS)
    offsets[:2] = 4.0
    bias = torch.zeros(SKEW_EXPERTS)
    vio = float("nan")
    for _ in range(SKEW_STEPS):
        logits = torch.randn(SKEW_TOKENS, SKEW_EXPERTS, generator=g) * 0.3 + offsets
        idx, _ = sigmoid_topk_route(logits, bias, SKEW_TOPK)
        counts = torch.bincount(idx.reshape(-1), minlength=SKEW_EXPERTS)
        vio = float(max_violation(counts))
        if speed > 0:
            bias = bias_update(bias, counts, speed)
    return vio


def maxvio_without_bias_prediction() -> float:
    """Exercise solution: with u = 0 the bias never moves, so every step routes all tokens to experts 0
    and 1: c₀ = c₁ = N, the rest 0, mean c̄ = 2N/8 = N/4, MaxVio = N/(N/4) − 1 = 3."""
    return 3.0


def _check_maxvio_prediction(candidate) -> None:
    predicted = float(candidate())
    measured = simulate_bias_balancing(0.0)
    assert abs(predicted - measured) <= 0.05, (
        f"you predicted MaxVio {predicted:.3f} after {SKEW_STEPS} steps with u = 0; the run measured "
        f"{measured:.3f}. Hint: with u = 0 which experts does each token pick, every step? Then c̄ = Σc/E.")


register_exercise("maxvio_without_bias", solution=maxvio_without_bias_prediction, wrong=lambda: 0.0,
                  checker=_check_maxvio_prediction,
                  description="predict, then run: MaxVio of a skewed router when the bias speed u is 0")
