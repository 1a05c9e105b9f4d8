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


def _sort_pairs(indices: Tensor, E: int) -> tuple[Tensor, Tensor, list[int]]:
    """The N·k (token, slot) pairs grouped by expert: ``order [N·k]`` (pair ids ``token·k + slot``),
    ``token [N·k]`` (the token of each sorted pair) and the E segment lengths."""
    flat = indices.reshape(-1)
    order = flat.to(torch.int32).argsort(stable=True)  # int32: a radix sort, ~30x faster than int64's
    return order, order // indices.shape[1], torch.bincount(flat, minlength=E).tolist()


def _experts_sorted_autograd(x: Tensor, indices: Tensor, weights: Tensor, w1: Tensor, w3: Tensor,
                             w2: Tensor) -> Tensor:
    """The sorted-segment loop differentiated by autograd (used under autocast, where the matmuls follow
    autocast's dtype rules): one matmul chain per expert segment, scatter-added back."""
    N, d = x.shape
    order, token, counts = _sort_pairs(indices, w1.shape[0])
    # index_select, not x[token]: its backward is index_add_, not the serial accumulating index_put_ (~4x)
    xs = x.index_select(0, token).split(counts)  # E segments [n_e, d]
    ws = weights.reshape(-1).index_select(0, order)[:, None].split(counts)  # E segments [n_e, 1]
    tokens = token.split(counts)
    # unbind (not w1[e]) so the backward stacks E slices once instead of E full-size zero tensors
    w1s, w3s, w2s = w1.unbind(0), w3.unbind(0), w2.unbind(0)
    out = None
    for e in range(w1.shape[0]):
        if not counts[e]:
            continue
        # w·(h W₂) = (w·h) W₂: weighting the [n_e, h] hidden is cheaper than the [n_e, d] output
        y = ((F.silu(xs[e] @ w1s[e]) * (xs[e] @ w3s[e])) * ws[e]) @ w2s[e]  # [n_e, d]
        if out is None:  # y's dtype: bf16 under autocast, like a Linear
            out = y.new_zeros(N, d)
        out.index_add_(0, tokens[e], y)  # straight into the output: no [N·k, d] cat
    return out


