"""Muon with Moonlight's two changes (arXiv 2502.16982, §2.2): decoupled weight decay and the
RMS-matching scale ``0.2·√max(A, B)``, for one process. For a matrix ``W ∈ ℝ^{A×B}`` with gradient
``G_t``, momentum ``μ`` and learning rate ``η`` (Nesterov variant)::

    M_t = μ·M_{t-1} + G_t
    O_t = NS5(μ·M_t + G_t)
    W_t = W_{t-1}·(1 − η·λ) − η · 0.2·√max(A, B) · O_t

A full-rank orthogonal ``A×B`` matrix has entry-RMS ``1/√max(A, B)``, so the scaled update has RMS ≈ 0.2,
AdamW's typical update RMS — which lets Muon reuse AdamW's learning rate and weight decay unchanged.
Parameters that are not hidden matrices keep AdamW with β = (0.9, 0.95), ε = 1e-8 inside the same
optimizer (param groups with ``use_muon=False``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from kimi_mini.impl import check_impl
from kimi_mini.optim.newton_schulz import MAX_NS_STEPS, NS_IMPLS, newton_schulz

__all__ = ["Muon", "muon_update_scale", "orthogonalize_by_shape", "ADAMW_BETAS", "ADAMW_EPS", "UPDATE_RMS"]

ADAMW_BETAS: tuple[float, float] = (0.9, 0.95)
ADAMW_EPS = 1e-8
UPDATE_RMS = 0.2  # AdamW's typical update RMS, the target Moonlight matches


def muon_update_scale(shape: Iterable[int], update_rms: float = UPDATE_RMS) -> float:
    """Moonlight's RMS-matching factor for a matrix of shape ``[..., A, B]``: ``0.2·√max(A, B)``.

    An orthogonal ``A×B`` matrix of full rank ``min(A, B)`` has ``‖O‖_F² = min(A, B)``, so its entry RMS is
    ``√(min/(A·B)) = 1/√max(A, B)``; multiplying by ``update_rms·√max(A, B)`` gives RMS ``update_rms``.
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"shape: expected a matrix shape [..., A, B], got {shape}")
    return update_rms * math.sqrt(max(shape[-2], shape[-1]))



# Element-wise pieces shared by Muon and DistributedMuon (so a shard updates exactly like the whole)



def _muon_momentum_(buf: Tensor, grad: Tensor, momentum: float, nesterov: bool) -> Tensor:
    """``M ← μ·M + g`` in place; returns what NS orthogonalises (``μ·M + g`` with Nesterov, else ``M``)."""
    buf.mul_(momentum).add_(grad)
    return grad.add(buf, alpha=momentum) if nesterov else buf


def _muon_apply_(p: Tensor, update: Tensor, lr: float, weight_decay: float, scale: float) -> None:
    """``W ← W·(1 − η·λ) − η·scale·O``."""
    p.mul_(1 - lr * weight_decay)
    p.add_(update.to(p.dtype), alpha=-lr * scale)


def _adamw_update_(p: Tensor, grad: Tensor, state: dict, lr: float, betas: tuple[float, float], eps: float,
                   weight_decay: float) -> None:
    """AdamW (Loshchilov & Hutter), the same arithmetic as ``torch.optim.AdamW``, element-wise."""
    if not state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    beta1, beta2 = betas
    m, v = state["exp_avg"], state["exp_avg_sq"]
    p.mul_(1 - lr * weight_decay)
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1 = 1 - beta1 ** state["step"]
    bias2 = 1 - beta2 ** state["step"]
    denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / bias1)


