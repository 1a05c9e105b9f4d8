"""The routed experts, three ways (``impl=``): ``"naive"`` loops over experts with masks; ``"torch"`` sorts
the token–expert pairs by expert, runs one matmul chain per contiguous segment and scatter-adds the weighted
rows back; ``"triton"`` is the grouped GEMM of :mod:`kimi_mini.kernels.moe`.

On a CPU the per-expert loop beats one batched matmul over a padded ``[E, C, d]`` layout and beats a
hand-written backward that runs SwiGLU's elementwise steps once over all N·k rows (both measured, issue
16): each expert's [n_e, h] hidden stays in cache between its matmuls, while whole-layer elementwise
passes stream 32 MB tensors through memory; and ``index_add`` of the sorted rows is ~2x cheaper than
gathering them back to pair order and summing the k slots."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.checks import check_tensor
from kimi_mini.impl import resolve_impl

__all__ = ["moe_experts", "ExpertWeights", "RoutedExperts"]


def _swiglu(x: Tensor, w1: Tensor, w3: Tensor, w2: Tensor) -> Tensor:
    """One expert on rows ``x [n, d]`` with weights ``w1, w3 [d, h]``, ``w2 [h, d]``."""
    return (F.silu(x @ w1) * (x @ w3)) @ w2


def _experts_naive(x: Tensor, indices: Tensor, weights: Tensor, w1: Tensor, w3: Tensor,
                   w2: Tensor) -> Tensor:
    """Reference: for every expert, find its (token, slot) pairs with a mask and add its weighted output."""
    out = torch.zeros_like(x)  # [N, d]
    for e in range(w1.shape[0]):
        token, slot = torch.where(indices == e)  # pairs routed to expert e
        if token.numel() == 0:
            continue
        y = _swiglu(x[token], w1[e], w3[e], w2[e])  # [n_e, d]
        out = out.index_add(0, token, (y * weights[token, slot, None]).to(out.dtype))
    return out


def _experts_sorted(x: Tensor, indices: Tensor, weights: Tensor, w1: Tensor, w3: Tensor,
                    w2: Tensor) -> Tensor:
    """Vectorised: sort the N·k pairs by expert, one matmul chain per contiguous segment, scatter-add back."""
    N, d = x.shape
    k = indices.shape[1]
    E = w1.shape[0]
    flat = indices.reshape(-1)  # [N·k], pair p = token·k + slot
    order = flat.to(torch.int32).argsort(stable=True)  # pair ids grouped by expert (int32: radix sort, ~30x)
    token = order // k  # [N·k] token of each sorted pair
    counts = torch.bincount(flat, minlength=E).tolist()
    # index_select, not x[token]: its backward is index_add_, not the serial accumulating index_put_ (~4x)
    xs = x.index_select(0, token).split(counts)  # E segments [n_e, d]
    ws = weights.reshape(-1).index_select(0, order)[:, None].split(counts)  # E segments [n_e, 1]
    tokens = token.split(counts)
    # unbind (not w1[e]) so the backward stacks E slices once instead of E full-size zero tensors
    w1s, w3s, w2s = w1.unbind(0), w3.unbind(0), w2.unbind(0)
    out = None
    for e in range(E):
        if not counts[e]:
            continue
        # w·(h W₂) = (w·h) W₂: weighting the [n_e, h] hidden is cheaper than the [n_e, d] output
        y = ((F.silu(xs[e] @ w1s[e]) * (xs[e] @ w3s[e])) * ws[e]) @ w2s[e]  # [n_e, d]
        if out is None:  # y's dtype: bf16 under autocast, like a Linear
            out = y.new_zeros(N, d)
        out.index_add_(0, tokens[e], y)  # straight into the output: no [N·k, d] cat
    return out


def moe_experts(x: Tensor, indices: Tensor, weights: Tensor, w1: Tensor, w3: Tensor, w2: Tensor,
                impl: str = "torch") -> Tensor:
    """Σ_j weights[:, j] · FFN_indices[:, j](x) for stacked SwiGLU experts.

    Args:
        x: ``[N, d]`` tokens. indices: ``[N, k]`` int64 expert ids. weights: ``[N, k]`` (cast to x.dtype).
        w1, w3: ``[E, d, h]`` gate and up projections; w2: ``[E, h, d]`` down projection.
        impl: ``"naive"``, ``"torch"``, ``"triton"`` or ``"auto"`` (triton on CUDA, torch otherwise).
    Returns: ``[N, d]`` in x.dtype.
    """
    impl = resolve_impl(impl, x if isinstance(x, Tensor) else torch.empty(0))
    check_tensor("x", x, dims=2, kind="float")
    check_tensor("indices", indices, dims=2, kind="int", device=x.device)
    check_tensor("weights", weights, dims=2, kind="float", device=x.device)
    if indices.shape != weights.shape or indices.shape[0] != x.shape[0]:
        raise ValueError(f"indices: expected [N, k] matching weights and x [N, d], got x {tuple(x.shape)}, "
                         f"indices {tuple(indices.shape)}, weights {tuple(weights.shape)}")
    for name, w in (("w1", w1), ("w3", w3), ("w2", w2)):
        check_tensor(name, w, dims=3, kind="float", device=x.device)
    E, d, h = w1.shape
    if d != x.shape[1] or w3.shape != w1.shape or w2.shape != (E, h, d):
        raise ValueError(f"w1, w3, w2: expected [E, d, h], [E, d, h], [E, h, d] with d = {x.shape[1]}, got "
                         f"{tuple(w1.shape)}, {tuple(w3.shape)}, {tuple(w2.shape)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= E):
        raise ValueError(f"indices: expected expert ids in [0, {E - 1}], got values in "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    weights = weights.to(x.dtype)
    if x.shape[0] == 0:
        return torch.zeros_like(x)
    if impl == "naive":
        return _experts_naive(x, indices, weights, w1, w3, w2)
    if impl == "torch":
        return _experts_sorted(x, indices, weights, w1, w3, w2)
    from kimi_mini.kernels.moe import moe_swiglu_experts

    return moe_swiglu_experts(x, indices, weights, w1, w3, w2)


class ExpertWeights(nn.Module):
    """E stacked matrices ``weight [E, d_in, d_out]`` (one per expert), applied as ``x @ weight[e]``.

    A module only so the parameter is named like SwiGLU's (``experts.w2.weight``), which the model's
    initialisation recognises as a residual output projection.
    """

    def __init__(self, n_experts: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d_in, d_out))

    def extra_repr(self) -> str:
        return "experts={}, d_in={}, d_out={}".format(*self.weight.shape)


class RoutedExperts(nn.Module):
    """The routed SwiGLU experts: ``w1, w3 [E, d, h]`` (gate, up) and ``w2 [E, h, d]`` (down)."""

    def __init__(self, n_experts: int, d_model: int, d_expert: int):
        super().__init__()
        self.w1 = ExpertWeights(n_experts, d_model, d_expert)
        self.w3 = ExpertWeights(n_experts, d_model, d_expert)
        self.w2 = ExpertWeights(n_experts, d_expert, d_model)

    def forward(self, x: Tensor, indices: Tensor, weights: Tensor, impl: str = "torch") -> Tensor:
        return moe_experts(x, indices, weights, self.w1.weight, self.w3.weight, self.w2.weight, impl)


# ----------------------------------------------------------------------------------- the layer
