"""QK-Clip and MuonClip: Kimi K2's fix for exploding attention logits (arXiv 2507.20534, §2.1).

With plain Muon at scale, some attention heads' logits grow without bound and training goes unstable.
QK-Clip rescales the query and key projections *after* the optimizer step, per head, only where the
logits got too large. For every attention head h, during the forward pass of step t:

    S_max^h = max over the batch and the causal pairs (i, j ≤ i) of  (q_i^h · k_j^h) / √d

(the pre-softmax logit after the softmax scale; the attention modules record it when
``track_max_logit`` is on, see :func:`track_max_logits`). After the optimizer step, for each head with
S_max^h > τ, with γ_h = τ / S_max^h:

    MHA / GQA   W_q^h ← γ^α · W_q^h,   W_k^h ← γ^(1−α) · W_k^h          (K2: α = 0.5, √γ each)
    MLA         W_q^{h,nope} ← γ^α · W_q^{h,nope},   W_uk^h ← γ^(1−α) · W_uk^h   (content parts)
                W_q^{h,rope} ← γ · W_q^{h,rope}      (the head's rotary query takes all of γ)
                k^R (shared by every head) and V are never touched

so every logit of the head — content part q^C·k^C and rotary part q^R·k^R alike — is multiplied by
exactly γ_h, and recomputing the same batch gives S_max^h = τ. Heads with S_max^h ≤ τ are left
bit-identical. With GQA a key head serves a group of query heads; scaling it changes every head of
the group, so the *group* is the unit of clipping: S_max of the group (the max over its query heads)
decides γ, and all the group's query heads and its key head are scaled.

MuonClip (K2's Algorithm 1) is Muon followed by QK-Clip after every step; it lives with the optimizers
(:mod:`kimi_mini.optim.muonclip`, ``build_optimizer(model, "muonclip", lr, weight_decay, tau=100.0,
alpha=0.5)``). This module holds the tracking and the clip rules only and imports no optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from kimi_mini.layers import MultiHeadAttention
from kimi_mini.mla import MultiHeadLatentAttention
from kimi_mini.registry import Registry

__all__ = [
    "attention_modules",
    "track_max_logits",
    "max_logits",
    "qk_clip_gamma",
    "qk_clip_",
    "qk_clip_mha_weights",
    "mla_clip_factors",
    "register_qk_clip",
    "max_logit_callback",
    "QK_CLIPPERS",
]

# attention class → fn(module, gamma [n_heads] fp32, alpha); looked up through the class's MRO
QK_CLIPPERS: Registry[Callable[[nn.Module, Tensor, float], None]] = Registry("QK-Clip rule")


# ------------------------------------------------------------------------------ max-logit tracking
def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention modules of ``model`` (those with a ``track_max_logit`` attribute), in layer order."""
    return [m for m in model.modules() if hasattr(m, "track_max_logit")]


def track_max_logits(model: nn.Module, enabled: bool = True) -> list[nn.Module]:
    """Turn max-logit recording on (or off) in every attention module; returns those modules.

    Recording costs one extra pass over ``q·kᵀ`` done in query blocks (never a T×T matrix) on the
    PyTorch paths, and nothing with the Triton flash kernel (its running max is the answer).
    """
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"model: no attention module with max-logit tracking in {type(model).__name__}")
    for m in modules:
        m.track_max_logit = bool(enabled)
        if not enabled:
            m.max_logit = None
    return modules


def _recorded_modules(model: nn.Module, when: str) -> list[nn.Module]:
    """The model's attention modules, each with a max logit recorded (``ValueError`` otherwise)."""
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"model: no attention module with max-logit tracking in {type(model).__name__}")
    missing = [i for i, m in enumerate(modules) if getattr(m, "max_logit", None) is None]
    if missing:
        raise ValueError(f"model: no max logit recorded for attention layer(s) {missing}; turn tracking on "
                         f"(track_max_logits(model)) and run a forward pass {when}")
    return modules


def max_logits(model: nn.Module) -> Tensor:
    """``[n_layers, n_heads]`` fp32: each head's max scaled logit in the last tracked forward pass.

    Raises ``ValueError`` when tracking is off or no forward pass has run since it was turned on.
    """
    modules = _recorded_modules(model, "first")
    logits = [m.max_logit.detach().float().reshape(-1) for m in modules]
    if len({t.numel() for t in logits}) != 1:
        raise ValueError(f"model: layers have different head counts {[t.numel() for t in logits]}; "
                         f"read module.max_logit per layer instead")
    return torch.stack([t.to(logits[0].device) for t in logits])