def orthogonalize_by_shape(matrices: list[Tensor], groups: list[dict]) -> list[Tensor]:
    """``newton_schulz`` of each matrix, with the matrices of equal shape (and NS settings) stacked
    into one batched call — a model's many same-shaped projections cost a few large matmuls instead of
    many small ones. Same result as one call per matrix, up to matmul rounding."""
    # NS(Gᵀ) = NS(G)ᵀ, so a tall matrix joins the bucket of its wide transpose (w2 [C, F] with w1 [F, C])
    wide = [m.mT if m.size(-2) > m.size(-1) else m for m in matrices]
    buckets: dict[tuple, list[int]] = {}
    for i, (m, g) in enumerate(zip(wide, groups, strict=True)):
        buckets.setdefault((tuple(m.shape), m.dtype, g["ns_steps"], g["impl"]), []).append(i)
    out: list[Tensor | None] = [None] * len(matrices)
    for (_, _, steps, impl), idx in buckets.items():
        stacked = torch.stack([wide[i] for i in idx]) if len(idx) > 1 else wide[idx[0]]
        result = newton_schulz(stacked, steps, impl=impl)
        for j, i in enumerate(idx):
            r = result[j] if len(idx) > 1 else result
            out[i] = r.mT if wide[i] is not matrices[i] else r
    return out


def _finite(name: str, value, lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        bounds = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open or hi == math.inf else ']'}"
        raise ValueError(f"{name}: expected a finite number in {bounds}, got {value!r}")


def _check_hparams(lr, momentum, weight_decay, ns_steps, update_rms, betas, eps, impl) -> None:
    _finite("lr", lr, 0)
    _finite("momentum", momentum, 0, 1, hi_open=True)
    _finite("weight_decay", weight_decay, 0)
    if not isinstance(ns_steps, int) or isinstance(ns_steps, bool) or not 1 <= ns_steps <= MAX_NS_STEPS:
        raise ValueError(f"ns_steps: expected an int in [1, {MAX_NS_STEPS}], got {ns_steps!r}")
    _finite("update_rms", update_rms, 0, lo_open=True)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas: expected two values in [0, 1), got {betas!r}")
    for b in betas:
        _finite("betas", b, 0, 1, hi_open=True)
    _finite("eps", eps, 0)
    check_impl(impl, NS_IMPLS)


def _check_muon_group(group: dict) -> None:
    if not group.get("use_muon", True):
        return
    for i, p in enumerate(group["params"]):
        if p.dim() not in (2, 3):
            raise ValueError(
                f"params: Muon updates weight matrices [A, B] (or a stack [E, A, B] of them, e.g. MoE "
                f"experts); parameter {i} of a Muon group has shape {tuple(p.shape)}. Put it in an AdamW "
                f"group ({{'params': [...], 'use_muon': False}}) — build_optimizer does this split.")



class Muon(torch.optim.Optimizer):
    """Moonlight's Muon: ``W ← W·(1 − η·λ) − η·0.2·√max(A, B)·NS5(μ·M + g)`` for each matrix.

    ``params`` are weight matrices ``[A, B]``; a 3-D parameter ``[E, A, B]`` is treated as ``E``
    independent matrices (each orthogonalised on its own, scale from ``A, B``); anything else raises
    ``ValueError``. Param groups may carry ``use_muon=False``: those parameters get AdamW with
    ``betas``/``eps`` and the group's (same) lr and weight decay — this is how :func:`build_optimizer`
    hands embeddings, the LM head and norm gains to AdamW inside one optimizer.

    State per Muon parameter: ``momentum_buffer`` (one buffer, vs AdamW's two).
    """

    def __init__(self, params, lr: float, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.1, ns_steps: int = 5, *, update_rms: float = UPDATE_RMS,
                 betas: tuple[float, float] = ADAMW_BETAS, eps: float = ADAMW_EPS, impl: str = "torch"):
        _check_hparams(lr, momentum, weight_decay, ns_steps, update_rms, betas, eps, impl)
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        ns_steps=ns_steps, update_rms=update_rms, betas=tuple(betas), eps=eps, impl=impl,
                        use_muon=True)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        _check_muon_group(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        todo = []  # (group, param, momentum-updated matrix) for Muon
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not group["use_muon"]:
                    _adamw_update_(p, p.grad, state, lr, group["betas"], group["eps"], wd)
                    continue
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m_eff = _muon_momentum_(state["momentum_buffer"], p.grad, group["momentum"],
                                        group["nesterov"])
                todo.append((group, p, m_eff))
        updates = orthogonalize_by_shape([m for *_, m in todo], [g for g, *_ in todo])
        for (group, p, _), update in zip(todo, updates, strict=True):
            _muon_apply_(p, update, group["lr"], group["weight_decay"],
                         muon_update_scale(p.shape, group["update_rms"]))
        return loss


