"""Muon, as made to scale by Moonlight: *Muon is Scalable for LLM Training* (Liu et al., arXiv 2502.16982).

Muon orthogonalises the momentum of each hidden weight matrix before applying it. For a matrix
``W ∈ ℝ^{A×B}`` with gradient ``G_t``, momentum ``μ`` and learning rate ``η`` (Nesterov variant)::

    M_t = μ·M_{t-1} + G_t
    O_t = NS5(μ·M_t + G_t)                                   ≈ U·Vᵀ   for  μ·M_t + G_t = U·Σ·Vᵀ
    W_t = W_{t-1}·(1 − η·λ) − η · 0.2·√max(A, B) · O_t

``NS5`` is five steps of the quintic Newton–Schulz iteration, started from the Frobenius-normalised
matrix ``X_0 = G / (‖G‖_F + ε)`` (transposed first when ``A > B`` so that ``X·Xᵀ`` is the small Gram
matrix)::

    X_{k+1} = a·X_k + (b·X_k X_kᵀ + c·(X_k X_kᵀ)²)·X_k,      (a, b, c) = (3.4445, −4.7750, 2.0315)

On each singular value ``σ`` this is the odd polynomial ``φ(σ) = aσ + bσ³ + cσ⁵``; five steps send every
``σ ∈ (0, 1]`` that is not tiny into roughly [0.68, 1.2] and keep the singular vectors.

Moonlight's two changes over the original Muon are both here: **weight decay** (``λ``, decoupled, as in
AdamW) and the **RMS-matching scale** ``0.2·√max(A, B)``: a full-rank orthogonal ``A×B`` matrix has
entry-RMS ``1/√max(A, B)``, so the scaled update has RMS ≈ 0.2, AdamW's typical update RMS — which lets
Muon reuse AdamW's learning rate and weight decay unchanged. Parameters that are not hidden matrices
(embeddings, the LM head, RMSNorm gains, biases) keep AdamW with β = (0.9, 0.95), ε = 1e-8, the *same*
lr and weight decay: :func:`build_optimizer` makes that split.

:class:`DistributedMuon` is the paper's Algorithm 1 (ZeRO-1 on data-parallel ranks): reduce-scatter the
gradients, update the local momentum shard, all-gather the momentum-updated shards into the full
matrix, run NS, apply the local slice, all-gather the parameters. It produces the same update as
single-process :class:`Muon` on the same global batch.

Precision: NS runs in bf16 on CUDA (as the paper) and in fp32 on CPU (bf16 matmuls are slow there, and
fp32 keeps the CPU tests exact); pass ``dtype=`` to choose.

Layout: :mod:`.newton_schulz` (the iteration), :mod:`.muon` (single-process Muon), :mod:`.distributed`
(ZeRO-1 Algorithm 1), :mod:`.muonclip` (K2's MuonClip); this module splits a model's parameters between
Muon and AdamW and keeps the registry of named optimizers (``build_optimizer``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from kimi_mini.optim.distributed import DistributedMuon
from kimi_mini.optim.muon import ADAMW_BETAS, ADAMW_EPS, UPDATE_RMS, Muon, muon_update_scale, orthogonalize_by_shape
from kimi_mini.optim.muonclip import MuonClip
from kimi_mini.optim.newton_schulz import (
    NS_COEFFICIENTS,
    NS_IMPLS,
    newton_schulz,
    newton_schulz_step,
    ns_polynomial,
    svd_orthogonalize,
)
from kimi_mini.qk_clip import max_logits, qk_clip_  # re-exported: MuonClip's two halves, one import away
from kimi_mini.registry import Registry, declared_parameters

__all__ = [
    "NS_COEFFICIENTS",
    "NS_IMPLS",
    "ns_polynomial",
    "newton_schulz_step",
    "newton_schulz",
    "svd_orthogonalize",
    "orthogonalize_by_shape",
    "muon_update_scale",
    "Muon",
    "DistributedMuon",
    "MuonClip",
    "muon_param_groups",
    "register_optimizer",
    "build_optimizer",
    "OPTIMIZERS",
    "ADAMW_BETAS",
    "ADAMW_EPS",
    "UPDATE_RMS",
    "max_logits",
    "qk_clip_",
]


def muon_param_groups(model: nn.Module, exclude: Iterable[str] = ()
                      ) -> tuple[list[tuple[str, Tensor]], list[tuple[str, Tensor]]]:
    """Split ``model``'s trainable parameters into ``(muon, adamw)`` lists of ``(name, param)``.

    Muon: hidden weight matrices (2-D) and stacks of them (3-D, e.g. MoE experts ``[E, d, h]``, which
    Muon orthogonalises expert by expert). AdamW: everything else — parameters of ``nn.Embedding``
    modules, the parameters a module *declares* not to be hidden matrices (its ``non_muon_parameters``
    class attribute: ``KimiMini`` declares its token embedding and LM head), any parameter whose name
    starts with one of ``exclude``, norm gains, biases and other 1-D parameters. Shared (tied) parameters
    are listed once.
    """
    exclude = tuple(exclude)
    declared = declared_parameters(model, "non_muon_parameters")
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    muon, adamw, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        is_io = id(p) in embedding_params or id(p) in declared or (exclude and name.startswith(exclude))
        (muon if p.dim() in (2, 3) and not is_io else adamw).append((name, p))
    return muon, adamw


OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer")


def register_optimizer(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    """Decorator: ``@register_optimizer("muonclip")`` on ``fn(model, lr, weight_decay, **kw) -> Optimizer``
    makes it available as ``build_optimizer(model, "muonclip", ...)``."""
    return OPTIMIZERS.register(name)


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.1,
                    **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer called ``name`` for ``model``: ``"adamw"``, ``"muon"`` (and later ``"muonclip"``).

    Keyword arguments go to the builder (e.g. ``momentum``, ``ns_steps``, ``impl``, ``betas``;
    ``distributed=True`` gives the ZeRO-1 :class:`DistributedMuon` for ``"muon"`` and ``"adamw"``).
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"name: unknown optimizer {name!r}; expected one of {OPTIMIZERS.names()}")
    return OPTIMIZERS[name](model, lr=lr, weight_decay=weight_decay, **kwargs)


def _groups(muon, adamw) -> list[dict]:
    groups = []
    if muon:
        groups.append({"params": [p for _, p in muon], "names": [n for n, _ in muon], "use_muon": True})
    if adamw:
        groups.append({"params": [p for _, p in adamw], "names": [n for n, _ in adamw], "use_muon": False})
    return groups


@register_optimizer("muon")
def _build_muon(model: nn.Module, lr: float, weight_decay: float, *, distributed: bool = False,
                **kwargs: Any) -> torch.optim.Optimizer:
    """Hidden matrices → Muon; embeddings, LM head, norm gains, biases → AdamW (β=(0.9, 0.95), ε=1e-8),
    same lr and weight decay. ``distributed=True``: :class:`DistributedMuon` (ZeRO-1)."""
    muon, adamw = muon_param_groups(model)
    cls = DistributedMuon if distributed else Muon
    return cls(_groups(muon, adamw), lr=lr, weight_decay=weight_decay, **kwargs)


@register_optimizer("adamw")
def _build_adamw(model: nn.Module, lr: float, weight_decay: float, *, distributed: bool = False,
                 betas: tuple[float, float] = ADAMW_BETAS, eps: float = ADAMW_EPS,
                 **kwargs: Any) -> torch.optim.Optimizer:
    """AdamW on every parameter (β=(0.9, 0.95), ε=1e-8), weight decay on all of them as Moonlight does.
    ``distributed=True``: ZeRO-1 AdamW (:class:`DistributedMuon` with AdamW groups only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if distributed:
        return DistributedMuon([{"params": params, "use_muon": False}], lr=lr, weight_decay=weight_decay,
                               betas=betas, eps=eps, **kwargs)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)




@register_optimizer("muonclip")
def _build_muonclip(model: nn.Module, lr: float, weight_decay: float, *, tau: float = 100.0,
                    alpha: float = 0.5, **kwargs: Any) -> MuonClip:
    """``"muon"``'s parameter split (hidden matrices → Muon, the rest → AdamW) plus QK-Clip(τ, α)."""
    if kwargs.pop("distributed", False):
        raise ValueError("distributed: MuonClip wraps single-process Muon; for ZeRO-1 build "
                         "'muon' with distributed=True and call qk_clip_(model, tau) after each step")
    return MuonClip(_groups(*muon_param_groups(model)), model, lr=lr, tau=tau, alpha=alpha,
                    weight_decay=weight_decay, **kwargs)
