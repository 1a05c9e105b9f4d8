"""Multi-head latent attention (MLA), the attention of DeepSeek-V2/V3 and Kimi K2.

Papers: DeepSeek-V2 (arXiv 2405.04434, §2.1), Kimi K2 (arXiv 2507.20534, §2.2: 64 heads,
q_lora_rank 1536, kv_lora_rank 512, qk_nope 128, qk_rope 64, v 128).

MLA caches one small *latent* per token instead of per-head keys and values. For token t with
hidden state h_t (d_c = kv_lora_rank, d_c' = q_lora_rank, d_h = qk_nope, d_r = qk_rope):

    queries   c_t^Q = RMSNorm(W^{DQ} h_t)                          [d_c']     (low-rank query path)
              [q_{t,i}^C ; q_{t,i}^R'] = W^{UQ} c_t^Q  per head i   [d_h ; d_r]
              q_{t,i}^R = RoPE(q_{t,i}^R')
    keys/vals [c_t^{KV} ; k_t^R'] = W^{DKV} h_t,  c_t^{KV} ← RMSNorm(c_t^{KV})    [d_c ; d_r]
              k_t^R = RoPE(k_t^R')                    ONE rotary key shared by every head
              [k_{t,i}^C ; v_{t,i}] = W^{UKV} c_t^{KV}  per head i  [d_h ; d_v]
    logits    s_{t,j,i} = (q_{t,i}^C · k_{j,i}^C + q_{t,i}^R · k_j^R) / √(d_h + d_r)
    output    o_{t,i} = Σ_j softmax_j(s_{t,j,i}) v_{j,i},   u_t = W^O [o_{t,1}; …; o_{t,H}]

The KV cache holds only c_t^{KV} and k_t^R: (d_c + d_r) numbers per token and layer, against
2·H·d_h for multi-head attention. RoPE is *decoupled* (applied only to the extra d_r channels)
because a position-dependent rotation between W^{UK} and the latent would block folding W^{UK}
into the query at inference time.

Parameter names (QK-Clip in :mod:`kimi_mini.qk_clip` scales rows of these per head):
``wq_a [d_c', C]``, ``q_norm``, ``wq_b [H·(d_h+d_r), d_c']`` (or ``wq [H·(d_h+d_r), C]`` when
``q_lora_rank`` is None), ``wkv_a [d_c + d_r, C]``, ``kv_norm``, ``wkv_b [H·(d_h+d_v), d_c]``,
``wo [C, H·d_v]``. Per head, the rows of wq_b/wq are ``[nope | rope]`` and of wkv_b ``[k_nope | v]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import Tensor, nn

from kimi_mini.impl import check_impl, resolve_impl
from kimi_mini.layers import RMSNorm, Rotary, blockwise_max_logit, causal_mask
from kimi_mini.registry import register_attention

__all__ = ["MultiHeadLatentAttention", "MLA_OPTIONS", "mla_cache_numel_per_token",
           "mha_cache_numel_per_token", "mla_logits_reference"]

#: ``attention_options`` keys understood by "mla" (defaults follow K2's ratios to the head dim).
MLA_OPTIONS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "impl")


def mla_cache_numel_per_token(kv_lora_rank: int, qk_rope_head_dim: int) -> int:
    """Numbers cached per token and layer by MLA: the KV latent and the shared rotary key."""
    return kv_lora_rank + qk_rope_head_dim


def mha_cache_numel_per_token(n_kv_heads: int, head_dim: int) -> int:
    """Numbers cached per token and layer by MHA/GQA: a key and a value per kv head."""
    return 2 * n_kv_heads * head_dim


def _positive_int(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"attention_options[{name!r}]: expected a positive int"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    return value


class MultiHeadLatentAttention(nn.Module):
    """Causal MLA with decoupled RoPE and a latent-only KV cache.

    Config fields used: d_model, n_heads, dim_head, max_seq_len, rope_theta, norm_eps;
    ``attention_options`` (defaults in brackets, d = ``config.dim_head``):

    - ``q_lora_rank`` [None]: rank of the query down-projection; None = full-rank ``wq``.
    - ``kv_lora_rank`` [4·d]: size of the cached KV latent (K2: 512 = 4·128).
    - ``qk_nope_head_dim`` [d], ``qk_rope_head_dim`` [d/2] (even), ``v_head_dim`` [d].
    - ``impl`` ["torch"]: ``"torch"`` (SDPA), ``"naive"`` (softmax(QKᵀ)V in fp32), ``"triton"``
      (``kimi_mini.kernels.flash_attention``; its running max gives the max logit for free) or ``"auto"``
      (triton on CUDA, torch otherwise).

    ``forward(x [B, T, C], state=None, start_pos=0) -> [B, T, C]``. With a ``state`` dict (decoding)
    the module appends ``c_kv [B, T, kv_lora_rank]`` and ``k_rope [B, T, qk_rope_head_dim]`` to it
    and attends to everything cached. With ``track_max_logit = True`` the forward stores
    ``max_logit [H]`` (fp32): the largest scaled logit per head over the batch and the causal pairs.
    """

    residual_projections = ("wo",)  # the output projection writes into the residual stream

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        opts = dict(config.attention_options)
        unknown = sorted(set(opts) - set(MLA_OPTIONS))
        if unknown:
            raise ValueError(f"attention_options: unknown MLA option(s) {unknown}; expected keys among "
                             f"{list(MLA_OPTIONS)}")
        d = config.dim_head
        self.q_lora_rank = _positive_int("q_lora_rank", opts.get("q_lora_rank"), allow_none=True)
        self.qk_nope_head_dim = _positive_int("qk_nope_head_dim", opts.get("qk_nope_head_dim", d))
        self.qk_rope_head_dim = _positive_int("qk_rope_head_dim",
                                              opts.get("qk_rope_head_dim", max(2, d // 2)))
        self.v_head_dim = _positive_int("v_head_dim", opts.get("v_head_dim", d))
        self.kv_lora_rank = _positive_int("kv_lora_rank", opts.get("kv_lora_rank", 4 * self.qk_nope_head_dim))
        if self.qk_rope_head_dim % 2:
            raise ValueError("attention_options['qk_rope_head_dim']: expected an even int (RoPE rotates "
                             f"pairs), got {self.qk_rope_head_dim}")
        self.impl = check_impl(opts.get("impl", "torch"), name="attention_options['impl']")

        self.layer_idx = layer_idx
        self.n_heads = H = config.n_heads
        C = config.d_model
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self.scale = 1.0 / math.sqrt(self.qk_head_dim)
        if self.q_lora_rank is None:
            self.wq = nn.Linear(C, H * self.qk_head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(C, self.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(self.q_lora_rank, config.norm_eps)
            self.wq_b = nn.Linear(self.q_lora_rank, H * self.qk_head_dim, bias=False)
        self.wkv_a = nn.Linear(C, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_norm = RMSNorm(self.kv_lora_rank, config.norm_eps)
        self.wkv_b = nn.Linear(self.kv_lora_rank, H * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.wo = nn.Linear(H * self.v_head_dim, C, bias=False)
        self.rotary = Rotary(self.qk_rope_head_dim, config.max_seq_len, config.rope_theta)
        self.track_max_logit = False
        self.max_logit: Tensor | None = None

    @property
    def q_proj(self) -> nn.Linear:
        """The projection whose output rows are the per-head queries ``[nope | rope]``."""
        return self.wq if self.q_lora_rank is None else self.wq_b

    def forward(self, x: Tensor, state: dict | None = None, start_pos: int = 0) -> Tensor:
        H, d_nope, d_rope, d_v = self.n_heads, self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim

        q = self.wq(x) if self.q_lora_rank is None else self.wq_b(self.q_norm(self.wq_a(x)))
        q = rearrange(q, "b t (h d) -> b h t d", h=H)  # [B, H, T, d_h + d_r]: per head [q^C ; q^R']
        q_nope, q_rope = q.split([d_nope, d_rope], dim=-1)
        q_rope = self.rotary.apply(q_rope, start_pos)

        c_kv, k_rope = self.wkv_a(x).split([self.kv_lora_rank, d_rope], dim=-1)  # [B, T, d_c], [B, T, d_r]
        c_kv = self.kv_norm(c_kv)
        k_rope = self.rotary.apply(k_rope, start_pos)  # [B, T, d_r]: no head axis, shared by every head
        if state is not None:  # decoding: the cache is the latent and the shared rotary key, nothing else
            if "c_kv" in state:
                c_kv = torch.cat([state["c_kv"], c_kv], dim=1)
                k_rope = torch.cat([state["k_rope"], k_rope], dim=1)
            state["c_kv"], state["k_rope"] = c_kv, k_rope

        kv = rearrange(self.wkv_b(c_kv), "b t (h d) -> b h t d", h=H)  # [B, H, t_k, d_h + d_v]: [k^C ; v]
        k_nope, v = kv.split([d_nope, d_v], dim=-1)
        k_rope = repeat(k_rope, "b t r -> b h t r", h=H)  # the one rotary key, shared by every head (a view)
        k = torch.cat([k_nope, k_rope], dim=-1)  # [B, H, t_k, d_h + d_r]
        q = torch.cat([q_nope, q_rope], dim=-1)  # [B, H, T, d_qk]

        if resolve_impl(self.impl, q) == "triton":
            from kimi_mini.kernels.flash_attention import flash_attention

            out, max_logit = flash_attention(q, k, v, self.scale)  # [B, H, T, d_v], [B, H]
            if self.track_max_logit:
                self.max_logit = max_logit.amax(0)
        else:
            if self.track_max_logit:
                self.max_logit = blockwise_max_logit(q, k, self.scale)
            out = self._attention(q, k, v)
        return self.wo(rearrange(out, "b h t d -> b t (h d)"))  # u_t = W^O [o_{t,1}; …; o_{t,H}]

    def _attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        t_q, t_k = q.shape[2], k.shape[2]
        if self.impl == "naive":
            s = (q.float() @ k.float().transpose(-1, -2)) * self.scale  # [B, H, t_q, t_k]
            s = s.masked_fill(~causal_mask(t_q, t_k, q.device), float("-inf"))
            return (s.softmax(-1) @ v.float()).to(q.dtype)
        if t_q == t_k:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t_q, t_k, q.device),
                                              scale=self.scale)

    def cache_numel_per_token(self) -> int:
        return mla_cache_numel_per_token(self.kv_lora_rank, self.qk_rope_head_dim)

    def extra_repr(self) -> str:
        return (f"heads={self.n_heads}, q_lora_rank={self.q_lora_rank}, kv_lora_rank={self.kv_lora_rank}, "
                f"qk_nope={self.qk_nope_head_dim}, qk_rope={self.qk_rope_head_dim}, v={self.v_head_dim}, "
                f"impl={self.impl!r}")


register_attention("mla")(MultiHeadLatentAttention)


def mla_logits_reference(m: MultiHeadLatentAttention, x: Tensor) -> Tensor:
    """Reference: every scaled logit of ``m`` on ``x [B, T, C]`` (positions 0…T−1), straight from the
    equations — ``(q^C·k^C + q^R·k^R) / √(d_h + d_r)`` as ``[B, H, T, T]``, invisible pairs −inf.
    O(T²) memory: for tests and teaching."""
    T = x.shape[1]
    H, dn = m.n_heads, m.qk_nope_head_dim
    q = m.wq(x) if m.q_lora_rank is None else m.wq_b(m.q_norm(m.wq_a(x)))
    q = rearrange(q, "b t (h d) -> b h t d", h=H)  # [B, H, T, dn + dr]: per head [q^C ; q^R']
    q_nope, q_rope = q[..., :dn], m.rotary.apply(q[..., dn:])
    latent = m.wkv_a(x)  # [B, T, d_c + dr]: [c^KV ; k^R']
    c_kv = m.kv_norm(latent[..., : m.kv_lora_rank])
    k_rope = m.rotary.apply(latent[..., m.kv_lora_rank:])  # [B, T, dr]: no head axis, one key for all heads
    k_nope = rearrange(m.wkv_b(c_kv), "b t (h d) -> b h t d", h=H)[..., :dn]  # [B, H, T, dn]
    s = (einsum(q_nope, k_nope, "b h i d, b h j d -> b h i j")  # q^C · k^C, per head
         + einsum(q_rope, k_rope, "b h i r, b j r -> b h i j")) * m.scale  # q^R · k^R, the shared key
    return s.masked_fill(~causal_mask(T, T, x.device), float("-inf"))
