"""MoBA's efficient PyTorch path (arXiv 2502.13189, §2.3): the current block as block-diagonal causal
attention, each selected history block as one dense attention over the queries that chose it, merged by
their log-sum-exps; a custom backward recomputes each part's probabilities from the final lse.

Arithmetic runs in the input dtype, upcasting only half precision to fp32 (fp64 stays fp64, so the
path can be checked against the reference to 1e-12)."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from kimi_mini.moba.naive import _check_block_args, _check_qk, _select_from_means, block_means, compute_dtype

# Upper bound on the elements of one chunk's score matrix in the torch path (fp32: 8 MB). Keeps the
# working set far below the output size at long context, at a negligible cost in Python overhead.
_CHUNK_ELEMS = 1 << 21
# History buckets: elements one bucket of g pieces x m queries may touch (fp32: 2 MB), and the most
# queries of one key block in one piece (larger counts are cut; 1024 rows keep the kernel at full rate
# and its two threads balanced, see _history_buckets).
_BUCKET_ELEMS = 1 << 19
_PIECE_ROWS = 1024
# A lone piece of at least this many rows is split in two for the backward kernel (see the backward).
_SPLIT_ROWS = 64
# Elements of one [n, h, D] output of the current block's off-diagonal part (fp32: 1 MB).
_PART_ELEMS = 1 << 18


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


def _diag_forward(qb: Tensor, kb: Tensor, vb: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """The current-block part: causal attention inside each block, ``[N, B_s, D] -> o [N, B_s, D], lse [N, B_s]``.

    A CPU kernel tiles keys by 512, so a causal 512-block costs as much as a full one. Halving the
    block skips the masked quarter: the two causal ``B_s/2`` squares in one call, then the second half's
    queries over the first half's keys (no mask), merged into the second half by lse — 3/4 of the FLOPs."""
    N, bs, D = qb.shape
    h = bs // 2
    if bs % 2 or h < 8:
        return attend_part(qb, kb, vb, True, scale)
    o, lse = attend_part(qb.reshape(2 * N, h, D), kb.reshape(2 * N, h, D), vb.reshape(2 * N, h, D), True, scale)
    o, lse = o.reshape(N, bs, D), lse.reshape(N, bs)
    step = max(1, _PART_ELEMS // (h * D))  # blocks per call: the part's temporaries stay ~1 MB
    for s in range(0, N, step):
        sl = slice(s, s + step)
        o_p, lse_p = attend_part(qb[sl, h:], kb[sl, :h], vb[sl, :h], False, scale)  # [n, h, D], [n, h]
        o2, lse2 = o[sl, h:], lse[sl, h:]
        lse_new = torch.logaddexp(lse2, lse_p)
        o2.lerp_(o_p, torch.exp(lse_p - lse_new)[..., None])
        lse2.copy_(lse_new)
    return o, lse


def _diag_backward(dob: Tensor, qb: Tensor, kb: Tensor, vb: Tensor, ob: Tensor, lse_b: Tensor,
                   scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`_diag_forward`'s part given the final ``o``, ``lse`` (the same split)."""
    N, bs, D = qb.shape
    h = bs // 2
    if bs % 2 or h < 8:
        return attend_part_backward(dob, qb, kb, vb, ob, lse_b, True, scale)
    flat = lambda x: x.reshape(2 * N, h, D)  # noqa: E731
    dq, dk, dv = (t.reshape(N, bs, D) for t in attend_part_backward(
        flat(dob), flat(qb), flat(kb), flat(vb), flat(ob), lse_b.reshape(2 * N, h), True, scale))
    step = max(1, _PART_ELEMS // (h * D))
    for s in range(0, N, step):
        sl = slice(s, s + step)
        dq_p, dk_p, dv_p = attend_part_backward(dob[sl, h:], qb[sl, h:], kb[sl, :h], vb[sl, :h], ob[sl, h:],
                                                lse_b[sl, h:], False, scale)
        dq[sl, h:] += dq_p
        dk[sl, :h] += dk_p
        dv[sl, :h] += dv_p
    return dq, dk, dv


def _history_buckets(hist: Tensor, T: int, n: int, bs: int, cost):
    """Group the queries by the history block they chose — all selection slots together.

    Yields ``(rows [g, m], groups [g], full, block)``: ``g`` pieces, each some queries of one key block
    (``groups``: flat block id ``bh·n + i``) as flat query rows ``bh·n·B_s + t``, ``-1`` padding up to
    ``m``; ``full`` when no row is padding; ``block``: the block id when ``g = 1`` (K and V are then a
    view, see :func:`_kv_blocks`), else None.

    A key block's queries come from every slot (a query picks a block at most once, so they are
    distinct), which doubles the rows per attention call at top-3. A block chosen by more than
    ``_PIECE_ROWS`` queries is cut into near-equal pieces (bounded temporaries). Pieces of similar size
    (at most 2x padding) from *different heads* share a bucket — one dense batched attention — so no
    query appears twice in a bucket and its lse merges never collide (two pieces of one head could
    hold the same query, through its two chosen blocks). ``cost(g, m)``: the elements a bucket of g
    pieces × m queries touches; buckets stay under ``_BUCKET_ELEMS``.
    """
    S = hist.shape[-1]
    if S == 0:  # top_k = 1 or a single block: no history
        return
    Tp = n * bs
    if Tp != T:
        hist = F.pad(hist, (0, 0, 0, Tp - T), value=-1)
    hist = hist.reshape(-1, Tp, S)  # [BH, Tp, S]
    heads = max(1, _BUCKET_ELEMS // 32 // (Tp * S))  # a few heads at a time: the index arrays stay small
    for h0 in range(0, hist.shape[0], heads):
        flat = hist[h0 : h0 + heads].reshape(-1)  # entry (h·Tp + t)·S + slot
        G = (flat.numel() // (Tp * S)) * n
        ent = torch.nonzero(flat >= 0).squeeze(1)  # [P] (query, slot) entries with a choice
        rows = torch.div(ent, S, rounding_mode="floor")  # local query row h·Tp + t
        group = torch.div(rows, Tp, rounding_mode="floor") * n + flat[ent]  # local key block h·n + i
        group, order = torch.sort(group, stable=True)
        rows = rows[order] + h0 * Tp  # grouped by key block; global row ids
        counts = torch.bincount(group, minlength=G)  # [G] queries per key block
        del flat, ent, group, order
        # pieces: key block b with c queries -> c // P pieces of P rows, then the rest r in one piece, or
        # in two halves when r >= 3P/4. Why: the CPU kernel splits a call's queries into work items of
        # 256 rows (from 768 rows on; 64 below) and hands each thread an equal *count* of items, so a
        # call of 1040 rows (256+256+256+256+16) runs 768 rows on one thread and 272 on the other.
        P = _PIECE_ROWS
        n_full, rest = torch.div(counts, P, rounding_mode="floor"), counts % P
        n_pieces = n_full + (rest > 0).long() + (4 * rest >= 3 * P).long()
        p_group = torch.repeat_interleave(torch.arange(G, device=rows.device), n_pieces)  # [Q]
        p_first = torch.cumsum(n_pieces, 0) - n_pieces  # first piece of each key block
        j = torch.arange(p_group.numel(), device=rows.device) - p_first[p_group]  # piece index in block
        nf, r, two = n_full[p_group], rest[p_group], (4 * rest >= 3 * P)[p_group]
        half = torch.div(r + 1, 2, rounding_mode="floor")
        first_rest = torch.where(two, half, r)  # size of the first rest piece
        p_size = torch.where(j < nf, P, torch.where(j == nf, first_rest, r - half))
        lo = torch.where(j <= nf, j * P, nf * P + half)
        p_start = (torch.cumsum(counts, 0) - counts)[p_group] + lo  # offset into rows
        by_size = torch.argsort(p_size, descending=True, stable=True)
        sizes = p_size[by_size].tolist()
        starts = p_start[by_size].tolist()
        groups_t = p_group[by_size] + h0 * n
        groups = groups_t.tolist()
        i = 0
        while i < len(sizes):
            m, j = sizes[i], i + 1
            used = {groups[i] // n}
            # grow the bucket while the next piece has a similar size, comes from another head and the
            # bucket stays small
            while (j < len(sizes) and 2 * sizes[j] >= m and groups[j] // n not in used
                   and cost(j - i + 1, m) <= _BUCKET_ELEMS):
                used.add(groups[j] // n)
                j += 1
            if j - i == 1:  # one piece: its rows are a slice of the sorted rows, K and V a view
                yield rows[starts[i] : starts[i] + m].view(1, m), groups_t[i : i + 1], True, groups[i]
            else:
                ps = by_size[i:j]
                offs = torch.arange(m, device=rows.device)
                ok = offs[None, :] < p_size[ps][:, None]  # [g, m]
                idx = torch.where(ok, p_start[ps][:, None] + offs[None, :], 0)
                full = sizes[j - 1] == m
                yield (rows[idx] if full else torch.where(ok, rows[idx], -1)), groups_t[i:j], full, None
            i = j


def _kv_blocks(xb: Tensor, groups: Tensor, block) -> Tensor:
    """The key (or value) blocks of a bucket, ``[g, B_s, D]``: a view of one block where
    :func:`_history_buckets` gave its id, else one gather."""
    return xb.index_select(0, groups) if block is None else xb[block : block + 1]


def _bucket_cost(bs: int, D: int, fused: bool):
    """Elements touched by a history bucket of g pieces × m queries: the gathered K and V blocks, a
    handful of [g, m, D] gathers and outputs, and — on the explicit path — two [g, m, B_s] scores."""
    scores = 0 if fused else 2 * bs
    return lambda g, m: g * (2 * bs * D + m * (4 * D + scores))


class _Clock:
    """Wall time per named section (``lap(name)`` charges the time since the last lap to ``name``)."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.t
        self.t = now


class _NoClock:
    def lap(self, name: str) -> None:
        pass


def _moba_torch_forward(q, k, v, hist, block_size, buckets=None, clock=None):
    """Returns ``o [B·H·n·B_s, D]`` and ``lse [B·H·n·B_s]``: fp32, in the padded flat row layout
    ``(bh·n + i)·B_s + t``. ``buckets``: :func:`_history_buckets`' output when already listed;
    ``clock``: a :class:`_Clock` to charge each section's time to (see :func:`moba_forward_profile`)."""
    clock = clock or _NoClock()
    B, H, T, D = q.shape
    bs, n = block_size, -(-T // block_size)
    scale = 1.0 / math.sqrt(D)
    qb, kb, vb = (_padded_blocks(x, n, bs) for x in (q, k, v))  # [G, bs, D], G = B·H·n
    G = qb.shape[0]
    # Part 1: the current block — block-diagonal causal attention.
    if _use_fused(qb):  # fused calls: their output becomes o, and no score matrix is ever stored
        o, lse = _diag_forward(qb, kb, vb, scale)
        o, lse = o.contiguous(), lse.contiguous()
    else:
        o, lse = qb.new_empty(G, bs, D), qb.new_empty(G, bs)
        step = max(1, _CHUNK_ELEMS // (bs * bs))
        for s in range(0, G, step):
            sl = slice(s, s + step)
            o[sl], lse[sl] = _diag_forward(qb[sl], kb[sl], vb[sl], scale)
    o, lse, qf = o.view(-1, D), lse.view(-1), qb.reshape(-1, D)
    clock.lap("current block")
    # Parts 2..k: per selection slot, the queries gathered by chosen key block, merged by lse.
    if buckets is None:
        buckets = _history_buckets(hist, T, n, bs, _bucket_cost(bs, D, _use_fused(qb)))
    for tr, tg, full, kv in buckets:
        clock.lap("bucketing")
        g, m = tr.shape
        tr = tr.reshape(-1)
        qx = qf.index_select(0, tr if full else tr.clamp(min=0)).view(g, m, D)
        kx, vx = _kv_blocks(kb, tg, kv), _kv_blocks(vb, tg, kv)
        clock.lap("gathers")
        o_p, lse_p = attend_part(qx, kx, vx, False, scale)  # [g, m, D], [g, m]
        del qx, kx, vx
        clock.lap("history attention")
        o_p, lse_p = o_p.reshape(-1, D), lse_p.reshape(-1)
        if not full:  # drop the padding rows
            keep = torch.nonzero(tr >= 0).squeeze(1)
            tr, o_p, lse_p = tr.index_select(0, keep), o_p.index_select(0, keep), lse_p.index_select(0, keep)
        _merge_rows_(o, lse, tr, o_p, lse_p)  # each query at most once per slot: no write collisions
        clock.lap("merges")
    clock.lap("bucketing")
    return o, lse


@torch.no_grad()
def moba_forward_profile(q: Tensor, k: Tensor, v: Tensor, block_size: int, top_k: int) -> dict:
    """Where one forward of the PyTorch path spends its time, and what its FLOPs allow.

    Runs the forward once with a clock at each section and returns ``{"ms": {section: ms}, "total_ms",
    "pairs": (query, key) pairs MoBA attends, "causal_pairs": those causal attention attends,
    "computed_pairs": pairs the kernels compute (current block split as in :func:`_diag_forward`,
    padding of buckets included)}``. Sections: gate (selection), current block, bucketing, gathers,
    history attention, merges. ``causal_pairs / pairs`` is the FLOP limit of the speed-up over causal
    attention."""
    _check_qk(q, k, v)
    _check_block_args(block_size, top_k)
    B, H, T, D = q.shape
    bs, n = block_size, -(-T // block_size)
    clock = _Clock()
    hist = _history(q, k, bs, top_k)
    clock.lap("gate")
    buckets = list(_history_buckets(hist, T, n, bs, _bucket_cost(bs, D, _use_fused(q))))
    clock.lap("bucketing")
    _moba_torch_forward(q, k, v, hist, bs, buckets, clock)
    ms = {name: 1e3 * t for name, t in clock.times.items()}
    t = torch.arange(T, device=q.device)
    own = int(((t % bs) + 1).sum())  # causal keys of each query's own block
    chosen = int((hist >= 0).sum())  # (query, history block) choices over all heads
    half = bs // 2 if bs % 2 == 0 and bs // 2 >= 8 else 0
    diag = B * H * n * (3 * half * half if half else bs * bs)  # the kernels compute masked tiles whole
    return {"ms": ms, "total_ms": sum(ms.values()), "pairs": B * H * own + chosen * bs,
            "causal_pairs": B * H * T * (T + 1) // 2,
            "computed_pairs": diag + sum(tr.numel() for tr, *_ in buckets) * bs}


def _merge_rows_(o: Tensor, lse: Tensor, r: Tensor, o_p: Tensor, lse_p: Tensor) -> None:
    """:func:`~kimi_mini.moba.naive.merge_attention` of part ``(o_p [P, D], lse_p [P])`` into rows ``r`` of
    ``(o, lse)``, in place, in one pass over D: with ``w = exp(lse_p − lse_new) = σ(lse_p − lse_old)``,
    ``o_new = o_old + w (o_p − o_old)`` (a lerp) and ``lse_new = lse_old + softplus(lse_p − lse_old)``."""
    lse_r = lse.index_select(0, r)
    lse_new = torch.logaddexp(lse_r, lse_p)
    w = torch.exp(lse_p - lse_new)  # [P]; as merge_attention's weights, so the same rounding
    o.index_copy_(0, r, o.index_select(0, r).lerp_(o_p, w[:, None]))
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
        dq, dk, dv = (t.contiguous() for t in _diag_backward(dob, qb, kb, vb, ob, lse_b, scale))
    else:
        dq, dk, dv = (qb.new_empty(G, bs, D) for _ in range(3))
        step = max(1, _CHUNK_ELEMS // (bs * bs))
        for s in range(0, G, step):
            sl = slice(s, s + step)
            dq[sl], dk[sl], dv[sl] = _diag_backward(dob[sl], qb[sl], kb[sl], vb[sl], ob[sl], lse_b[sl], scale)
    qf, dof, dqf, of = qb.reshape(-1, D), dob.reshape(-1, D), dq.view(-1, D), o.view(-1, D)
    if buckets is None:
        buckets = _history_buckets(hist, T, n, bs, _bucket_cost(bs, D, _use_fused(qb)))
    for tr, tg, full, block in buckets:
        g, m = tr.shape
        split = g == 1 and m >= _SPLIT_ROWS
        if split:
            # The CPU backward kernel shares work among threads by batch entry only: a lone piece would
            # run on one thread. Its rows become two batch entries over the same block (a stride-0 view
            # of K and V) whose dK, dV are summed — a padding row evens an odd count.
            half = -(-m // 2)
            if 2 * half != m:
                tr, full = F.pad(tr, (0, 1), value=-1), False
            g, m = 2, half
            kx, vx = kb[block : block + 1].expand(2, -1, -1), vb[block : block + 1].expand(2, -1, -1)
        else:
            kx, vx = _kv_blocks(kb, tg, block), _kv_blocks(vb, tg, block)
        tr = tr.reshape(-1)
        rc = tr if full else tr.clamp(min=0)
        do_t = _rows(dof, rc, g, m)
        if not full:
            do_t.mul_((tr >= 0).view(g, m, 1))  # padding rows: zero upstream gradient
        dq_t, dk_t, dv_t = attend_part_backward(do_t, _rows(qf, rc, g, m), kx, vx, _rows(of, rc, g, m),
                                                _rows(lse, rc, g, m), False, scale)
        dq_t = dq_t.reshape(-1, D)
        if not full:
            keep = torch.nonzero(tr >= 0).squeeze(1)
            tr, dq_t = tr.index_select(0, keep), dq_t.index_select(0, keep)
        dqf.index_add_(0, tr, dq_t)
        if split:
            dk[block] += dk_t.sum(0)
            dv[block] += dv_t.sum(0)
        else:
            dk.index_add_(0, tg, dk_t)
            dv.index_add_(0, tg, dv_t)
    unpad = lambda x: x.view(B, H, n * bs, D)[:, :, :T]
    return unpad(dq), unpad(dk), unpad(dv)


def _history(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    """:func:`~kimi_mini.moba.naive.moba_select` stored compactly (int16 while the block ids fit: it lives
    through the whole forward, and in training until the backward)."""
    n = -(-q.shape[2] // block_size)
    means = block_means(k, block_size, n - 1)
    dtype = torch.int16 if n < 2**15 else torch.int32
    return _select_from_means(q, means, 0, block_size, top_k, dtype=dtype)


class MobaTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, block_size, top_k):
        B, H, T, D = q.shape
        hist = _history(q, k, block_size, top_k)  # [B, H, T, S], int16 when the block ids fit
        buckets = None
        if any(ctx.needs_input_grad[:3]):
            # training: bucket once, reuse in the backward (index tensors only: ~16 B per query and slot)
            buckets = list(_history_buckets(hist, T, -(-T // block_size), block_size,
                                            _bucket_cost(block_size, D, _use_fused(q))))
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