# ------------------------------------------------------------------------------------ the clip
def _check_tau_alpha(tau: float, alpha: float) -> None:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau: expected a finite number > 0 (the max-logit threshold, K2: 100), got {tau!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in [0, 1] (the query's share of γ, K2: 0.5), "
                         f"got {alpha!r}")


def qk_clip_gamma(max_logit: Tensor, tau: float) -> Tensor:
    """γ_h = min(1, τ / S_max^h): the factor that brings head h's max logit down to τ (1 = untouched).

    ``max_logit``: any shape, fp32; returns the same shape.
    """
    _check_tau_alpha(tau, 0.5)
    s = max_logit.float()
    return torch.where(s > tau, tau / s, torch.ones_like(s))


def register_qk_clip(cls: type) -> Callable:
    """Decorator: ``fn(module, gamma [n_heads] fp32, alpha)`` rescales ``module``'s weights in place,
    for every attention class that is ``cls`` or a subclass of it (MoBA reuses the MHA rule)."""

    if not isinstance(cls, type):
        raise ValueError(f"cls: expected an attention class, got {cls!r}")
    return QK_CLIPPERS.register(cls)


def _clipper(module: nn.Module):
    rule = QK_CLIPPERS.for_class(type(module))
    if rule is not None:
        return rule
    raise ValueError(f"model: no QK-Clip rule for attention module {type(module).__name__}; "
                     f"register one with @register_qk_clip({type(module).__name__})")


def _scale_rows_(weight: Tensor, n_groups: int, heads: Tensor, row_slice: slice, factors: Tensor) -> None:
    """``weight [n_groups·R, in]``: multiply rows ``row_slice`` of each group in ``heads`` by its factor."""
    w = weight.view(n_groups, -1, weight.shape[-1])  # [groups, R, in]
    w[heads, row_slice] *= factors.to(w.dtype)[:, None, None]


@register_qk_clip(MultiHeadAttention)
@torch.no_grad()
def _clip_mha_(module: MultiHeadAttention, gamma: Tensor, alpha: float) -> None:
    """MHA/GQA: ``gamma [H]`` is already per kv group (equal within a group). Query rows γ^α, key rows
    of the group's key head γ^(1−α)."""
    H, H_kv = module.n_heads, module.n_kv_heads
    heads = torch.nonzero(gamma < 1).flatten()
    if heads.numel() == 0:
        return
    g = gamma.to(module.wq.weight.device)
    _scale_rows_(module.wq.weight, H, heads, slice(None), g[heads] ** alpha)
    kv_heads = torch.unique(heads // (H // H_kv))
    _scale_rows_(module.wk.weight, H_kv, kv_heads, slice(None), g[kv_heads * (H // H_kv)] ** (1 - alpha))


def mla_clip_factors(gamma, alpha: float = 0.5) -> dict:
    """What QK-Clip multiplies each part of an MLA head by, for a head with factor γ (float or tensor).

    The logit is ``q^C·k^C + q^R·k^R``. The content parts are per head: split γ between them
    (γ^α · γ^(1−α) = γ). The rotary key k^R is *shared by every head* — scaling it would change heads
    that were fine — so the head's rotary query q^R takes all of γ. V does not enter the logit.
    """
    return {"q_nope": gamma**alpha, "k_nope": gamma ** (1 - alpha), "q_rope": gamma,
            "k_rope": 1.0, "v": 1.0}


@register_qk_clip(MultiHeadLatentAttention)
@torch.no_grad()
def _clip_mla_(module: MultiHeadLatentAttention, gamma: Tensor, alpha: float) -> None:
    """MLA: q_nope γ^α, the head's k_nope rows of ``wkv_b`` γ^(1−α), q_rope γ; k_rope and V untouched."""
    H, d_nope = module.n_heads, module.qk_nope_head_dim
    heads = torch.nonzero(gamma < 1).flatten()
    if heads.numel() == 0:
        return
    f = mla_clip_factors(gamma.to(module.wkv_b.weight.device)[heads], alpha)
    _scale_rows_(module.q_proj.weight, H, heads, slice(0, d_nope), f["q_nope"])
    _scale_rows_(module.q_proj.weight, H, heads, slice(d_nope, None), f["q_rope"])
    _scale_rows_(module.wkv_b.weight, H, heads, slice(0, d_nope), f["k_nope"])  # the k rows, not the v rows
    # k_rope lives in wkv_a (shared by all heads) and v in the other rows of wkv_b: never touched


def _group_max(module: nn.Module, s_max: Tensor) -> Tensor:
    """With GQA the key head is shared: every query head takes the max over its group."""
    H, H_kv = getattr(module, "n_heads", s_max.numel()), getattr(module, "n_kv_heads", s_max.numel())
    if H_kv == H:
        return s_max
    return s_max.view(H_kv, H // H_kv).amax(-1).repeat_interleave(H // H_kv)


@torch.no_grad()
def qk_clip_(model: nn.Module, tau: float = 100.0, alpha: float = 0.5) -> list[dict[int, float]]:
    """Apply QK-Clip in place from the max logits of the last tracked forward pass.

    Args:
        model: a model whose attention modules recorded ``max_logit`` (see :func:`track_max_logits`).
        tau: the threshold τ (> 0; K2 uses 100).
        alpha: the query's share of γ for MHA/GQA and MLA's content part, in [0, 1] (K2: 0.5).
    Returns:
        one dict per attention layer, ``{head: γ_h}`` for the heads that were clipped (empty when none).
        Each module's ``max_logit`` is updated to what the clipped weights give on the same batch,
        ``γ_h · S_max^h`` (= τ for the head that set γ), so a second call is a no-op.
    """
    _check_tau_alpha(tau, alpha)
    modules = _recorded_modules(model, "before qk_clip_")
    clipper = [_clipper(m) for m in modules]  # every rule found before any weight changes
    clipped: list[dict[int, float]] = []
    for module, clip in zip(modules, clipper, strict=True):
        s = module.max_logit.detach().float()
        gamma = qk_clip_gamma(_group_max(module, s), tau)  # [H]
        heads = torch.nonzero(gamma < 1).flatten()
        if heads.numel():
            clip(module, gamma, float(alpha))
            # the statistic now describes the clipped weights on the same batch: a second call is a no-op
            module.max_logit = torch.where(gamma < 1, torch.minimum(s * gamma, torch.full_like(s, tau)), s)
        clipped.append({int(h): float(gamma[h]) for h in heads})
    return clipped


def max_logit_callback(step: int, model: nn.Module, optimizer, record: dict) -> None:
    """A ``train(..., callbacks=[...])`` callback that logs the step's max logit (any optimizer).

    Adds ``max_logit`` (float) and ``max_logit_layers`` (per layer, max over heads); with
    :class:`~kimi_mini.optim.muonclip.MuonClip` also ``n_clipped`` and ``clipped_fraction`` of the step.
    Turn tracking on first (:func:`track_max_logits`; MuonClip does it).
    """
    stats = getattr(optimizer, "last_stats", None)  # MuonClip's statistics of the step, when it is one
    if stats is not None:
        s = stats["max_logits"]
        record["n_clipped"] = stats["n_clipped"]
        record["clipped_fraction"] = stats["clipped_fraction"]
    else:
        s = max_logits(model)
    record["max_logit"] = float(s.max())
    record["max_logit_layers"] = [float(v) for v in s.amax(-1)]


# ------------------------------------------------- QK-Clip of one layer as a pure function
def qk_clip_mha_weights(wq: Tensor, wk: Tensor, max_logit: Tensor, tau: float, alpha: float = 0.5
                        ) -> tuple[Tensor, Tensor]:
    """QK-Clip of one MHA layer as a pure function (the exercise's solution).

    ``wq, wk [H·D, C]`` (head h owns rows h·D … h·D + D − 1), ``max_logit [H]``. Returns new
    ``(wq, wk)``: heads with S_max > τ scaled by γ^α (queries) and γ^(1−α) (keys), γ = τ / S_max;
    the other heads' rows are copied bit for bit.
    """
    _check_tau_alpha(tau, alpha)
    H = max_logit.numel()
    gamma = qk_clip_gamma(max_logit, tau)  # [H]; 1 where S_max <= τ
    heads = torch.nonzero(gamma < 1).flatten()
    wq, wk = wq.clone(), wk.clone()
    _scale_rows_(wq, H, heads, slice(None), gamma[heads] ** alpha)
    _scale_rows_(wk, H, heads, slice(None), gamma[heads] ** (1 - alpha))
    return wq, wk


