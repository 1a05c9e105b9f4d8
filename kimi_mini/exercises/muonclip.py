"""Exercises of notebook 03 (MuonClip / MLA): QK-Clip of one MHA layer, and which MLA parts it scales."""

from __future__ import annotations

import torch
from torch import Tensor

from kimi_mini.exercises import register_exercise
from kimi_mini.qk_clip import mla_clip_factors, qk_clip_, qk_clip_gamma, qk_clip_mha_weights


def _wrong_qk_clip_mha_weights(wq, wk, max_logit, tau, alpha=0.5):
    g = (tau / max_logit.float()).repeat_interleave(wq.shape[0] // max_logit.numel())[:, None]
    return wq * g**alpha, wk * g ** (1 - alpha)  # forgets that heads at or below τ must stay untouched


def _check_qk_clip_mha_weights(candidate) -> None:
    gen = torch.Generator().manual_seed(0)
    H, D, C = 4, 3, 5
    for tau, alpha in ((10.0, 0.5), (4.0, 0.25)):
        wq, wk = torch.randn(H * D, C, generator=gen), torch.randn(H * D, C, generator=gen)
        s = torch.tensor([2.0, 40.0, tau, 16.0])
        got = candidate(wq.clone(), wk.clone(), s.clone(), tau, alpha)
        want = qk_clip_mha_weights(wq, wk, s, tau, alpha)
        assert isinstance(got, tuple) and len(got) == 2, "return the pair (new_wq, new_wk)"
        for name, g, w, orig in (("wq", got[0], want[0], wq), ("wk", got[1], want[1], wk)):
            assert g.shape == w.shape, f"{name}: expected shape {tuple(w.shape)}, got {tuple(g.shape)}"
            for h in range(H):
                rows = slice(h * D, (h + 1) * D)
                if s[h] <= tau:
                    assert torch.equal(g[rows], orig[rows]), (
                        f"{name}: head {h} has S_max = {float(s[h])} <= tau = {tau}; its rows must stay "
                        f"bit-identical (gamma is only applied where S_max > tau)")
                else:
                    assert torch.allclose(g[rows], w[rows], rtol=1e-6), (
                        f"{name}: head {h} (S_max = {float(s[h])}, tau = {tau}, alpha = {alpha}) is scaled "
                        f"wrongly: gamma = tau / S_max, queries take gamma**alpha, keys gamma**(1 - alpha)")


def _wrong_mla_clip_factors(gamma, alpha: float = 0.5) -> dict:
    return {"q_nope": gamma**alpha, "k_nope": gamma ** (1 - alpha), "q_rope": gamma**alpha,
            "k_rope": gamma ** (1 - alpha), "v": 1.0}  # clips the shared rotary key like a per-head key


def _check_mla_clip_factors(candidate) -> None:
    for gamma, alpha in ((0.25, 0.5), (0.5, 0.3)):
        got = candidate(gamma, alpha)
        want = mla_clip_factors(gamma, alpha)
        assert isinstance(got, dict) and set(got) == set(want), f"return a dict with the keys {sorted(want)}"
        for part in ("v", "k_rope", "q_rope", "q_nope", "k_nope"):
            assert abs(float(got[part]) - float(want[part])) < 1e-9, {
                "v": "V never enters the logit q·k: its factor is 1",
                "k_rope": "k_rope is one key shared by every head: scaling it would change heads that were "
                          "fine, so its factor is 1",
                "q_rope": "the rotary part q_rope·k_rope must still scale by gamma, and k_rope is left alone",
                "q_nope": "the content part q_nope·k_nope scales by gamma, split as gamma**alpha (query) ...",
                "k_nope": "... and gamma**(1 - alpha) (key)",
            }[part] + f" (gamma={gamma}, alpha={alpha}: expected {want[part]:.4f}, got {got[part]})"
        assert abs(float(got["q_nope"]) * float(got["k_nope"]) - gamma) < 1e-9


register_exercise("qk_clip_mha_weights", solution=qk_clip_mha_weights, wrong=_wrong_qk_clip_mha_weights,
                  checker=_check_qk_clip_mha_weights,
                  description="QK-Clip of one MHA layer: gamma = tau / S_max, q rows gamma^alpha, k rows "
                              "gamma^(1-alpha), other heads untouched")
register_exercise("mla_clip_factors", solution=mla_clip_factors, wrong=_wrong_mla_clip_factors,
                  checker=_check_mla_clip_factors,
                  description="which MLA parts QK-Clip scales by sqrt(gamma), gamma or 1")


# ------------------------------------------------------- QK-Clip for GQA: which key rows scale, by how much
def _gqa_layer(n_heads: int, n_kv_heads: int, seed: int = 0):
    from kimi_mini.layers import MultiHeadAttention
    from kimi_mini.model import KimiConfig

    torch.manual_seed(seed)
    return MultiHeadAttention(KimiConfig(d_model=8 * n_heads, n_heads=n_heads, n_kv_heads=n_kv_heads, d_ff=32,
                                         n_layers=1, max_seq_len=16))


def measured_gqa_key_factors(s_max: Tensor, n_kv_heads: int, tau: float, alpha: float = 0.5) -> Tensor:
    """What the checker runs: QK-Clip on a real GQA layer whose recorded max logits are ``s_max [H]``;
    returns the factor each key head's rows were multiplied by, ``[n_kv_heads]``."""
    layer = _gqa_layer(s_max.numel(), n_kv_heads)
    layer.track_max_logit, layer.max_logit = True, s_max.clone().float()
    before = layer.wk.weight.detach().clone().view(n_kv_heads, -1)
    qk_clip_(layer, tau, alpha)
    after = layer.wk.weight.detach().view(n_kv_heads, -1)
    return (after.norm(dim=1) / before.norm(dim=1)).float()


def gqa_key_factors(s_max: Tensor, n_kv_heads: int, tau: float, alpha: float = 0.5) -> Tensor:
    """Exercise solution. A key head serves a group of H/H_kv query heads, so the group is the unit:
    γ_g = min(1, τ / max_{h ∈ g} S_max^h), and the key rows of group g scale by γ_g^(1−α)."""
    group_max = s_max.float().view(n_kv_heads, -1).amax(-1)  # [H_kv]
    return qk_clip_gamma(group_max, tau) ** (1 - alpha)


def _wrong_gqa_key_factors(s_max, n_kv_heads, tau, alpha=0.5):
    first = s_max.float().view(n_kv_heads, -1)[:, 0]  # the group's first query head decides, not its max
    return qk_clip_gamma(first, tau) ** (1 - alpha)


def _check_gqa_key_factors(candidate) -> None:
    for s_max, n_kv, tau, alpha in ((torch.tensor([5.0, 40.0, 8.0, 9.0]), 2, 10.0, 0.5),
                                    (torch.tensor([30.0, 2.0, 3.0, 50.0, 1.0, 1.0]), 3, 20.0, 0.3),
                                    (torch.tensor([1.0, 2.0, 3.0, 4.0]), 1, 100.0, 0.5)):
        got = candidate(s_max.clone(), n_kv, tau, alpha)
        want = measured_gqa_key_factors(s_max, n_kv, tau, alpha)
        assert torch.is_tensor(got) and got.numel() == n_kv, f"return one factor per key head ({n_kv})"
        assert torch.allclose(got.float().reshape(-1), want, rtol=1e-4), (
            f"S_max {s_max.tolist()} in {n_kv} group(s), tau={tau}, alpha={alpha}: the layer scaled its key "
            f"heads by {[round(v, 4) for v in want.tolist()]}, you said {got.reshape(-1).tolist()}. Hint: a key "
            "head is shared by its group — which query head's S_max must be brought down to tau?")


register_exercise("gqa_key_factors", solution=gqa_key_factors, wrong=_wrong_gqa_key_factors,
                  checker=_check_gqa_key_factors,
                  description="QK-Clip for GQA: the factor of each shared key head (the group's max decides)")


# ------------------------------------------------------- predict, then run: the max logit after one clip
def measured_max_logit_after_clip(seed: int = 0) -> tuple[float, float, float]:
    """What the checker runs: a 2-head layer whose head 1 has large logits (its query rows ×6), one tracked
    forward pass, ``qk_clip_`` with τ = half of head 1's max logit, then the *same* batch again.
    Returns ``(S_max before, τ, S_max after)`` of head 1."""
    layer = _gqa_layer(2, 2, seed)
    with torch.no_grad():
        layer.wq.weight.view(2, -1)[1] *= 6.0
    x = torch.randn(2, 12, layer.wq.in_features, generator=torch.Generator().manual_seed(seed))
    layer.track_max_logit = True
    layer(x)
    before = float(layer.max_logit[1])
    tau = before / 2
    qk_clip_(layer, tau)
    layer(x)
    return before, tau, float(layer.max_logit[1])


def max_logit_after_clip_prediction(s_max_before: float, tau: float) -> float:
    """Exercise solution: q and k rows of the head scale by γ^α and γ^(1−α), so every logit of the head —
    the max included — is multiplied by γ = τ / S_max: recomputed on the same batch, S_max becomes τ."""
    return min(s_max_before, tau)


def _check_max_logit_prediction(candidate) -> None:
    before, tau, after = measured_max_logit_after_clip()
    predicted = float(candidate(before, tau))
    assert abs(predicted - after) <= 1e-3 * after, (
        f"S_max was {before:.3f}, tau {tau:.3f}: you predicted {predicted:.4f} after the clip; the same batch "
        f"measured {after:.4f}. Hint: by what factor does the clip multiply q·k for this head?")


register_exercise("max_logit_after_clip", solution=max_logit_after_clip_prediction,
                  wrong=lambda s_max_before, tau: s_max_before * (tau / s_max_before) ** 0.5,  # √γ: only q scaled
                  checker=_check_max_logit_prediction,
                  description="predict, then run: a head's max logit on the same batch after QK-Clip")
