"""Kimi K2's Mixture-of-Experts feed-forward layer.

Papers: *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534), which keeps DeepSeek-V3's router
(*DeepSeek-V3 Technical Report*, arXiv 2412.19437, "noaux_tc"), and *Muon is Scalable for LLM Training*
(Moonlight, arXiv 2502.16982) for the zero-mean bias rule and the routed scaling factor.

For one token x (a row of ``[N, d]``), E routed experts and a router matrix W_r ``[E, d]``:

    logits = W_r x                      (fp32)
    s      = sigmoid(logits)            ∈ (0, 1)^E       -- not softmax: experts do not compete
    idx    = TopK_k(s + b)                               -- the bias b only *selects*
    w_j    = ρ · s_idx[j] / Σ_i s_idx[i]                 -- weights from the *unbiased* scores
    y      = Σ_j w_j · FFN_idx[j](x) + Σ_shared FFN_shared(x),   FFN(x) = W₂ (silu(W₁ x) ⊙ W₃ x)

Auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2): after every optimizer step, with c_i the tokens
routed to expert i during that step and c̄ their mean,

    DeepSeek-V3:  b_i ← b_i + u · sign(c̄ − c_i)
    Moonlight:    b_i ← b_i + u · (sign(c̄ − c_i) − mean_j sign(c̄ − c_j))      (Σ_i Δb_i = 0)

and the load is summarised by MaxVio = max_i c_i / c̄ − 1. For comparison, DeepSeek-V3's
sequence-wise auxiliary loss over a sequence of T tokens:

    f_i = E / (k T) · Σ_t 1[i ∈ idx_t],   P_i = 1/T · Σ_t s_{i,t} / Σ_j s_{j,t},   L = α Σ_i f_i P_i.

ρ (``route_scale``) is Moonlight's E[1 / ‖p‖₂] for p the renormalised top-k sigmoid scores of i.i.d.
N(0, 1) logits (:func:`expected_route_scale`): 2.446 for (64, top-6), 2.827 for K2's (384, top-8).

Three interchangeable implementations of the routed experts (``impl=``): ``"naive"`` loops over experts
with masks; ``"torch"`` sorts the token–expert pairs by expert, runs one matmul chain per contiguous
segment and scatter-adds the weighted rows back; ``"triton"`` is the grouped GEMM of
:mod:`kimi_mini.kernels.moe`.

Layout: :mod:`.routing` (router and balancing rules), :mod:`.experts` (the three expert implementations),
:mod:`.layer` (the ``"moe"`` component and its training callback).
"""

from kimi_mini.impl import IMPLS
from kimi_mini.moe.experts import ExpertWeights, RoutedExperts, moe_experts
from kimi_mini.moe.layer import MoE, build_moe_ffn, moe_bias_update_callback, moe_layers
from kimi_mini.moe.routing import (
    BIAS_RULES,
    bias_update,
    expected_route_scale,
    max_violation,
    sequence_aux_loss,
    sigmoid_topk_route,
)

__all__ = [
    "sigmoid_topk_route",
    "expected_route_scale",
    "max_violation",
    "bias_update",
    "sequence_aux_loss",
    "moe_experts",
    "ExpertWeights",
    "RoutedExperts",
    "MoE",
    "build_moe_ffn",
    "moe_layers",
    "moe_bias_update_callback",
    "BIAS_RULES",
    "IMPLS",
]
