"""MoBA: Mixture of Block Attention for Long-Context LLMs (Lu et al., arXiv 2502.13189).

MoBA treats the blocks of the key sequence as "experts" and lets every query pick the few that look
most relevant, with a parameter-free gate. Per head, for a sequence of length T cut into blocks of
``B = block_size`` positions (block i holds positions [iB, min((i+1)B, T)); the last may be partial):

    gate score      s(t, i) = q_t · mean(K[block i])                 (fp32, no 1/√D)
    eligible        i < ⌊t / B⌋                                       (block i lies wholly in the past)
    selected        I_t = {⌊t / B⌋} ∪ top-(k−1)_{eligible i} s(t, i)  (k = ``top_k`` counts the current block)
    attention       o_t = Σ_{j ∈ ∪_{i∈I_t} block i, j ≤ t} softmax_j(q_t · k_j / √D) v_j

A query with fewer than k−1 eligible blocks takes all of them, so when T ≤ B·k MoBA *is* causal
attention, and ``top_k = 1`` is block-diagonal causal attention.

Three implementations, one signature (``moba_attention(..., impl=)``), layout ``[B, H, T, D]``:

- ``"naive"``: the reference. A dense ``[T, T]`` mask from :func:`moba_gate`, softmax in fp32. O(T²).
- ``"torch"``: the efficient form of the paper, vectorised PyTorch. The attention over the current
  block (block-diagonal causal) and the attention over each selected history block are computed
  separately and merged with their log-sum-exps,

      lse = log Σ_parts exp(lse_part),      o = Σ_parts exp(lse_part − lse) · o_part,

  the history part *key-block-centric* as in the authors' varlen version: the queries that chose key
  block i are gathered and attend to block i alone (key blocks with similar query counts are batched
  into one dense call), so the work is O(T·k·B·D) and no T×T tensor ever exists. Each part is one call
  of :func:`attend_part` — PyTorch's fused CPU flash kernel, which returns the lse, or three explicit
  lines elsewhere — and the output is merged in place, so the peak memory stays near the output's
  size. The backward pass is custom (flash-attention style): each part's probabilities are recomputed
  from the *final* lse, ``P = exp(S − lse)``, and with ``δ_t = do_t · o_t`` the part's
  ``dS = P ⊙ (dO Vᵀ − δ)`` is exactly its share of the dense gradient — summing the parts gives dq,
  dk, dv.
- ``"triton"``: ``kimi_mini.kernels.moba`` (flash-style forward + backward kernels).

Beyond the released code (which decodes with full attention), :class:`MobaAttention` also *decodes
sparsely*: a new token gates over the mean keys of the cached, completed blocks and attends only to
its chosen blocks, and the decoded output at position t equals the prefill output at t.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.layers import MultiHeadAttention, blockwise_max_logit
from kimi_mini.registry import register_attention

__all__ = [
    "moba_gate",
    "moba_select",
    "moba_attention",
    "moba_sparsity",
    "merge_attention",
    "attend_part",
    "attend_part_backward",
    "block_means",
    "moba_decode_attention",
    "MobaAttention",
    "build_moba_attention",
    "IMPLS",
]

IMPLS = ("auto", "naive", "torch", "triton")
# Upper bound on the elements of one chunk's score matrix in the torch path (fp32: 8 MB). Keeps the
# working set far below the output size at long context, at a negligible cost in Python overhead.
_CHUNK_ELEMS = 1 << 21
# Bound on the elements one history bucket touches (gathered q, k, v, partial outputs, scores): 4 MB of
# fp32. Small enough that at 32K the merge adds only a few MB to the output; at toy sizes every key
# block of a slot still fits in one or two buckets.
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


def block_means(k: Tensor, block_size: int, n_blocks: int) -> Tensor:
    """Mean key of each of the first ``n_blocks`` (complete) blocks: ``[B, H, T, D] -> [B, H, n, D]`` fp32."""
    B, H, _, D = k.shape
    return k[:, :, : n_blocks * block_size].float().reshape(B, H, n_blocks, block_size, D).mean(-2)


@torch.no_grad()
def _select_from_means(q: Tensor, means: Tensor, q_pos: Tensor, block_size: int, top_k: int) -> Tensor:
    """History selection for queries at absolute positions ``q_pos`` (``[Tq]``) given the mean keys
    of the complete blocks (``[B, H, n_hist, D]``). Returns int64 ``[B, H, Tq, min(k−1, n_hist)]``,
    block ids, ``-1`` where a query has fewer eligible blocks than slots. Chunked over queries."""
    B, H, Tq, _ = q.shape
    n_hist = means.shape[2]
    kk = min(top_k - 1, n_hist)
    out = torch.full((B, H, Tq, max(kk, 0)), -1, dtype=torch.long, device=q.device)
    if kk <= 0:
        return out
    blocks = torch.arange(n_hist, device=q.device)
    mt = means.transpose(-1, -2)  # [B, H, D, n_hist]
    step = max(1, _BUCKET_ELEMS // 4 // max(1, B * H * max(n_hist, q.shape[-1])))  # ≤ 1 MB per temporary
    for s in range(0, Tq, step):
        e = min(s + step, Tq)
        scores = q[:, :, s:e].float() @ mt  # [B, H, e-s, n_hist]  — no 1/√D: the paper's gate
        eligible = blocks[None, :] < torch.div(q_pos[s:e], block_size, rounding_mode="floor")[:, None]
        scores.masked_fill_(~eligible, float("-inf"))
        vals, idx = scores.topk(kk, dim=-1)  # [B, H, e-s, kk]
        out[:, :, s:e] = idx.masked_fill(vals == float("-inf"), -1)
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
    return _select_from_means(q, means, torch.arange(T, device=q.device), block_size, top_k)


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


def _moba_naive(q: Tensor, k: Tensor, v: Tensor, block_size: int, top_k: int) -> Tensor:
    B, H, T, D = q.shape
    gate = moba_gate(q, k, block_size, top_k)  # [B, H, T, n]
    mask = gate.repeat_interleave(block_size, dim=-1)[..., :T]  # [B, H, T, T]: block → its keys
    mask &= torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # causal inside the current block
    ct = torch.promote_types(q.dtype, torch.float32)  # fp32, or fp64 for gradcheck
    scores = (q.to(ct) @ k.to(ct).transpose(-1, -2)) / math.sqrt(D)  # [B, H, T, T]
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.to(ct)).to(q.dtype)


# ----------------------------------------------------------------------------------------------
# The efficient PyTorch path: block-diagonal part + gathered history parts, merged by lse
# ----------------------------------------------------------------------------------------------


def _padded_blocks(x: Tensor, n_blocks: int, block_size: int) -> Tensor:
    """``[B, H, T, D] -> [B·H·n, B_s, D]`` fp32 (zero-padded to whole blocks; a view when possible)."""
    B, H, T, D = x.shape
    x = x.float()
    if n_blocks * block_size != T:
        x = F.pad(x, (0, 0, 0, n_blocks * block_size - T))
    return x.reshape(B * H * n_blocks, block_size, D)


# PyTorch's fused CPU flash-attention kernel returns the log-sum-exp next to the output (and its
# backward accepts any (o, lse)), which is exactly what merging parts needs. Private API: when it is
# missing, or off CPU, the explicit three-line softmax below does the same arithmetic.
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_CPU_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _use_fused(x: Tensor) -> bool:
    return _FLASH_CPU is not None and _FLASH_CPU_BWD is not None and x.device.type == "cpu"


def attend_part(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> tuple[Tensor, Tensor]:
    """One part of MoBA: softmax attention of ``q [N, Lq, D]`` over ``k, v [N, Lk, D]`` (fp32), causal
    or not. Returns ``o [N, Lq, D]`` and ``lse [N, Lq]`` = log Σ_j exp(scale · q·k_j)."""
    if _use_fused(q):
        o, lse = _FLASH_CPU(q[None], k[None], v[None], 0.0, causal, scale=scale)
        return o[0], lse[0]
    s = torch.bmm(q, k.transpose(1, 2)).mul_(scale)  # [N, Lq, Lk]
    if causal:
        s.masked_fill_(~torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril(), float("-inf"))
    lse = torch.logsumexp(s, -1)
    return torch.bmm(s.sub_(lse[..., None]).exp_(), v), lse


def attend_part_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, causal: bool,
                         scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of one part given the *final* ``o`` and ``lse`` of the rows (all parts merged):
    ``P = exp(S − lse)``, ``dS = P ⊙ (dO Vᵀ − rowsum(dO ⊙ O))`` — the part's exact share of dq, dk, dv."""
    if _use_fused(q):
        dq, dk, dv = _FLASH_CPU_BWD(do[None], q[None], k[None], v[None], o[None], lse[None], 0.0, causal,
                                    scale=scale)
        return dq[0], dk[0], dv[0]
    p = torch.bmm(q, k.transpose(1, 2)).mul_(scale).sub_(lse[..., None]).exp_()  # [N, Lq, Lk]
    if causal:
        p.masked_fill_(~torch.ones(p.shape[-2:], dtype=torch.bool, device=p.device).tril(), 0.0)
    ds = p * (torch.bmm(do, v.transpose(1, 2)) - (do * o).sum(-1, keepdim=True))
    dq = torch.bmm(ds, k).mul_(scale)
    return dq, torch.bmm(ds.transpose(1, 2), q).mul_(scale), torch.bmm(p.transpose(1, 2), do)


