"""MoBA's efficient PyTorch path (arXiv 2502.13189, §2.3): the current block as block-diagonal causal
attention, each selected history block as one dense attention over the queries that chose it, merged by
their log-sum-exps; a custom backward recomputes each part's probabilities from the final lse.

Arithmetic runs in the input dtype, upcasting only half precision to fp32 (fp64 stays fp64, so the
path can be checked against the reference to 1e-12)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kimi_mini.moba.naive import _BUCKET_ELEMS, compute_dtype, moba_select

# Upper bound on the elements of one chunk's score matrix in the torch path (fp32: 8 MB). Keeps the
# working set far below the output size at long context, at a negligible cost in Python overhead.
_CHUNK_ELEMS = 1 << 21


# ----------------------------------------------------------------------------------------------
# The efficient PyTorch path: block-diagonal part + gathered history parts, merged by lse
# ----------------------------------------------------------------------------------------------


def _padded_blocks(x: Tensor, n_blocks: int, block_size: int) -> Tensor:
    """``[B, H, T, D] -> [B·H·n, B_s, D]`` in the compute dtype (zero-padded to whole blocks; a view when possible)."""
    B, H, T, D = x.shape
    x = x.to(compute_dtype(x))
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
        # N as the batch of single-head problems: the kernel then returns contiguous o, lse (no copies)
        o, lse = _FLASH_CPU(q[:, None], k[:, None], v[:, None], 0.0, causal, scale=scale)
        return o[:, 0], lse[:, 0]
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
        dq, dk, dv = _FLASH_CPU_BWD(do[:, None], q[:, None], k[:, None], v[:, None], o[:, None], lse[:, None],
                                    0.0, causal, scale=scale)
        return dq[:, 0], dk[:, 0], dv[:, 0]
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


def _moba_torch_forward(q, k, v, hist, block_size, buckets=None):
    """Returns ``o [B·H·n·B_s, D]`` and ``lse [B·H·n·B_s]``: fp32, in the padded flat row layout
    ``(bh·n + i)·B_s + t``. ``buckets``: :func:`_history_buckets`' output when already listed."""
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
        o, lse = qb.new_empty(G, bs, D), qb.new_empty(G, bs)
        step = max(1, _CHUNK_ELEMS // (bs * bs))
        for s in range(0, G, step):
            sl = slice(s, s + step)
            o[sl], lse[sl] = attend_part(qb[sl], kb[sl], vb[sl], True, scale)
    o, lse, qf = o.view(-1, D), lse.view(-1), qb.reshape(-1, D)
    # Parts 2..k: per selection slot, the queries gathered by chosen key block, merged by lse.
    if buckets is None:
        buckets = _history_buckets(hist, T, n, bs, _bucket_cost(qb))
    for tr, tg in buckets:
        g, m = tr.shape
        tr = tr.reshape(-1)
        o_p, lse_p = attend_part(qf.index_select(0, tr.clamp(min=0)).view(g, m, D), kb.index_select(0, tg),
                                 vb.index_select(0, tg), False, scale)  # [g, m, D], [g, m]
        keep = torch.nonzero(tr >= 0).squeeze(1)
        r = tr.index_select(0, keep)  # each query at most once per slot: no write collisions
        _merge_rows_(o, lse, r, o_p.view(-1, D).index_select(0, keep), lse_p.view(-1).index_select(0, keep))
    return o, lse


def _merge_rows_(o: Tensor, lse: Tensor, r: Tensor, o_p: Tensor, lse_p: Tensor) -> None:
    """:func:`~kimi_mini.moba.naive.merge_attention` of part ``(o_p [P, D], lse_p [P])`` into rows ``r`` of
    ``(o, lse)``, in place, in one pass over D: with ``w = exp(lse_p − lse_new) = σ(lse_p − lse_old)``,
    ``o_new = o_old + w (o_p − o_old)`` (a lerp) and ``lse_new = lse_old + softplus(lse_p − lse_old)``."""
    lse_r = lse.index_select(0, r)
    lse_new = torch.logaddexp(lse_r, lse_p)
    w = torch.exp(lse_p - lse_new)  # [P]; as merge_attention's weights, so the same rounding
    o.index_copy_(0, r, torch.lerp(o.index_select(0, r), o_p, w[:, None]))
    lse.index_copy_(0, r, lse_new)


def _rows(x: Tensor, idx: Tensor, g: int, m: int) -> Tensor:
    """Rows ``idx [g·m]`` of ``x [R, ...]`` as ``[g, m, ...]`` (one index_select: a single gather pass)."""
    return x.index_select(0, idx).view(g, m, *x.shape[1:])


def _moba_torch_backward(q, k, v, o, lse, do, hist, block_size, buckets=None):
    B, H, T, D = q.shape
    bs, n = block_size, -(-T // block_size)
    scale = 1.0 / math.sqrt(D)
    qb, kb, vb, dob = (_padded_blocks(x, n, bs) for x in (q, k, v, do))
    G = qb.shape[0]
    ob, lse_b = o.view(G, bs, D), lse.view(G, bs)
    if _use_fused(qb):
        dq, dk, dv = (t.contiguous() for t in attend_part_backward(dob, qb, kb, vb, ob, lse_b, True, scale))
    else:
        dq, dk, dv = (qb.new_empty(G, bs, D) for _ in range(3))
        step = max(1, _CHUNK_ELEMS // (bs * bs))
        for s in range(0, G, step):
            sl = slice(s, s + step)
            dq[sl], dk[sl], dv[sl] = attend_part_backward(dob[sl], qb[sl], kb[sl], vb[sl], ob[sl], lse_b[sl],
                                                          True, scale)
    qf, dof, dqf, of = qb.reshape(-1, D), dob.reshape(-1, D), dq.view(-1, D), o.view(-1, D)
    if buckets is None:
        buckets = _history_buckets(hist, T, n, bs, _bucket_cost(qb))
    for tr, tg in buckets:
        g, m = tr.shape
        tr = tr.reshape(-1)
        valid = tr >= 0
        rc = tr.clamp(min=0)
        do_t = _rows(dof, rc, g, m).mul_(valid.view(g, m, 1))  # padding rows: zero upstream gradient
        dq_t, dk_t, dv_t = attend_part_backward(do_t, _rows(qf, rc, g, m), kb.index_select(0, tg),
                                                vb.index_select(0, tg), _rows(of, rc, g, m), _rows(lse, rc, g, m),
                                                False, scale)
        keep = torch.nonzero(valid).squeeze(1)
        dqf.index_add_(0, tr.index_select(0, keep), dq_t.reshape(-1, D).index_select(0, keep))
        dk.index_add_(0, tg, dk_t)
        dv.index_add_(0, tg, dv_t)
    unpad = lambda x: x.view(B, H, n * bs, D)[:, :, :T]
    return unpad(dq), unpad(dk), unpad(dv)


class MobaTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, block_size, top_k):
        hist = moba_select(q, k, block_size, top_k)  # [B, H, T, S]
        B, H, T, D = q.shape
        buckets = None
        if any(ctx.needs_input_grad[:3]):
            # training: bucket once, reuse in the backward (index tensors only: ~16 B per query and slot)
            shape = q.new_empty(1, block_size, D)  # what _bucket_cost reads: block size, D, device
            buckets = list(_history_buckets(hist, T, -(-T // block_size), block_size, _bucket_cost(shape)))
        o, lse = _moba_torch_forward(q, k, v, hist, block_size, buckets)
        ctx.save_for_backward(q, k, v, o, lse, hist)
        ctx.buckets = buckets
        ctx.block_size = block_size
        out = o.view(B, H, -1, D)[:, :, :T].to(q.dtype)
        # A query row holding NaN/inf has NaN scores, hence a NaN output in the dense reference; torch's fused
        # CPU kernel and the LSE merge can turn such a row into zeros instead. Propagate it as PyTorch would.
        # max/min propagate NaN and reach ±inf: no [B, H, T, D] temporaries
        bad = ~(torch.isfinite(q.amax(-1, keepdim=True)) & torch.isfinite(q.amin(-1, keepdim=True)))  # [B, H, T, 1]
        return out.masked_fill(bad, float("nan")) if bool(bad.any()) else out

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, hist = ctx.saved_tensors
        dq, dk, dv = _moba_torch_backward(q, k, v, o, lse, do, hist, ctx.block_size, ctx.buckets)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None




def moba_attention_torch(q: Tensor, k: Tensor, v: Tensor, block_size: int, top_k: int) -> Tensor:
    """The efficient path with its custom backward (arguments checked by ``moba_attention``)."""
    return MobaTorch.apply(q, k, v, block_size, top_k)
