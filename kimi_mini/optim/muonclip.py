"""MuonClip (Kimi K2, arXiv 2507.20534, Algorithm 1): Muon followed by QK-Clip after every step.

The clip itself — per-head max-logit tracking and the rescaling rules for MHA, GQA and MLA — is in
:mod:`kimi_mini.qk_clip`; this module only runs it after the optimizer step, on the max logits that the
step's forward pass recorded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kimi_mini.optim.muon import Muon
from kimi_mini.qk_clip import _check_tau_alpha, max_logits, qk_clip_, track_max_logits

__all__ = ["MuonClip"]


class MuonClip(Muon):
    """Muon (+AdamW for non-matrix parameters) followed by QK-Clip after every step (K2 Algorithm 1).

    Turns max-logit tracking on in ``model``'s attention modules. After each :meth:`step`,
    ``last_stats`` holds the step's statistics (the max logits *before* the clip):
    ``max_logit`` (float, over all layers and heads), ``max_logits`` (``[n_layers, n_heads]``),
    ``clipped`` (per layer ``{head: γ}``), ``n_clipped`` and ``clipped_fraction`` (of all heads).
    """

    def __init__(self, params, model: nn.Module, lr: float, tau: float = 100.0, alpha: float = 0.5, **kwargs):
        _check_tau_alpha(tau, alpha)
        super().__init__(params, lr=lr, **kwargs)
        self.model, self.tau, self.alpha = model, float(tau), float(alpha)
        track_max_logits(model)
        self.last_stats: dict[str, Any] | None = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        s = max_logits(self.model)  # the forward pass of this step, before the clip consumes it
        clipped = qk_clip_(self.model, self.tau, self.alpha)
        n = sum(len(c) for c in clipped)
        self.last_stats = {
            "max_logit": float(s.max()),
            "max_logits": s.cpu(),
            "clipped": clipped,
            "n_clipped": n,
            "clipped_fraction": n / s.numel(),
        }
        return loss
