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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.impl import IMPLS, check_impl, resolve_impl
from kimi_mini.layers import SwiGLU
from kimi_mini.registry import register_ffn

__all__ = [
    "sigmoid_topk_route",
    "expected_route_scale",
    "max_violation",
    "bias_update",
    "sequence_aux_loss",
    "moe_experts",
    "MoE",
    "moe_layers",
    "moe_bias_update_callback",
    "IMPLS",
]

BIAS_RULES = ("moonlight", "deepseek")


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
    if bias is not None and (not torch.is_tensor(bias) or tuple(bias.shape) != (n_experts,)):
        shape = tuple(bias.shape) if torch.is_tensor(bias) else type(bias).__name__
        raise ValueError(f"bias: expected shape ({n_experts},) to match logits [N, E], got {shape}")
    scores = torch.sigmoid(logits.float())  # [N, E]
    choice = scores if bias is None else scores + bias.float()
    indices = choice.topk(top_k, dim=-1).indices  # [N, k]
    picked = scores.gather(-1, indices)  # [N, k], unbiased
    weights = picked / (picked.sum(-1, keepdim=True) + 1e-20) * scale
    return indices, weights


def expected_route_scale(n_experts: int, top_k: int, samples: int = 100_000, seed: int = 0,
                         chunk: int = 8192) -> float:
    """Moonlight's Monte-Carlo estimate of the routed scaling factor ρ = E[1 / ‖p‖₂].

    Logits are drawn i.i.d. N(0, 1) for ``n_experts`` experts, p are the ``top_k`` largest sigmoid scores
    renormalised to sum 1. With every p_j equal to 1/k, 1/‖p‖₂ = √k; spread-out scores give less.
    Reproduces ≈2.446 for (64, 6) and ≈2.827 for (384, 8) (Kimi K2's value).
    """
    if not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"n_experts: expected a positive int, got {n_experts!r}")
    _check_top_k(top_k, n_experts)
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected a positive int, got {samples!r}")
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
    mean = c.mean(-1)
    return torch.where(mean > 0, c.amax(-1) / mean.clamp_min(1e-20) - 1, torch.zeros_like(mean))


def bias_update(bias: Tensor, counts: Tensor, speed: float, rule: str = "moonlight") -> Tensor:
    """One aux-loss-free balancing step; returns the new bias (out of place, fp32).

    ``e_i = mean(c) − c_i`` is positive for an under-loaded expert, whose bias rises by ``speed``.
    ``rule="deepseek"``: Δb = u·sign(e); ``rule="moonlight"``: Δb = u·(sign(e) − mean(sign(e))), so Σ Δb = 0.
    """
    if rule not in BIAS_RULES:
        raise ValueError(f"rule: expected one of {BIAS_RULES}, got {rule!r}")
    if tuple(counts.shape) != tuple(bias.shape):
        raise ValueError(f"counts: expected shape {tuple(bias.shape)} like bias, got {tuple(counts.shape)}")
    c = counts.float()
    step = torch.sign(c.mean() - c)  # [E]
    if rule == "moonlight":
        step = step - step.mean()
    return bias.float() + speed * step


