"""MoBA as used by a model: the ``moba_attention`` dispatch over the three implementations, sparse
KV-cache decoding, and the ``"moba"`` attention component with the paper's layer-wise hybrid."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kimi_mini.checks import check_int, check_tensor, describe
from kimi_mini.impl import IMPLS, check_impl, resolve_impl
from kimi_mini.layers import MultiHeadAttention, blockwise_max_logit
from kimi_mini.moba.efficient import moba_attention_torch
from kimi_mini.moba.naive import (
    _check_block_args,
    _check_qk,
    _select_from_means,
    block_means,
    compute_dtype,
    moba_attention_naive,
)
from kimi_mini.registry import register_attention

# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def moba_attention(q: Tensor, k: Tensor, v: Tensor, block_size: int, top_k: int,
                   impl: str = "auto") -> Tensor:
    """Causal MoBA attention.

    Args:
        q, k, v: ``[B, H, T, D]``, same shape, dtype and device (any T; the last block may be partial).
        block_size: positions per key block (B > 0). top_k: blocks per query, the current one included.
        impl: ``"naive"`` (dense-mask reference, O(T²)), ``"torch"`` (efficient, custom backward),
            ``"triton"`` (``kimi_mini.kernels.moba``, gate on the device), ``"auto"``: triton on CUDA, else torch.
    Returns: ``[B, H, T, D]`` in q's dtype. Softmax scale 1/√D; the gate in fp32 without scale.
    """
    impl = resolve_impl(impl, q if isinstance(q, Tensor) else torch.empty(0))
    _check_qk(q, k, v)
    _check_block_args(block_size, top_k)
    if q.numel() == 0:  # empty batch or no heads: an empty result (torch's fused CPU op crashes on these)
        return q * 0 + (k.sum() + v.sum()) * 0
    if impl == "naive":
        return moba_attention_naive(q, k, v, block_size, top_k)
    if impl == "torch":
        return moba_attention_torch(q, k, v, block_size, top_k)
    from kimi_mini.kernels.moba import moba_attention_gated  # the gate runs on the device, no host sync

    return moba_attention_gated(q, k, v, block_size, top_k)


# ----------------------------------------------------------------------------------------------
# Sparse decoding: gate the new queries over the cached, completed blocks
# ----------------------------------------------------------------------------------------------


def moba_decode_attention(q: Tensor, k: Tensor, v: Tensor, start_pos: int, block_size: int, top_k: int,
                          means: Tensor | None = None) -> Tensor:
    """MoBA for the last ``Tq`` positions of a cached sequence (decoding).

    q: ``[B, H, Tq, D]`` at absolute positions ``start_pos .. start_pos+Tq−1``; k, v: ``[B, H, T, D]``
    with ``T = start_pos + Tq`` (the cache plus the new positions). ``means`` optionally gives the
    cached mean keys of the completed blocks (``[B, H, ≥ n_hist, D]``). Each new query attends only
    to its own block and its top-(k−1) history blocks: O(k·B·D) work per token, not O(T·D).
    """
    _check_block_args(block_size, top_k)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, dims=4, kind="float", device=q.device if name != "q" else None)
    if k.shape != v.shape or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"k, v: expected the same shape and q's dtype, got {describe(k)} and {describe(v)}")
    B, H, Tq, D = q.shape
    T = k.shape[2]
    check_int("start_pos", start_pos, 0)
    if k.shape[:2] != (B, H) or k.shape[3] != D or T != start_pos + Tq or Tq < 1:
        raise ValueError(f"k: expected [B, H, start_pos + Tq, D] = [{B}, {H}, {start_pos + Tq}, {D}] for q "
                         f"{tuple(q.shape)} at start_pos={start_pos}, got {tuple(k.shape)}")
    if means is not None:
        check_tensor("means", means, dims=4, kind="float", device=q.device)
        if means.shape[:2] != (B, H) or means.shape[3] != D:
            raise ValueError(f"means: expected [B, H, n_blocks, D] = [{B}, {H}, n, {D}], got {tuple(means.shape)}")
    if q.numel() == 0:
        return q.clone()
    bs = block_size
    q_pos = torch.arange(start_pos, T, device=q.device)  # [Tq]
    n_hist = (T - 1) // bs  # complete blocks that can be anyone's history
    if means is None or means.shape[2] < n_hist:
        means = block_means(k, bs, n_hist)
    hist = _select_from_means(q, means[:, :, :n_hist], start_pos, bs, top_k)  # [B, H, Tq, S]
    # Key positions each query may see: its selected history blocks (whole) and its own block (causal).
    offs = torch.arange(bs, device=q.device)
    cur = torch.div(q_pos, bs, rounding_mode="floor")  # [Tq]
    blocks = torch.cat([hist, cur.expand(B, H, Tq)[..., None]], dim=-1)  # [B, H, Tq, S+1]
    pos = blocks.clamp(min=0)[..., None] * bs + offs  # [B, H, Tq, S+1, bs]
    ok = (blocks[..., None] >= 0) & (pos <= q_pos[:, None, None])  # causal also bounds pos < T
    pos = pos.clamp(max=T - 1).flatten(-2)  # [B, H, Tq, L]
    idx = pos[..., None].expand(-1, -1, -1, -1, D)
    ct = compute_dtype(q)
    kg = torch.gather(k.to(ct)[:, :, None].expand(-1, -1, Tq, -1, -1), 3, idx)  # [B, H, Tq, L, D]
    vg = torch.gather(v.to(ct)[:, :, None].expand(-1, -1, Tq, -1, -1), 3, idx)
    scores = (kg @ q.to(ct)[..., None]).squeeze(-1) / math.sqrt(D)  # [B, H, Tq, L]
    scores = scores.masked_fill(~ok.flatten(-2), float("-inf"))
    return (scores.softmax(-1)[..., None, :] @ vg).squeeze(-2).to(q.dtype)


# ----------------------------------------------------------------------------------------------
# The model component
# ----------------------------------------------------------------------------------------------

_OPTIONS = ("block_size", "top_k", "full_attention_layers", "impl")


def _parse_options(opts: dict) -> dict:
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"attention_options: unknown MoBA option(s) {unknown}; "
                         f"expected keys among {_OPTIONS}")
    out = {"block_size": 64, "top_k": 3, "full_attention_layers": 0, "impl": "auto", **opts}
    _check_block_args(out["block_size"], out["top_k"])
    f = out["full_attention_layers"]
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise ValueError(f"attention_options['full_attention_layers']: expected an int >= 0, got {f!r}")
    check_impl(out["impl"], IMPLS, name="attention_options['impl']")
    return out


class MobaAttention(MultiHeadAttention):
    """Multi-head attention (same projections, RoPE and GQA as :class:`MultiHeadAttention`) whose
    core is :func:`moba_attention`. Options from ``config.attention_options``: ``block_size`` (64),
    ``top_k`` (3), ``impl`` ("auto"); ``full_attention_layers`` is read by the builder.

    Decoding keeps ``k``, ``v`` (``[B, H_kv, T, D]``) and ``means`` (mean key of each completed block,
    ``[B, H, n, D]``) in the layer's ``state`` dict and gates each new token over the cached blocks.
    """

    def __init__(self, config, layer_idx: int = 0):
        opts = _parse_options(dict(config.attention_options))
        super().__init__(config.replace(attention_options={}), layer_idx)
        self.block_size, self.top_k, self.moba_impl = opts["block_size"], opts["top_k"], opts["impl"]

    def forward(self, x: Tensor, state: dict | None = None, start_pos: int = 0) -> Tensor:
        B, T, _ = x.shape
        H, H_kv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.project_qkv(x, state, start_pos)  # k, v: [B, H_kv, T_all, D], cache appended
        if self.track_max_logit:  # an upper bound for QK-Clip: over all causal pairs, not only the selected
            self.max_logit = blockwise_max_logit(q, k, 1.0 / math.sqrt(D))
        rep = H // H_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # [B, H, T_all, D]
        if k.shape[2] == T:  # prefill / training: the whole sequence at once
            out = moba_attention(q, k, v, self.block_size, self.top_k, impl=self.moba_impl)
        else:
            out = moba_decode_attention(q, k, v, start_pos, self.block_size, self.top_k,
                                        means=state.get("means") if state is not None else None)
        if state is not None:  # extend the cache of completed-block means (the decoder's gate keys)
            n_done = k.shape[2] // self.block_size
            have = state["means"].shape[2] if "means" in state else 0
            if n_done > have:
                new = block_means(k[:, :, have * self.block_size :], self.block_size, n_done - have)
                state["means"] = new if have == 0 else torch.cat([state["means"], new], dim=2)
        return self.wo(out.transpose(1, 2).reshape(B, T, H * D))

    def extra_repr(self) -> str:
        return (f"heads={self.n_heads}, kv_heads={self.n_kv_heads}, head_dim={self.head_dim}, "
                f"block_size={self.block_size}, top_k={self.top_k}, impl={self.moba_impl!r}")


@register_attention("moba")
def build_moba_attention(config, layer_idx: int) -> nn.Module:
    """MoBA with the paper's layer-wise hybrid: the last ``full_attention_layers`` layers keep full
    attention (:class:`MultiHeadAttention`), every other layer is :class:`MobaAttention`."""
    opts = _parse_options(dict(config.attention_options))
    if layer_idx >= config.n_layers - opts["full_attention_layers"]:
        return MultiHeadAttention(config.replace(attention="mha", attention_options={}), layer_idx)
    return MobaAttention(config, layer_idx)