def _history_buckets(hist: Tensor, T: int, n: int, bs: int, cost):
    """Group the queries by the history block they chose, one selection slot at a time.

    Yields ``(rows [g, m], groups [g])``: ``g`` key blocks (``groups``: flat block id ``bh·n + i``) and,
    for each, the flat query rows ``bh·n·B_s + t`` that chose it (``-1`` padding up to ``m``). Key
    blocks are bucketed by how many queries chose them (similar counts together, at most 2x
    padding) so each bucket is one dense batched attention with no per-tile copy of K and V. Within
    one slot each query appears once, so the merges of a bucket never collide. ``cost(g, m)``: the
    elements a bucket of g key blocks × m queries touches; buckets stay under ``_BUCKET_ELEMS``.
    """
    if hist.shape[-1] == 0:  # top_k = 1 or a single block: no history
        return
    Tp = n * bs
    if Tp != T:
        hist = F.pad(hist, (0, 0, 0, Tp - T), value=-1)
    hist = hist.reshape(-1, Tp, hist.shape[-1])  # [BH, Tp, S]
    heads = max(1, _BUCKET_ELEMS // 32 // Tp)  # sort a few heads at a time: the index arrays stay small
    for h0 in range(0, hist.shape[0], heads):
        sub = hist[h0 : h0 + heads]
        G = sub.shape[0] * n
        for slot in range(sub.shape[-1]):
            flat = sub[..., slot].reshape(-1)
            rows = torch.nonzero(flat >= 0).squeeze(1)  # [P] query rows with a choice in this slot
            group = torch.div(rows, Tp, rounding_mode="floor") * n + flat[rows]
            group, order = torch.sort(group, stable=True)
            rows = rows[order] + h0 * Tp  # grouped by key block; global row ids
            counts = torch.bincount(group, minlength=G)
            start = torch.cumsum(counts, 0) - counts
            by_size = torch.argsort(counts, descending=True)
            sizes = counts[by_size].tolist()
            i = 0
            while i < len(sizes) and sizes[i] > 0:
                m, j = sizes[i], i + 1
                # grow the bucket while the next key block has a similar count and the bucket stays small
                while (j < len(sizes) and sizes[j] > 0 and 2 * sizes[j] >= m
                       and cost(j - i + 1, m) <= _BUCKET_ELEMS):
                    j += 1
                gs = by_size[i:j]
                offs = torch.arange(m, device=rows.device)
                ok = offs[None, :] < counts[gs][:, None]  # [g, m]
                idx = torch.where(ok, start[gs][:, None] + offs[None, :], 0)
                yield torch.where(ok, rows[idx], -1), gs + h0 * n
                i = j


def _bucket_cost(qb: Tensor):
    """Elements touched by a history bucket of g key blocks × m queries: the gathered K and V blocks,
    a handful of [g, m, D] gathers and outputs, and — on the explicit path — two [g, m, B_s] scores."""
    _, bs, D = qb.shape
    scores = 0 if _use_fused(qb) else 2 * bs
    return lambda g, m: g * (2 * bs * D + m * (6 * D + scores))


def _moba_torch_forward(q, k, v, hist, block_size):
    """Returns ``o [B·H·n·B_s, D]`` and ``lse [B·H·n·B_s]``: fp32, in the padded flat row layout
    ``(bh·n + i)·B_s + t``."""
    B, H, T, D = q.shape
    bs, n = block_size, -(-T // block_size)
    scale = 1.0 / math.sqrt(D)
    qb, kb, vb = (_padded_blocks(x, n, bs) for x in (q, k, v))  # [G, bs, D], G = B·H·n
    G = qb.shape[0]
    # Part 1: the current block — block-diagonal causal attention.
    if _use_fused(qb):  # one fused call: its output becomes o, and no score matrix is ever stored
        o, lse = attend_part(qb, kb, vb, True, scale)
        o, lse = o.contiguous(), lse.contiguous()
    else:
        o, lse = torch.empty(G, bs, D, device=q.device), torch.empty(G, bs, device=q.device)
        step = max(1, _CHUNK_ELEMS // (bs * bs))
        for s in range(0, G, step):
            sl = slice(s, s + step)
            o[sl], lse[sl] = attend_part(qb[sl], kb[sl], vb[sl], True, scale)
    o, lse, qf = o.view(-1, D), lse.view(-1), qb.reshape(-1, D)
    # Parts 2..k: per selection slot, the queries gathered by chosen key block, merged by lse.
    for tr, tg in _history_buckets(hist, T, n, bs, _bucket_cost(qb)):
        valid = tr >= 0
        o_p, lse_p = attend_part(qf[tr.clamp(min=0)], kb[tg], vb[tg], False, scale)  # [g, m, D], [g, m]
        r = tr[valid]  # each query at most once per slot: no write collisions
        o[r], lse[r] = merge_attention(o[r], lse[r], o_p[valid], lse_p[valid])
    return o, lse


def _moba_torch_backward(q, k, v, o, lse, do, hist, block_size):
    B, H, T, D = q.shape
    bs, n = block_size, -(-T // block_size)
    scale = 1.0 / math.sqrt(D)
    qb, kb, vb, dob = (_padded_blocks(x, n, bs) for x in (q, k, v, do))
    G = qb.shape[0]
    ob, lse_b = o.view(G, bs, D), lse.view(G, bs)
    if _use_fused(qb):
        dq, dk, dv = (t.contiguous() for t in attend_part_backward(dob, qb, kb, vb, ob, lse_b, True, scale))
    else:
        dq, dk, dv = (torch.empty(G, bs, D, device=q.device) for _ in range(3))
        step = max(1, _CHUNK_ELEMS // (bs * bs))
        for s in range(0, G, step):
            sl = slice(s, s + step)
            dq[sl], dk[sl], dv[sl] = attend_part_backward(dob[sl], qb[sl], kb[sl], vb[sl], ob[sl], lse_b[sl],
                                                          True, scale)
    qf, dof, dqf, of = qb.reshape(-1, D), dob.reshape(-1, D), dq.view(-1, D), o.view(-1, D)
    for tr, tg in _history_buckets(hist, T, n, bs, _bucket_cost(qb)):
        valid = tr >= 0
        rc = tr.clamp(min=0)
        do_t = dof[rc] * valid[..., None]  # padding rows: zero upstream gradient, zero contribution
        dq_t, dk_t, dv_t = attend_part_backward(do_t, qf[rc], kb[tg], vb[tg], of[rc], lse[rc], False, scale)
        dqf.index_add_(0, tr[valid], dq_t[valid])
        dk.index_add_(0, tg, dk_t)
        dv.index_add_(0, tg, dv_t)
    unpad = lambda x: x.view(B, H, n * bs, D)[:, :, :T]
    return unpad(dq), unpad(dk), unpad(dv)


class _MobaTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, block_size, top_k):
        hist = moba_select(q, k, block_size, top_k)  # [B, H, T, S]
        o, lse = _moba_torch_forward(q, k, v, hist, block_size)
        ctx.save_for_backward(q, k, v, o, lse, hist)
        ctx.block_size = block_size
        B, H, T, D = q.shape
        return o.view(B, H, -1, D)[:, :, :T].to(q.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, hist = ctx.saved_tensors
        dq, dk, dv = _moba_torch_backward(q, k, v, o, lse, do, hist, ctx.block_size)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


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
            ``"triton"`` (``kimi_mini.kernels.moba``), ``"auto"``: triton on CUDA, torch otherwise.
    Returns: ``[B, H, T, D]`` in q's dtype. Softmax scale 1/√D; the gate in fp32 without scale.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    _check_qk(q, k, v)
    _check_block_args(block_size, top_k)
    if impl == "auto":
        impl = "triton" if q.is_cuda else "torch"
    if impl == "naive":
        return _moba_naive(q, k, v, block_size, top_k)
    if impl == "torch":
        return _MobaTorch.apply(q, k, v, block_size, top_k)
    from kimi_mini.kernels.moba import moba_attention_triton

    return moba_attention_triton(q, k, v, moba_select(q, k, block_size, top_k), block_size)


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
    B, H, Tq, D = q.shape
    T = k.shape[2]
    bs = block_size
    q_pos = torch.arange(start_pos, T, device=q.device)  # [Tq]
    n_hist = (T - 1) // bs  # complete blocks that can be anyone's history
    if means is None or means.shape[2] < n_hist:
        means = block_means(k, bs, n_hist)
    hist = _select_from_means(q, means[:, :, :n_hist], q_pos, bs, top_k)  # [B, H, Tq, S]
    # Key positions each query may see: its selected history blocks (whole) and its own block (causal).
    offs = torch.arange(bs, device=q.device)
    cur = torch.div(q_pos, bs, rounding_mode="floor")  # [Tq]
    blocks = torch.cat([hist, cur.expand(B, H, Tq)[..., None]], dim=-1)  # [B, H, Tq, S+1]
    pos = blocks.clamp(min=0)[..., None] * bs + offs  # [B, H, Tq, S+1, bs]
    ok = (blocks[..., None] >= 0) & (pos <= q_pos[:, None, None])  # causal also bounds pos < T
    pos = pos.clamp(max=T - 1).flatten(-2)  # [B, H, Tq, L]
    idx = pos[..., None].expand(-1, -1, -1, -1, D)
    kg = torch.gather(k.float()[:, :, None].expand(-1, -1, Tq, -1, -1), 3, idx)  # [B, H, Tq, L, D]
    vg = torch.gather(v.float()[:, :, None].expand(-1, -1, Tq, -1, -1), 3, idx)
    scores = (kg @ q.float()[..., None]).squeeze(-1) / math.sqrt(D)  # [B, H, Tq, L]
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
    if out["impl"] not in IMPLS:
        raise ValueError(f"attention_options['impl']: expected one of {IMPLS}, got {out['impl']!r}")
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


# ----------------------------------------------------------------------------------------------
# Exercises (notebook 04): the gate of one head, and the log-sum-exp merge
# ----------------------------------------------------------------------------------------------


def gate_one_head(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    """Exercise solution. ``q, k [T, D]`` of one head → bool ``[T, n_blocks]``: the current block and
    the top-(k−1) blocks that end before it, ranked by ``q_t · mean(K_block)``."""
    return moba_gate(q[None, None], k[None, None], block_size, top_k)[0, 0]


def _wrong_gate_one_head(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    # The classic slip: top_k *history* blocks on top of the current one (k+1 blocks in all).
    return moba_gate(q[None, None], k[None, None], block_size, top_k + 1)[0, 0]


def _check_gate_one_head(candidate) -> None:
    g = torch.Generator().manual_seed(11)
    for T, bs, top_k in ((40, 8, 3), (37, 8, 2), (50, 10, 1), (33, 16, 6)):
        q, k = torch.randn(T, 8, generator=g), torch.randn(T, 8, generator=g)
        got = candidate(q, k, bs, top_k)
        want = gate_one_head(q, k, bs, top_k)
        assert torch.is_tensor(got) and got.shape == want.shape, (
            f"T={T}, block_size={bs}: expected a [T, n_blocks] = {tuple(want.shape)} tensor, got "
            f"{tuple(got.shape) if torch.is_tensor(got) else type(got).__name__}")
        got = got.bool()
        cur = torch.arange(T) // bs
        assert got[torch.arange(T), cur].all(), "every query must attend its own (current) block"
        future = torch.arange(want.shape[1])[None, :] > cur[:, None]
        assert not (got & future).any(), "a query selected a block that starts after it: causality is broken"
        counts, want_counts = got.sum(1), want.sum(1)
        bad = (counts != want_counts).nonzero()
        if len(bad):
            t = int(bad[0])
            raise AssertionError(f"query {t} (block {t // bs}, top_k={top_k}) selects {int(counts[t])} "
                                 f"blocks, expected {int(want_counts[t])} = min(block index + 1, top_k): "
                                 "top_k counts the current block")
        assert torch.equal(got, want), (f"right number of blocks, wrong choice (T={T}, block_size={bs}, "
                                        f"top_k={top_k}): rank eligible blocks by q_t · mean(K_block), "
                                        "no 1/√D")


def merge_two_parts(o1: Tensor, lse1: Tensor, o2: Tensor, lse2: Tensor) -> tuple[Tensor, Tensor]:
    """Exercise solution: :func:`merge_attention` (``o [..., D]``, ``lse [...]``)."""
    return merge_attention(o1, lse1, o2, lse2)


def _wrong_merge_two_parts(o1, lse1, o2, lse2):
    # Right algebra, unstable arithmetic: exp(lse) overflows for large logits.
    w1, w2 = torch.exp(lse1), torch.exp(lse2)
    return (o1 * w1[..., None] + o2 * w2[..., None]) / (w1 + w2)[..., None], torch.log(w1 + w2)


def _check_merge_two_parts(candidate) -> None:
    g = torch.Generator().manual_seed(12)
    for shift, what in ((0.0, "ordinary logits"), (200.0, "large logits (exp(lse) overflows fp32)")):
        s = torch.randn(6, 20, generator=g) * 3 + shift
        v = torch.randn(20, 4, generator=g)
        cut = 7
        parts = [(torch.softmax(s[:, sl], -1) @ v[sl], torch.logsumexp(s[:, sl], -1))
                 for sl in (slice(0, cut), slice(cut, 20))]
        res = candidate(*parts[0], *parts[1])
        assert isinstance(res, tuple) and len(res) == 2, "return a pair (o, lse)"
        o, lse = res
        want_o, want_lse = torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)
        assert torch.isfinite(o).all() and torch.isfinite(lse).all(), (
            f"non-finite result with {what}: subtract the larger lse before exponentiating")
        assert torch.allclose(lse, want_lse, rtol=1e-5, atol=1e-4), (
            f"lse wrong with {what}: lse = log(e^lse1 + e^lse2)")
        assert torch.allclose(o, want_o, rtol=1e-4, atol=1e-5), (
            f"o wrong with {what}: o = e^(lse1 − lse)·o1 + e^(lse2 − lse)·o2")


from kimi_mini.exercises import register_exercise  # noqa: E402

register_exercise("moba_gate", solution=gate_one_head, wrong=_wrong_gate_one_head,
                  checker=_check_gate_one_head,
                  description="MoBA's gate for one head: current block + top-(k-1) past blocks by q·mean(K)")
register_exercise("moba_merge_lse", solution=merge_two_parts, wrong=_wrong_merge_two_parts,
                  checker=_check_merge_two_parts,
                  description="merge two partial attentions over disjoint keys by their log-sum-exps")