def sequence_aux_loss(scores: Tensor, indices: Tensor, n_seq: int) -> Tensor:
    """DeepSeek-V3's sequence-wise balance loss Σ_i f_i P_i (before the factor α), averaged over sequences.

    scores: ``[N, E]`` sigmoid scores (fp32, with gradient), indices: ``[N, k]`` the selected experts,
    N = n_seq · T with the tokens of each sequence contiguous. Returns a scalar; 1.0 at perfect balance.
    """
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
    order = flat.argsort(stable=True)  # pair ids grouped by expert
    token = order // k  # [N·k] token of each sorted pair
    counts = torch.bincount(flat, minlength=E).tolist()
    xs = x[token].split(counts)  # E segments [n_e, d]
    ws = weights.reshape(-1)[order, None].split(counts)  # E segments [n_e, 1]
    # unbind (not w1[e]) so the backward stacks E slices once instead of E full-size zero tensors
    w1s, w3s, w2s = w1.unbind(0), w3.unbind(0), w2.unbind(0)
    # w·(h W₂) = (w·h) W₂: weighting the [n_e, h] hidden is cheaper than the [n_e, d] output
    ys = torch.cat([((F.silu(xs[e] @ w1s[e]) * (xs[e] @ w3s[e])) * ws[e]) @ w2s[e]
                    for e in range(E) if counts[e]])  # [N·k, d] in expert order
    return ys.new_zeros(N, d).index_add(0, token, ys)  # ys's dtype: bf16 under autocast, like a Linear


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
    if x.dim() != 2 or indices.shape != weights.shape or indices.shape[0] != x.shape[0]:
        raise ValueError(f"indices: expected [N, k] matching weights and x [N, d], got x {tuple(x.shape)}, "
                         f"indices {tuple(indices.shape)}, weights {tuple(weights.shape)}")
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
class MoE(nn.Module):
    """Kimi K2's MoE feed-forward layer: sigmoid top-k router, routed + shared SwiGLU experts,
    aux-loss-free bias balancing (and, optionally, DeepSeek-V3's sequence-wise auxiliary loss).

    Args:
        d_model: token width d.
        n_experts: routed experts E (K2: 384).
        top_k: experts per token k (K2: 8).
        d_expert: hidden width of each expert (K2: 2048).
        n_shared: shared experts, run on every token as one SwiGLU of width ``n_shared·d_expert`` (K2: 1).
        route_scale: ρ multiplying the renormalised routing weights (K2: 2.827).
        bias_update_speed: u of the balancing rule; 0 turns aux-loss-free balancing off.
        bias_rule: ``"moonlight"`` (zero-mean sign, default) or ``"deepseek"`` (plain sign).
        aux_loss_alpha: α of the sequence-wise auxiliary loss; 0 (default) turns it off.
        impl: ``"naive"``, ``"torch"`` (default) or ``"triton"``; may be changed on the instance.
    Shapes: ``forward(x [B, T, d]) -> [B, T, d]``.

    State beyond parameters: ``expert_bias [E]`` (fp32 buffer, saved with the model, never touched by
    gradients) and ``load_counts [E]`` (tokens routed per expert since the last :meth:`update_bias_`,
    counted in training mode only). ``last_indices`` holds the last forward's ``[B·T, k]`` choices.
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, d_expert: int, n_shared: int = 1,
                 route_scale: float = 1.0, bias_update_speed: float = 1e-3, bias_rule: str = "moonlight",
                 aux_loss_alpha: float = 0.0, impl: str = "torch"):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_experts", n_experts), ("d_expert", d_expert)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        _check_top_k(top_k, n_experts)
        if not isinstance(n_shared, int) or n_shared < 0:
            raise ValueError(f"n_shared: expected an int >= 0, got {n_shared!r}")
        if not route_scale > 0:
            raise ValueError(f"route_scale: expected a positive number, got {route_scale!r}")
        if not bias_update_speed >= 0:
            raise ValueError(f"bias_update_speed: expected a number >= 0, got {bias_update_speed!r}")
        if bias_rule not in BIAS_RULES:
            raise ValueError(f"bias_rule: expected one of {BIAS_RULES}, got {bias_rule!r}")
        if not aux_loss_alpha >= 0:
            raise ValueError(f"aux_loss_alpha: expected a number >= 0, got {aux_loss_alpha!r}")
        check_impl(impl)
        self.d_model, self.n_experts, self.top_k, self.d_expert = d_model, n_experts, top_k, d_expert
        self.n_shared, self.route_scale, self.impl = n_shared, float(route_scale), impl
        self.bias_update_speed, self.bias_rule = float(bias_update_speed), bias_rule
        self.aux_loss_alpha = float(aux_loss_alpha)
        self.router = nn.Linear(d_model, n_experts, bias=False)  # W_r [E, d]; no bias term
        self.experts = RoutedExperts(n_experts, d_model, d_expert)
        self.shared = SwiGLU(d_model, n_shared * d_expert) if n_shared else None
        self.register_buffer("expert_bias", torch.zeros(n_experts, dtype=torch.float32))
        self.register_buffer("load_counts", torch.zeros(n_experts, dtype=torch.int64), persistent=False)
        self.last_indices: Tensor | None = None
        self.last_aux_loss: Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for p in self.parameters():
            nn.init.normal_(p, std=std)

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) must not round the selection bias: updates of u = 1e-3 would vanish
        super()._apply(fn, recurse)
        self.expert_bias.data = self.expert_bias.data.float()
        self.load_counts.data = self.load_counts.data.long()
        return self

    def route(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``flat [N, d]`` → ``(indices [N, k], weights [N, k] fp32, scores [N, E] fp32)``."""
        with torch.autocast(flat.device.type, enabled=False):  # K2 routes in fp32, even under autocast
            logits = F.linear(flat.float(), self.router.weight.float())  # [N, E]
        indices, weights = sigmoid_topk_route(logits, self.expert_bias, self.top_k, self.route_scale)
        return indices, weights, torch.sigmoid(logits)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected [B, T, {self.d_model}], got {tuple(x.shape)}")
        B, T, d = x.shape
        flat = x.reshape(B * T, d)
        indices, weights, scores = self.route(flat)
        self.last_indices = indices.detach()
        if self.training:
            with torch.no_grad():
                self.load_counts += torch.bincount(indices.reshape(-1), minlength=self.n_experts)
        out = self.experts(flat, indices, weights, self.impl)  # [N, d]
        if self.shared is not None:
            out = out + self.shared(flat)
        out = out.view(B, T, d)
        if self.training and self.aux_loss_alpha > 0 and torch.is_grad_enabled():
            aux = self.aux_loss_alpha * sequence_aux_loss(scores, indices, B)
            self.last_aux_loss = aux.detach()
            out = _AttachAuxLoss.apply(out, aux)
        return out

    @torch.no_grad()
    def update_bias_(self) -> Tensor:
        """Apply one balancing step from the loads counted since the last call, then reset them.

        Returns the counts used ``[E]`` (int64). With ``bias_update_speed == 0`` only the reset happens.
        Call after each optimizer step (:func:`moe_bias_update_callback` does it in the training loop).
        """
        counts = self.load_counts.clone()
        if self.bias_update_speed > 0 and counts.sum() > 0:
            self.expert_bias.copy_(bias_update(self.expert_bias, counts, self.bias_update_speed,
                                               self.bias_rule))
        self.load_counts.zero_()
        return counts

    def routed_expert_numel(self) -> int:
        """Parameters of one routed expert: 3·d·h."""
        return 3 * self.d_model * self.d_expert

    def activated_numel(self) -> int:
        """Parameters one token uses: router + shared experts + top_k of the E routed experts."""
        shared = sum(p.numel() for p in self.shared.parameters()) if self.shared is not None else 0
        return self.router.weight.numel() + shared + self.top_k * self.routed_expert_numel()

    def extra_repr(self) -> str:
        return (f"experts={self.n_experts}, top_k={self.top_k}, d_expert={self.d_expert}, "
                f"shared={self.n_shared}, route_scale={self.route_scale:g}, "
                f"u={self.bias_update_speed:g} ({self.bias_rule}), aux_alpha={self.aux_loss_alpha:g}, "
                f"impl={self.impl!r}")


