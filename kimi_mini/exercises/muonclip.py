"""Exercises of notebook 03 (MuonClip / MLA): QK-Clip of one MHA layer, and which MLA parts it scales."""

from __future__ import annotations

import torch

from kimi_mini.exercises import register_exercise
from kimi_mini.qk_clip import mla_clip_factors, qk_clip_mha_weights


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