class _SortedExperts(torch.autograd.Function):
    """The sorted-segment loop with a hand-written backward, one expert at a time.

    Forward, per expert e with token rows ``X_e = x[tok_e]`` and routing weights ``w_e``:
    ``A = X_e W1[e]``, ``B = X_e W3[e]``, ``H = silu(A) ⊙ B``, ``y = (w_e ⊙ H) W2[e]`` scatter-added to
    the tokens. Only ``A`` and ``B`` are kept ([N·k, h] each); the backward re-gathers ``X_e`` and
    ``dY_e`` per expert (the rows stay in cache for their matmuls) and writes every weight gradient
    straight into its ``[E, ·, ·]`` buffer — no per-expert autograd nodes, no stacking of E gradients,
    no [N·k, d] copies of x or dy:

        dW2[e] = (w_e ⊙ H)ᵀ dY_e        dH~ = dY_e W2[e]ᵀ          dw_e = rowsum(dH~ ⊙ H)
        dB = w_e ⊙ dH~ ⊙ silu(A)        dA = w_e ⊙ dH~ ⊙ B ⊙ silu'(A),  silu'(a) = σ(a)(1 + a(1 − σ(a)))
        dW1[e] = X_eᵀ dA                dW3[e] = X_eᵀ dB             dx[tok_e] += dA W1[e]ᵀ + dB W3[e]ᵀ
    """

    @staticmethod
    def forward(ctx, x, weights, w1, w3, w2, indices):
        N, d = x.shape
        E, h = w1.shape[0], w1.shape[2]
        order, token, counts = _sort_pairs(indices, E)
        ws = weights.reshape(-1).index_select(0, order)[:, None]  # [N·k, 1] in sorted order
        a, b = x.new_empty(order.numel(), h), x.new_empty(order.numel(), h)  # kept for the backward
        out = x.new_zeros(N, d)
        s = 0
        for e, n_e in enumerate(counts):
            if not n_e:
                continue
            seg = slice(s, s + n_e)
            tok = token[seg]
            xs = x.index_select(0, tok)  # [n_e, d]
            torch.mm(xs, w1[e], out=a[seg])
            torch.mm(xs, w3[e], out=b[seg])
            hw = F.silu(a[seg]).mul_(b[seg]).mul_(ws[seg])  # w·(h W₂) = (w·h) W₂: weight the narrower hidden
            out.index_add_(0, tok, hw @ w2[e])  # straight into the output: no [N·k, d] cat
            s += n_e
        ctx.save_for_backward(x, w1, w3, w2, a, b, order, ws)
        ctx.counts = counts
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w1, w3, w2, a, b, order, ws = ctx.saved_tensors
        counts = ctx.counts
        k = order.numel() // x.shape[0]  # N > 0: moe_experts returns early for no tokens
        token = order // k
        dout = dout.contiguous()
        need_x, need_w, need_1, need_3, need_2 = ctx.needs_input_grad[:5]
        dx = torch.zeros_like(x) if need_x else None
        # every used expert's slice is written whole by its matmul: only unused experts need zeros
        dw1, dw3, dw2 = (torch.empty_like(w) if need else None
                         for w, need in ((w1, need_1), (w3, need_3), (w2, need_2)))
        unused = [e for e, n_e in enumerate(counts) if not n_e]
        for dw in (dw1, dw3, dw2):
            if dw is not None and unused:
                dw[unused] = 0
        dws = ws.new_empty(order.numel()) if need_w else None
        s = 0
        for e, n_e in enumerate(counts):
            if not n_e:
                continue
            seg = slice(s, s + n_e)
            s += n_e
            tok = token[seg]
            dy = dout.index_select(0, tok)  # [n_e, d]
            ae, be, we = a[seg], b[seg], ws[seg]
            sig = torch.sigmoid(ae)
            act = ae * sig  # silu(A)
            hid = act * be  # H
            if need_2:
                torch.mm((hid * we).t(), dy, out=dw2[e])
            dh = dy @ w2[e].t()  # dH~ [n_e, h]
            if need_w:
                dws[seg] = (dh * hid).sum(-1)
            dh.mul_(we)  # w·dH~
            db = dh * act
            # dA = w·dH~ ⊙ B ⊙ σ(A)(1 + A(1 − σ(A)))
            da = dh.mul_(be).mul_(sig.mul_(ae.mul(sig.neg().add_(1)).add_(1)))
            if need_1 or need_3 or need_x:
                xs = x.index_select(0, tok) if (need_1 or need_3) else None
                if need_1:
                    torch.mm(xs.t(), da, out=dw1[e])
                if need_3:
                    torch.mm(xs.t(), db, out=dw3[e])
                if need_x:
                    dxs = da @ w1[e].t()
                    dxs.addmm_(db, w3[e].t())
                    dx.index_add_(0, tok, dxs)
        dweights = None
        if need_w:
            dweights = torch.empty_like(dws).index_copy_(0, order, dws).view(-1, k)
        return dx, dweights, dw1, dw3, dw2, None


def _experts_sorted(x: Tensor, indices: Tensor, weights: Tensor, w1: Tensor, w3: Tensor,
                    w2: Tensor) -> Tensor:
    """Vectorised: sort the N·k pairs by expert, one matmul chain per contiguous segment, scatter-add back
    (:class:`_SortedExperts`; under autocast the same loop differentiated by autograd)."""
    if torch.is_autocast_enabled(x.device.type):
        return _experts_sorted_autograd(x, indices, weights, w1, w3, w2)
    return _SortedExperts.apply(x, weights, w1, w3, w2, indices)


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
