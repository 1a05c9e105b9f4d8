"""Building blocks shared by every model in the course: RMSNorm, rotary embeddings, SwiGLU and
causal multi-head attention (MHA / GQA).

Equations, in the notation of the papers the course follows (Llama-style decoder, as in Kimi K2):

    RMSNorm(x) = x / sqrt(mean(x²) + ε) · g
    RoPE: (x₁, x₂) ↦ (x₁ cos θ_p − x₂ sin θ_p, x₂ cos θ_p + x₁ sin θ_p),  θ_{p,i} = p · base^(−2i/d)
    SwiGLU(x) = W₂ (silu(W₁ x) ⊙ W₃ x)
    Attention(Q, K, V) = softmax(Q Kᵀ / √d + M_causal) V

Every attention module also offers *max-logit tracking* (needed by QK-Clip, Kimi K2 §2.1): with
``track_max_logit = True`` the forward pass stores ``self.max_logit`` — per head, the largest scaled
pre-softmax logit over the batch and the causal pairs — computed blockwise, never as a T×T matrix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import Tensor, nn

from kimi_mini.impl import check_impl, resolve_impl
from kimi_mini.registry import register_attention, register_ffn

__all__ = [
    "RMSNorm",
    "Rotary",
    "SwiGLU",
    "MultiHeadAttention",
    "causal_attention",
    "causal_mask",
    "blockwise_max_logit",
]


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned gain.

    Args:
        dim: size of the last axis.
        eps: added to the mean square before the square root.
        impl: ``"torch"`` (reference) or ``"triton"`` (``kimi_mini.kernels.rmsnorm``; interpreter on CPU).
    Shapes: ``[..., dim] -> [..., dim]``, same dtype; statistics in fp32.
    """

    def __init__(self, dim: int, eps: float = 1e-6, impl: str = "torch"):
        super().__init__()
        if impl not in ("torch", "triton"):
            raise ValueError(f"impl: expected 'torch' or 'triton', got {impl!r}")
        self.eps = eps
        self.impl = impl
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if self.impl == "triton":
            from kimi_mini.kernels.rmsnorm import rmsnorm

            return rmsnorm(x, self.weight, self.eps)
        return rmsnorm_reference(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, impl={self.impl!r}"


def rmsnorm_reference(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """RMSNorm straight from the equation, in fp32, cast back to ``x.dtype``."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.float()).to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding (RoPE) for ``dim`` channels (rotate-half layout).

    ``apply(x [B, H, T, dim], start_pos)`` rotates position ``start_pos + t`` of every head.
    The cos/sin tables are non-persistent buffers: they are rebuilt, not checkpointed.
    """

    def __init__(self, dim: int, max_seq_len: int, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim: rotary dimension must be even, got {dim}")
        self.dim, self.max_seq_len, self.theta = dim, max_seq_len, theta
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))  # [dim/2]
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # [T, dim/2]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def apply(self, x: Tensor, start_pos: int = 0) -> Tensor:
        T = x.shape[-2]
        if start_pos + T > self.max_seq_len:
            raise ValueError(
                f"start_pos: positions up to {start_pos + T} exceed max_seq_len={self.max_seq_len}"
            )
        cos = self.cos[start_pos : start_pos + T].to(x.dtype)  # [T, dim/2]
        sin = self.sin[start_pos : start_pos + T].to(x.dtype)
        x1, x2 = x[..., : self.dim // 2], x[..., self.dim // 2 :]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class SwiGLU(nn.Module):
    """The gated feed-forward block: ``W₂ (silu(W₁ x) ⊙ W₃ x)``; ``[B, T, d_model] -> [B, T, d_model]``."""

    residual_projections = ("w2",)  # writes into the residual stream: initialised with std/√(2·n_layers)

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)  # gate
        self.w3 = nn.Linear(d_model, d_ff, bias=False)  # up
        self.w2 = nn.Linear(d_ff, d_model, bias=False)  # down

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


@register_ffn("dense")
def _dense_ffn(config, layer_idx: int) -> nn.Module:
    if config.ffn_options:
        raise ValueError(f"ffn_options: the dense FFN takes no options, got {sorted(config.ffn_options)}")
    return SwiGLU(config.d_model, config.d_ff)


def causal_mask(t_q: int, t_k: int, device=None) -> Tensor:
    """Bool ``[t_q, t_k]``, True where query i (at absolute position t_k − t_q + i) may see key j."""
    offset = t_k - t_q
    q_pos = torch.arange(t_q, device=device)[:, None] + offset
    return torch.arange(t_k, device=device)[None, :] <= q_pos


def causal_attention(q: Tensor, k: Tensor, v: Tensor, impl: str = "torch") -> Tensor:
    """Causal softmax attention; the queries are the *last* ``t_q`` positions of the ``t_k`` keys.

    Args:
        q: ``[B, H, t_q, D]``; k, v: ``[B, H_kv, t_k, D]`` with ``H % H_kv == 0`` (GQA) and t_q ≤ t_k.
        impl: ``"torch"`` (PyTorch's fused SDPA kernel), ``"naive"`` (softmax(QKᵀ/√D)V, O(T²) memory) or
            ``"auto"`` (= torch; the Triton kernel is :func:`kimi_mini.kernels.flash_attention.flash_attention`).
    Returns: ``[B, H, t_q, D]``.
    """
    impl = check_impl(impl, ("naive", "torch", "auto"))
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"q, k, v: expected [B, H, T, D] with k.shape == v.shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, t_q, D = q.shape
    H_kv, t_k = k.shape[1], k.shape[2]
    if H % H_kv or t_q > t_k:
        raise ValueError(f"k: expected H % H_kv == 0 and t_q <= t_k, got H={H}, H_kv={H_kv}, "
                         f"t_q={t_q}, t_k={t_k}")
    if impl in ("torch", "auto"):
        gqa = H != H_kv
        if t_q == t_k:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        mask = causal_mask(t_q, t_k, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    if impl == "naive":
        # GQA: query head h reads kv head h // (H/H_kv), i.e. heads are grouped as (g r)
        k = repeat(k, "b g t d -> b (g r) t d", r=H // H_kv)  # [B, H, t_k, D]
        v = repeat(v, "b g t d -> b (g r) t d", r=H // H_kv)
        scores = einsum(q.float(), k.float(), "b h i d, b h j d -> b h i j") / math.sqrt(D)  # [B, H, t_q, t_k]
        scores = scores.masked_fill(~causal_mask(t_q, t_k, q.device), float("-inf"))
        return einsum(scores.softmax(-1), v.float(), "b h i j, b h j d -> b h i d").to(q.dtype)


@torch.no_grad()
def blockwise_max_logit(q: Tensor, k: Tensor, scale: float, block: int = 256) -> Tensor:
    """Per-head max of ``scale · q·k`` over the batch and causal pairs, one query block at a time.

    q: ``[B, H, t_q, D]`` (the last t_q positions), k: ``[B, H_kv, t_k, D]``. Returns fp32 ``[H]``.
    Peak extra memory is ``B·H·block·t_k``, never ``t_k²``.
    """
    B, H, t_q, _ = q.shape
    H_kv, t_k = k.shape[1], k.shape[2]
    rep = H // H_kv
    kf = k.float().repeat_interleave(rep, dim=1).transpose(-1, -2)  # [B, H, D, t_k]
    best = torch.full((H,), float("-inf"), device=q.device)
    offset = t_k - t_q
    for s in range(0, t_q, block):
        e = min(s + block, t_q)
        hi = offset + e  # keys beyond the block's last query are never visible
        scores = (q[:, :, s:e].float() @ kf[..., :hi]) * scale  # [B, H, e-s, hi]
        scores = scores.masked_fill(~causal_mask(e - s, hi, q.device), float("-inf"))
        best = torch.maximum(best, scores.amax(dim=(0, 2, 3)))
    return best


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention with RoPE; grouped-query when ``n_kv_heads < n_heads``.

    Config fields used: d_model, n_heads, n_kv_heads, head_dim, max_seq_len, rope_theta;
    ``attention_options``: ``impl`` — ``"torch"`` (SDPA, default), ``"naive"``, ``"triton"`` (the flash
    kernel, which also returns the max logit) or ``"auto"`` (triton on CUDA, torch otherwise).
    Parameters (named for QK-Clip, which scales rows per head): ``wq [H·D, C]``, ``wk [H_kv·D, C]``,
    ``wv [H_kv·D, C]``, ``wo [C, H·D]``.
    """

    residual_projections = ("wo",)  # the output projection writes into the residual stream

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        opts = dict(config.attention_options)
        self.impl = check_impl(opts.pop("impl", "torch"), name="attention_options['impl']")
        if opts:
            raise ValueError(f"attention_options: unknown option(s) {sorted(opts)} for multi-head attention; "
                             f"expected only 'impl'")
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.dim_head
        C, H, H_kv, D = config.d_model, self.n_heads, self.n_kv_heads, self.head_dim
        self.wq = nn.Linear(C, H * D, bias=False)
        self.wk = nn.Linear(C, H_kv * D, bias=False)
        self.wv = nn.Linear(C, H_kv * D, bias=False)
        self.wo = nn.Linear(H * D, C, bias=False)
        self.rotary = Rotary(D, config.max_seq_len, config.rope_theta)
        self.track_max_logit = False
        self.max_logit: Tensor | None = None

    def project_qkv(self, x: Tensor, state: dict | None = None, start_pos: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated ``q [B, H, T, D]`` and ``k, v [B, H_kv, T_all, D]``; when decoding (``state`` given) the new
        keys and values are appended to the layer's cache and ``k, v`` cover everything cached so far."""
        H, H_kv = self.n_heads, self.n_kv_heads
        q = rearrange(self.wq(x), "b t (h d) -> b h t d", h=H)  # [B, H, T, D]
        k = rearrange(self.wk(x), "b t (h d) -> b h t d", h=H_kv)  # [B, H_kv, T, D]
        v = rearrange(self.wv(x), "b t (h d) -> b h t d", h=H_kv)
        q, k = self.rotary.apply(q, start_pos), self.rotary.apply(k, start_pos)
        if state is not None:  # decoding: append to this layer's cache, attend to all of it
            if "k" in state:
                k = torch.cat([state["k"], k], dim=2)
                v = torch.cat([state["v"], v], dim=2)
            state["k"], state["v"] = k, v
        return q, k, v

    def forward(self, x: Tensor, state: dict | None = None, start_pos: int = 0) -> Tensor:
        q, k, v = self.project_qkv(x, state, start_pos)
        impl = resolve_impl(self.impl, q)
        if self.track_max_logit and impl != "triton":  # the Triton kernel returns it (running max)
            self.max_logit = blockwise_max_logit(q, k, 1.0 / math.sqrt(self.head_dim))
        if impl == "triton":
            out = self._triton_attention(q, k, v)
        else:
            out = causal_attention(q, k, v, impl=impl)  # [B, H, T, D]
        return self.wo(rearrange(out, "b h t d -> b t (h d)"))  # heads concatenated: [o_1; …; o_H]

    def _triton_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        from kimi_mini.kernels.flash_attention import flash_attention

        out, max_logit = flash_attention(q, k, v)  # [B, H, T, D], [B, H]
        if self.track_max_logit:
            self.max_logit = max_logit.amax(0)
        return out

    def extra_repr(self) -> str:
        return f"heads={self.n_heads}, kv_heads={self.n_kv_heads}, head_dim={self.head_dim}, impl={self.impl!r}"


register_attention("mha")(MultiHeadAttention)