# ------------------------------------------------------------------------- model registration
_MOE_OPTIONS = ("n_experts", "top_k", "d_expert", "n_shared", "route_scale", "bias_update_speed",
                "bias_rule", "aux_loss_alpha", "impl", "first_k_dense_replace")


@register_ffn("moe")
def build_moe_ffn(config, layer_idx: int) -> nn.Module:
    """FFN builder for ``KimiConfig(ffn="moe", ffn_options={...})``.

    ``ffn_options``: ``n_experts`` (default 8), ``top_k`` (2), ``d_expert`` (default
    ``d_ff // (top_k + n_shared)``, so a token activates as many FFN weights as the dense model),
    ``n_shared`` (1), ``route_scale`` (1.0), ``bias_update_speed`` (1e-3), ``bias_rule``
    ("moonlight"), ``aux_loss_alpha`` (0), ``impl`` ("torch") and ``first_k_dense_replace`` (0): the
    first that many layers keep a dense SwiGLU of width ``d_ff``, as in K2 (which uses 1).
    """
    opts = dict(config.ffn_options)
    unknown = sorted(set(opts) - set(_MOE_OPTIONS))
    if unknown:
        raise ValueError(f"ffn_options: unknown MoE option(s) {unknown}; "
                         f"expected some of {list(_MOE_OPTIONS)}")
    first_dense = opts.pop("first_k_dense_replace", 0)
    if not isinstance(first_dense, int) or first_dense < 0:
        raise ValueError(f"ffn_options['first_k_dense_replace']: expected an int >= 0, got {first_dense!r}")
    if layer_idx < first_dense:
        return SwiGLU(config.d_model, config.d_ff)
    n_experts = opts.pop("n_experts", 8)
    if not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"ffn_options['n_experts']: expected a positive int, got {n_experts!r}")
    top_k = opts.pop("top_k", min(2, n_experts))
    n_shared = opts.pop("n_shared", 1)
    if not isinstance(top_k, int) or not isinstance(n_shared, int):
        raise ValueError(f"ffn_options: top_k and n_shared must be ints, got {top_k!r}, {n_shared!r}")
    d_expert = opts.pop("d_expert", max(1, config.d_ff // max(1, top_k + n_shared)))
    return MoE(config.d_model, n_experts, top_k, d_expert, n_shared=n_shared, **opts)


def moe_layers(model: nn.Module) -> list[MoE]:
    """Every :class:`MoE` inside ``model``, in module order (layer order for KimiMini)."""
    return [m for m in model.modules() if isinstance(m, MoE)]


def moe_bias_update_callback(record_loads: bool = False) -> Callable:
    """A ``train(..., callbacks=[...])`` callback: after each optimizer step, every MoE layer applies
    :meth:`MoE.update_bias_` (a no-op on the bias when its speed is 0) and the step's load is logged.

    Adds to the step's record: ``maxvio`` (mean over MoE layers of the step's MaxVio),
    ``maxvio_layers`` (one float per layer), ``aux_loss`` (sum over layers, when enabled) and, with
    ``record_loads``, ``loads`` (per layer, the tokens per expert as a list of ints).
    """

    def callback(step: int, model: nn.Module, optimizer, record: dict) -> None:
        layers = moe_layers(model)
        if not layers:
            return
        counts = [m.update_bias_() for m in layers]
        vio = [max_violation(c).item() for c in counts]
        record["maxvio"] = sum(vio) / len(vio)
        record["maxvio_layers"] = vio
        aux = [m.last_aux_loss for m in layers if m.aux_loss_alpha > 0 and m.last_aux_loss is not None]
        if aux:
            record["aux_loss"] = float(sum(a.item() for a in aux))
        if record_loads:
            record["loads"] = [c.tolist() for c in counts]

    return callback
