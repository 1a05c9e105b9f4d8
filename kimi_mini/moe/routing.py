"""K2's router and the load-balancing rules (Kimi K2 arXiv 2507.20534; DeepSeek-V3 arXiv 2412.19437 §2.1.2;
Moonlight arXiv 2502.16982): sigmoid top-k routing whose bias only selects, the routed scale ρ, MaxVio,
the aux-loss-free bias updates and the sequence-wise auxiliary loss. Equations in the package docstring."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kimi_mini.checks import check_int, check_number, check_tensor, describe

__all__ = ["BIAS_RULES", "sigmoid_topk_route", "expected_route_scale", "max_violation", "bias_update",
           "sequence_aux_loss"]

BIAS_RULES = ("moonlight", "deepseek")
MAX_ROUTE_SAMPLES = 10**8  # ρ to 4 decimals needs ~10⁵; the bound keeps a typo from running for hours


def _check_top_k(top_k, n_experts: int) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= n_experts:
        raise ValueError(f"top_k: expected an int in 1..n_experts={n_experts}, got {top_k!r}")


# ----------------------------------------------------------------------------------------- router
def sigmoid_topk_route(logits: Tensor, bias: Tensor | None, top_k: int,
                       scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """K2 / DeepSeek-V3 routing: select with ``sigmoid(logits) + bias``, weight with ``sigmoid(logits)``.

    Args:
        logits: ``[N, E]`` router logits (any float dtype; the routing is computed in fp32).
        bias: ``[E]`` selection bias, or None for zeros. It changes *which* experts are chosen,
            never the formula of the weights.
        top_k: experts per token, ``1 <= top_k <= E``.
        scale: the routed scaling factor ρ multiplying the renormalised weights.
    Returns:
        ``indices [N, top_k]`` int64 (best first) and ``weights [N, top_k]`` fp32; each row sums to
        ``scale``.
    """
    if not torch.is_tensor(logits) or logits.dim() != 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"logits: expected a 2-D tensor [N, E], got {shape}")
    n_experts = logits.shape[1]
    if n_experts < 1:
        raise ValueError(f"logits: expected at least one expert column, got shape {tuple(logits.shape)}")
    _check_top_k(top_k, n_experts)
    if not logits.is_floating_point():
        raise ValueError(f"logits: expected a floating-point tensor, got {describe(logits)}")
    if bias is not None and (not torch.is_tensor(bias) or tuple(bias.shape) != (n_experts,)
                             or not bias.is_floating_point()):
        raise ValueError(f"bias: expected a float tensor of shape ({n_experts},) to match logits [N, E], "
                         f"got {describe(bias)}")
    scale = check_number("scale", scale, 0, lo_open=True)
    scores = torch.sigmoid(logits.float())  # [N, E]
    choice = scores if bias is None else scores + bias.float()
    indices = choice.topk(top_k, dim=-1).indices  # [N, k]
    # w_j = s_j / Σ_i s_i over the picked experts, computed as a softmax of log-sigmoids: the same function,
    # but exact when every picked score underflows to 0 (very negative logits), where the ratio would be 0/0.
    # All-(−inf) logits still give NaN, as PyTorch propagates them.
    weights = torch.softmax(F.logsigmoid(logits.float()).gather(-1, indices), dim=-1) * scale
    return indices, weights


def expected_route_scale(n_experts: int, top_k: int, samples: int = 100_000, seed: int = 0,
                         chunk: int = 8192) -> float:
    """Moonlight's Monte-Carlo estimate of the routed scaling factor ρ = E[1 / ‖p‖₂].

    Logits are drawn i.i.d. N(0, 1) for ``n_experts`` experts, p are the ``top_k`` largest sigmoid scores
    renormalised to sum 1. With every p_j equal to 1/k, 1/‖p‖₂ = √k; spread-out scores give less.
    Reproduces ≈2.446 for (64, 6) and ≈2.827 for (384, 8) (Kimi K2's value).
    """
    check_int("n_experts", n_experts, 1)
    _check_top_k(top_k, n_experts)
    check_int("samples", samples, 1, MAX_ROUTE_SAMPLES)
    check_int("seed", seed)
    check_int("chunk", chunk, 1)
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        scores = torch.randn(n, n_experts, generator=gen, dtype=torch.float64).sigmoid()
        top = scores.topk(top_k, dim=-1).values  # [n, k]
        p = top / top.sum(-1, keepdim=True)
        total += p.norm(dim=-1).reciprocal().sum().item()
    return total / samples


def max_violation(counts: Tensor) -> Tensor:
    """MaxVio = max_i c_i / mean(c) − 1 over the last axis; 0 is perfect balance, E − 1 is the worst.

    counts: ``[..., E]`` tokens per expert (any dtype). Returns fp32 ``[...]``; 0 where no token was routed.
    """
    if not torch.is_tensor(counts) or counts.dim() < 1 or counts.shape[-1] < 1:
        raise ValueError(f"counts: expected a tensor [..., E] with E >= 1, got "
                         f"{tuple(counts.shape) if torch.is_tensor(counts) else type(counts).__name__}")
    c = counts.float()
    if c.numel() and not (torch.isfinite(c).all() and (c >= 0).all()):
        raise ValueError(f"counts: expected finite, non-negative token counts, got values in "
                         f"[{float(c.min())}, {float(c.max())}] (NaN present: {bool(c.isnan().any())})")
    mean = c.mean(-1)
    return torch.where(mean > 0, c.amax(-1) / mean.clamp_min(1e-20) - 1, torch.zeros_like(mean))


def bias_update(bias: Tensor, counts: Tensor, speed: float, rule: str = "moonlight") -> Tensor:
    """One aux-loss-free balancing step; returns the new bias (out of place, fp32).

    ``e_i = mean(c) − c_i`` is positive for an under-loaded expert, whose bias rises by ``speed``.
    ``rule="deepseek"``: Δb = u·sign(e); ``rule="moonlight"``: Δb = u·(sign(e) − mean(sign(e))), so Σ Δb = 0.
    """
    if rule not in BIAS_RULES:
        raise ValueError(f"rule: expected one of {BIAS_RULES}, got {rule!r}")
    check_tensor("bias", bias, dims=1, kind="float")
    if not torch.is_tensor(counts) or tuple(counts.shape) != tuple(bias.shape):
        raise ValueError(f"counts: expected shape {tuple(bias.shape)} like bias, got {describe(counts)}")
    speed = check_number("speed", speed, 0)
    c = counts.float()
    if not (torch.isfinite(c).all() and (c >= 0).all()):
        raise ValueError("counts: expected finite, non-negative token counts")
    step = torch.sign(c.mean() - c)  # [E]
    if rule == "moonlight":
        step = step - step.mean()
    return bias.float() + speed * step


def sequence_aux_loss(scores: Tensor, indices: Tensor, n_seq: int) -> Tensor:
    """DeepSeek-V3's sequence-wise balance loss Σ_i f_i P_i (before the factor α), averaged over sequences.

    scores: ``[N, E]`` sigmoid scores (fp32, with gradient), indices: ``[N, k]`` the selected experts,
    N = n_seq · T with the tokens of each sequence contiguous. Returns a scalar; 1.0 at perfect balance.
    """
    check_tensor("scores", scores, dims=2, kind="float")
    check_tensor("indices", indices, dims=2, kind="int")
    if indices.shape[0] != scores.shape[0]:
        raise ValueError(f"indices: expected {scores.shape[0]} rows like scores, got {describe(indices)}")
    check_int("n_seq", n_seq, 1)
    N, E = scores.shape
    k = indices.shape[1]
    if N % n_seq:
        raise ValueError(f"n_seq: {n_seq} does not divide the {N} routed tokens")
    T = N // n_seq
    probs = scores / scores.sum(-1, keepdim=True)  # s'_{i,t}
    P = probs.view(n_seq, T, E).mean(1)  # [S, E]
    hits = torch.zeros(n_seq, E, device=scores.device, dtype=scores.dtype)
    hits.scatter_add_(1, indices.reshape(n_seq, T * k), torch.ones(n_seq, T * k, device=scores.device,
                                                                   dtype=scores.dtype))
    f = hits * (E / (k * T))  # [S, E], no gradient: the fraction is a count
    return (f * P).sum(-1).mean()


class _AttachAuxLoss(torch.autograd.Function):
    """Identity on ``y`` whose backward also sends gradient 1 into ``aux`` — adds ``aux`` to whatever
    loss ``y`` feeds, without the training loop having to know the MoE layer exists."""

    @staticmethod
    def forward(ctx, y: Tensor, aux: Tensor) -> Tensor:
        ctx.aux_shape, ctx.aux_dtype = aux.shape, aux.dtype
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        return grad_y, torch.ones(ctx.aux_shape, dtype=ctx.aux_dtype, device=grad_y.device)


# ------------------------------------------------------------------------------ routed experts
