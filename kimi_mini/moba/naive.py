"""MoBA's block gate and the dense-mask reference (arXiv 2502.13189, §2.2): the equations of the
package docstring, in the most direct form. Everything here is O(T²) or cheap; the efficient path is in
:mod:`kimi_mini.moba.efficient`."""

from __future__ import annotations

import math

import torch
from einops import einsum, reduce, repeat
from torch import Tensor

# Bound on the elements of one gate temporary (scores of a chunk of queries against all block means).
_BUCKET_ELEMS = 1 << 20


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _check_block_args(block_size, top_k) -> None:
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size <= 0:
        raise ValueError(f"block_size: expected a positive int, got {block_size!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k: expected an int >= 1 (it counts the current block), got {top_k!r}")


def _check_qk(q: Tensor, k: Tensor, v: Tensor | None = None) -> None:
    named = [("q", q), ("k", k)] + ([("v", v)] if v is not None else [])
    for name, t in named:
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a [B, H, T, D] tensor, got {shape}")
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    for name, t in named[1:]:
        if t.shape != q.shape:
            raise ValueError(f"{name}: expected the shape of q {tuple(q.shape)}, got {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise ValueError(f"{name}: expected the dtype of q ({q.dtype}), got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected the device of q ({q.device}), got {t.device}")
    if q.shape[2] < 1 or q.shape[3] < 1:
        raise ValueError(f"q: expected T >= 1 and D >= 1, got shape {tuple(q.shape)}")


# ----------------------------------------------------------------------------------------------
# The gate
# ----------------------------------------------------------------------------------------------


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype MoBA computes in: fp32 for half precision, the input's own dtype otherwise (fp64 stays)."""
    return torch.promote_types(x.dtype, torch.float32)


def block_means(k: Tensor, block_size: int, n_blocks: int) -> Tensor:
    """Mean key of each of the first ``n_blocks`` (complete) blocks: ``[B, H, T, D] -> [B, H, n, D]``
    (fp32, or fp64 for fp64 keys)."""
    k = k[:, :, : n_blocks * block_size].to(compute_dtype(k))  # complete blocks only
    return reduce(k, "b h (n s) d -> b h n d", "mean", s=block_size)  # K̄_i = mean of block i's keys


def _top_blocks(scores: Tensor, kk: int) -> tuple[Tensor, Tensor]:
    """The ``kk`` largest scores along the last dim and their indices, in descending order (``scores``
    is overwritten). For the usual small ``kk`` it takes ``kk`` max passes — each ties to the lowest
    index — which is several times faster on a CPU than ``topk`` over a short last dim; larger ``kk``
    uses ``topk``. Every caller (prefill, decoding) goes through here, so they pick identical blocks."""
    if kk > 4:
        return scores.topk(kk, dim=-1)
    vals, idxs = [], []
    for j in range(kk):
        val, idx = scores.max(-1, keepdim=True)
        vals.append(val)
        idxs.append(idx)
        if j + 1 < kk:
            scores.scatter_(-1, idx, float("-inf"))
    return torch.cat(vals, -1), torch.cat(idxs, -1)


@torch.no_grad()
def _select_from_means(q: Tensor, means: Tensor, start_pos: int, block_size: int, top_k: int,
                       dtype: torch.dtype = torch.long) -> Tensor:
    """History selection for the queries ``q [B, H, Tq, D]`` at absolute positions ``start_pos ..
    start_pos + Tq − 1`` given the mean keys of the complete blocks (``[B, H, n_hist, D]``). Returns
    ``[B, H, Tq, min(k−1, n_hist)]`` (``dtype``, int64 by default): block ids in descending score,
    ``-1`` where a query has fewer eligible blocks than slots.

    Queries are taken in chunks of whole or partial blocks, and a chunk scores only the blocks its last
    query may see (on average half of them in a prefill); a chunk spanning several small blocks masks
    the ineligible ones. Every temporary stays under ~1 MB."""
    B, H, Tq, _ = q.shape
    n_hist = means.shape[2]
    kk = min(top_k - 1, n_hist)
    out = torch.full((B, H, Tq, max(kk, 0)), -1, dtype=dtype, device=q.device)
    if kk <= 0:
        return out
    mt = means.transpose(-1, -2)  # [B, H, D, n_hist]
    cap = _BUCKET_ELEMS // 4  # elements of one score chunk
    bs, BH = block_size, max(1, B * H)
    s = 0
    while s < Tq:
        blk = (start_pos + s) // bs
        end_blk = min(Tq, (blk + 1) * bs - start_pos)  # rows left in this query block
        if blk == 0:  # the first block has no history
            s = end_blk
            continue
        budget = max(1, cap // (BH * min(blk, n_hist)))  # rows per chunk
        if end_blk - s >= min(budget, 256):  # within one block: no mask, no wasted columns
            e = min(end_blk, s + budget)
        else:  # small blocks: span several, as many rows as the budget allows
            e = min(Tq, s + budget)
            cols = min(n_hist, (start_pos + e - 1) // bs)
            if BH * (e - s) * cols > cap:  # spanning widened the chunk: shrink it
                e = max(end_blk, s + cap // (BH * cols))
        cols = min(n_hist, (start_pos + e - 1) // bs)
        scores = q[:, :, s:e].to(mt.dtype) @ mt[..., :cols]  # [B, H, e-s, cols]  — no 1/√D: the paper's gate
        if e > end_blk:  # several query blocks: mask the blocks each query may not see yet
            pos = torch.arange(start_pos + s, start_pos + e, device=q.device)
            eligible = torch.arange(cols, device=q.device)[None, :] < torch.div(pos, bs, rounding_mode="floor")[:, None]
            scores.masked_fill_(~eligible, float("-inf"))
        c = min(kk, cols)
        vals, idx = _top_blocks(scores, c)  # [B, H, e-s, c]
        out[:, :, s:e, :c] = idx.masked_fill(vals == float("-inf"), -1)
        s = e
    return out


def moba_select(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    """The chosen *history* blocks of every query, as indices.

    Args: q, k ``[B, H, T, D]`` (any float dtype; the gate runs in fp32), ``block_size`` B > 0,
    ``top_k`` ≥ 1 (counts the current block). Returns int64 ``[B, H, T, S]`` with
    ``S = min(top_k − 1, n_blocks − 1)`` slots holding block ids in descending gate score, ``-1`` for
    an empty slot (fewer eligible blocks than slots). The current block is implied, not listed.
    """
    _check_qk(q, k)
    _check_block_args(block_size, top_k)
    T = q.shape[2]
    n_blocks = -(-T // block_size)
    means = block_means(k, block_size, n_blocks - 1)  # the last block is never anyone's history
    return _select_from_means(q, means, 0, block_size, top_k)


def moba_gate(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    """Which key blocks each query attends: bool ``[B, H, T, n_blocks]``.

    Row t is True at its current block ⌊t/B⌋ and at its top-(k−1) eligible history blocks (those
    ending at or before the start of its own block), ranked by ``q_t · mean(K_block)`` in fp32.
    """
    hist = moba_select(q, k, block_size, top_k)  # [B, H, T, S]
    B, H, T, _ = q.shape
    n_blocks = -(-T // block_size)
    blocks = torch.arange(n_blocks, device=q.device)
    gate = (hist[..., None] == blocks).any(-2)  # [B, H, T, n]; -1 never matches
    current = torch.arange(T, device=q.device) // block_size  # [T]
    return gate | (blocks[None, :] == current[:, None])


def moba_sparsity(seq_len: int, block_size: int, top_k: int) -> float:
    """The paper's sparsity ``1 − B·k / T`` (0 when every block is attended)."""
    return max(0.0, 1.0 - block_size * top_k / seq_len)


def merge_attention(o1: Tensor, lse1: Tensor, o2: Tensor, lse2: Tensor) -> tuple[Tensor, Tensor]:
    """Merge two softmax-attention results over *disjoint* key sets by their log-sum-exps.

    ``o_i [..., D]`` are the normalised partial outputs, ``lse_i [...]`` = log Σ_j exp(s_j) over part
    i's keys. Returns ``(o, lse)`` equal to attention over the union of the keys.
    """
    lse = torch.logaddexp(lse1, lse2)
    return (o1 * torch.exp(lse1 - lse)[..., None] + o2 * torch.exp(lse2 - lse)[..., None]), lse


# ----------------------------------------------------------------------------------------------
# The reference
# ----------------------------------------------------------------------------------------------


def moba_attention_naive(q: Tensor, k: Tensor, v: Tensor, block_size: int, top_k: int) -> Tensor:
    """The reference: a dense ``[T, T]`` mask from :func:`moba_gate` (blocks → their keys, causal inside
    the current block), softmax in fp32 (fp64 for fp64 inputs). ``[B, H, T, D]`` in, q's dtype out."""
    T, D = q.shape[2], q.shape[3]
    gate = moba_gate(q, k, block_size, top_k)  # [B, H, T, n]
    mask = repeat(gate, "b h t n -> b h t (n s)", s=block_size)[..., :T]  # [B, H, T, T]: block → its keys
    mask = mask & torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # causal inside the current block
    ct = compute_dtype(q)
    scores = einsum(q.to(ct), k.to(ct), "b h i d, b h j d -> b h i j") / math.sqrt(D)  # [B, H, T, T]
    scores = scores.masked_fill(~mask, float("-inf"))
    return einsum(scores.softmax(-1), v.to(ct), "b h i j, b h j d -> b h i d").to(q.dtype)


