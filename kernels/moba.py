"""MoBA attention in Triton, scheduled by key block: a gate without host syncs, the queries of each
chosen key block gathered into dense tiles, partial outputs merged by log-sum-exp.

Paper: MoBA: Mixture of Block Attention for Long-Context LLMs (Lu et al., arXiv 2502.13189). Per head,
with key blocks of ``B = block_size`` positions and ``I_t`` the blocks query t selected (its own block
⌊t/B⌋ plus the gate's top-(k−1) eligible history blocks, ``s(t, i) = q_t · mean(K_block_i)`` in fp32)::

    s_tj = q_t · k_j / √D,   lse_t = log Σ_{j ∈ ∪ I_t, j ≤ t} exp(s_tj),   o_t = Σ_j exp(s_tj − lse_t) v_j
    P_tj = exp(s_tj − lse_t),  δ_t = do_t · o_t,  dS = P ⊙ (dO Vᵀ − δ),
    dQ = dS K / √D,   dK = dSᵀ Q / √D,   dV = Pᵀ dO

The paper's efficient form (§2.3) splits the keys of query t into disjoint *parts* — its current block
(causal) and each chosen history block (no mask) — and merges them exactly,
``lse = log Σ_parts exp(lse_p)``, ``o = Σ_parts exp(lse_p − lse) o_p``. Given the final ``o`` and ``lse``,
each part's ``dS`` is its exact share of the dense gradient, so the parts' gradients simply add up.

The schedule (:func:`build_schedule`), built with a fixed number of device ops and no host sync:

1. the gate (:func:`gate_select`): int32 history block ids ``SEL [B·H, T, S]`` (``S = min(k−1, n−1)``,
   −1 = empty slot); block means reduced in fp32 straight from K (no fp32 copy of K), scores in a fixed
   number of query chunks, each against the blocks its last query may see;
2. every (query, slot) *entry* gets the key ``slot·(B·H·n) + bh·n + block``; a stable sort groups the
   entries by slot, then key block, and each group is cut into tiles of ``BLOCK_M`` entries (the last
   one padded). Each slot's launch has a grid that bounds its tile count (``⌈B·H·T / BLOCK_M⌉ + B·H·n``);
   the programs past the real count see an empty tile and do nothing.

Forward: ``_moba_fwd_kernel`` runs one program per query tile of a block and attends the block causally,
writing o and lse; then, for each slot, ``_moba_hist_fwd_kernel`` runs one program per (query tile, key
block): the tile's gathered queries attend the whole block (it lies wholly in the past: no mask), and
the partial (o_p, lse_p) is merged into the rows' (o, lse) in place. A query has one entry per slot, so
no two programs of one launch touch the same row, and no partial buffer is needed: the forward holds
o, lse and the schedule only (≈ 1.04× SDPA's q, k, v, o at the bench's shape; :func:`memory_plan`).
The work is the pairs MoBA needs, plus tile padding (``kimi-mini bench moba`` counts it).

Backward: δ (``_moba_bwd_preprocess_kernel``); ``_moba_bwd_dkdv_kernel`` owns ``BLOCK_N`` keys of one
block and walks the gathered tiles of that block in every slot, then the causal queries of the block
itself — dK, dV without atomics; ``_moba_bwd_dq_kernel`` writes the current block's dq per query tile,
then ``_moba_hist_bwd_dq_kernel`` adds each slot's history share in place (one launch per slot).
Deterministic: no atomics anywhere, and a fixed merge order per row (current block, slot 0, 1, …).

Precision: bf16/fp16 tiles go to the tensor cores as loaded (fp32 accumulation); o and dq are stored in
the input dtype after the current block and after each slot's merge (``S`` extra roundings), lse and δ
in fp32. In the CPU interpreter loads are upcast to fp32 (``UPCAST``: it computes bf16 wrongly
otherwise). fp32 inputs use the ``tl.dot`` precision of :func:`kimi_mini.kernels.dot_precision`. Every
kernel runs on a 1-D grid.

Memory beyond the output: lse and δ (fp32, one per query), the int32 selections, the sorted entries and
the tiles (:func:`memory_plan` counts them). An earlier version kept a partial output per entry and
merged them in the current-block kernel: ≈ 0.52× SDPA's q, k, v, o more at the bench's shape.

Order, as in Triton's tutorials: reference (``kimi_mini.moba``, ``impl="naive"``), kernels, host
wrapper + ``autograd.Function``, check (``tests/test_moba_kernel.py``), benchmark (``__main__``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K
from kimi_mini.kernels.flash_attention import online_softmax_update

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
# The gate scores its queries in this many chunks, whatever T: a fixed op count (no per-chunk launch
# overhead growing with T), and temporaries of T·H·n/8 fp32 scores.
_GATE_CHUNKS = 8


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _moba_hist_fwd_kernel(Q, K, V, ENT, TILES, SLOT_TILES, O, LSE, qk_scale, slot, T, D, BS, N_BLK,
                          S: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # One (query tile, key block) of one slot: TILES[tile] = (bh·n + block, first entry, end entry) in ENT;
    # the slot's tiles are SLOT_TILES[slot] = (first tile, count). The tile's queries attend the whole block
    # (it lies wholly in their past: no mask) and the result is merged into o and lse in place. A query
    # has one entry per slot, so no two programs of one launch touch the same row.
    pid = tl.program_id(0)
    live = pid < tl.load(SLOT_TILES + slot * 2 + 1)
    tile = tl.load(SLOT_TILES + slot * 2) + pid
    g = tl.load(TILES + tile * 3, mask=live, other=0)
    r0 = tl.load(TILES + tile * 3 + 1, mask=live, other=0)
    r1 = tl.load(TILES + tile * 3 + 2, mask=live, other=0)  # a program past the count: an empty tile
    bh, blk = g // N_BLK, g % N_BLK
    offs_r = r0 + tl.arange(0, BLOCK_M)
    r_ok = offs_r < r1
    ent = tl.load(ENT + offs_r, mask=r_ok, other=0).to(tl.int64)  # entry = query row · S + slot
    qrow = ent // S  # bh·T + t
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    rd_mask = r_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + qrow[:, None] * D + offs_d[None, :], mask=rd_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    kv_base = (bh.to(tl.int64) * T + blk * BS) * D
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_hi = tl.where(r1 > r0, BS, 0)  # an empty tile does nothing
    for n0 in range(0, n_hi, BLOCK_N):
        in_blk = n0 + tl.arange(0, BLOCK_N)
        n_ok = in_blk < BS  # a history block is complete: only the last chunk of an odd B is partial
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + kv_base + in_blk[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + kv_base + in_blk[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # base 2
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_i, l_i, acc = online_softmax_update(s, v, m_i, l_i, acc, PRECISION)
    # merge (o_p, lse_p) into the row's (o, lse) so far — the current block and the earlier slots:
    # lse' = log(e^lse + e^lse_p), o' = e^(lse − lse') o + e^(lse_p − lse') o_p, all in base 2 here
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    lse_p = m_i + tl.log2(l_safe)
    lse_o = tl.load(LSE + qrow, mask=r_ok, other=0.0) * 1.4426950408889634
    o_o = tl.load(O + qrow[:, None] * D + offs_d[None, :], mask=rd_mask, other=0.0).to(tl.float32)
    m = tl.maximum(lse_o, lse_p)
    w_o = tl.exp2(lse_o - m)
    w_p = tl.exp2(lse_p - m)
    tot = w_o + w_p
    o_new = (o_o * w_o[:, None] + (acc / l_safe[:, None]) * w_p[:, None]) / tot[:, None]
    tl.store(O + qrow[:, None] * D + offs_d[None, :], o_new.to(O.dtype.element_ty), mask=rd_mask)
    tl.store(LSE + qrow, (m + tl.log2(tot)) * 0.6931471805599453, mask=r_ok)


@triton.jit
def _moba_fwd_kernel(Q, K, V, O, LSE, qk_scale, T, D, BS, N_BLK, N_MT,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # One query tile of one block: the block's causal part. It runs first and writes o and lse; the
    # history launches (one per slot) then merge their blocks into them.
    pid = tl.program_id(0)
    j = pid % N_MT
    g = pid // N_MT
    bh, blk = g // N_BLK, g % N_BLK
    start = blk * BS
    rows = tl.minimum(BS, T - start)  # positions in this block
    in_m = j * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = in_m < rows
    offs_m = start + in_m
    row = bh.to(tl.int64) * T + offs_m  # query row bh·T + t
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    md_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + row[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    kv_base = (bh.to(tl.int64) * T + start) * D
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = tl.where(j * BLOCK_M < rows, tl.minimum(j * BLOCK_M + BLOCK_M, rows), 0)  # causal early stop
    for n0 in range(0, hi, BLOCK_N):
        in_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = in_n < hi
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + kv_base + in_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + kv_base + in_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(n_ok[None, :] & (in_n[None, :] <= in_m[:, None]), s, float("-inf"))
        m_i, l_i, acc = online_softmax_update(s, v, m_i, l_i, acc, PRECISION)
    l_safe = tl.where(l_i > 0, l_i, 1.0)  # rows past the block only
    tl.store(O + row[:, None] * D + offs_d[None, :], (acc / l_safe[:, None]).to(O.dtype.element_ty), mask=md_mask)
    tl.store(LSE + row, (m_i + tl.log2(l_safe)) * 0.6931471805599453, mask=m_ok)


@triton.jit
def _moba_bwd_preprocess_kernel(O, DO, DELTA, R, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    r_ok = offs_r < R
    mask = r_ok[:, None] & (offs_d < D)[None, :]
    ptr = offs_r.to(tl.int64)[:, None] * D + offs_d[None, :]
    o = tl.load(O + ptr, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + ptr, mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + offs_r, tl.sum(o * do, 1), mask=r_ok)  # δ_t = do_t · o_t


@triton.jit
def _moba_hist_bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, ENT, TILES, SLOT_TILES, DQ, qk_scale, sm_scale, slot, T,
                             D, BS, N_BLK, S: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # One (query tile, key block) of one slot, as in the forward: the block's share of dq, added to the
    # rows' dq in place (the current block's dq is already there; one entry per query per slot).
    pid = tl.program_id(0)
    live = pid < tl.load(SLOT_TILES + slot * 2 + 1)
    tile = tl.load(SLOT_TILES + slot * 2) + pid
    g = tl.load(TILES + tile * 3, mask=live, other=0)
    r0 = tl.load(TILES + tile * 3 + 1, mask=live, other=0)
    r1 = tl.load(TILES + tile * 3 + 2, mask=live, other=0)
    bh, blk = g // N_BLK, g % N_BLK
    offs_r = r0 + tl.arange(0, BLOCK_M)
    r_ok = offs_r < r1
    ent = tl.load(ENT + offs_r, mask=r_ok, other=0).to(tl.int64)
    qrow = ent // S
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    rd_mask = r_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + qrow[:, None] * D + offs_d[None, :], mask=rd_mask, other=0.0)
    do = tl.load(DO + qrow[:, None] * D + offs_d[None, :], mask=rd_mask, other=0.0)
    if UPCAST:
        q, do = q.to(tl.float32), do.to(tl.float32)
    lse2 = tl.load(LSE + qrow, mask=r_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + qrow, mask=r_ok, other=0.0)
    kv_base = (bh.to(tl.int64) * T + blk * BS) * D
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_hi = tl.where(r1 > r0, BS, 0)
    for n0 in range(0, n_hi, BLOCK_N):
        in_blk = n0 + tl.arange(0, BLOCK_N)
        n_ok = in_blk < BS
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + kv_base + in_blk[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + kv_base + in_blk[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        p = tl.exp2(s * qk_scale - lse2[:, None])  # with the final lse
        p = tl.where(r_ok[:, None] & n_ok[None, :], p, 0.0)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq_ptr = DQ + qrow[:, None] * D + offs_d[None, :]
    dq_old = tl.load(dq_ptr, mask=rd_mask, other=0.0).to(tl.float32)
    tl.store(dq_ptr, (dq_old + dq * sm_scale).to(DQ.dtype.element_ty), mask=rd_mask)


@triton.jit
def _moba_bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, ENT, TILES, BLK_TILES, TILE_FIRST, TILE_COUNT, DK, DV,
                          qk_scale, sm_scale, T, D, BS, N_BLK, N_CHUNKS, S: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
                          PRECISION: tl.constexpr):
    # BLOCK_N keys of one block: the gathered query tiles that chose the block, then its own queries.
    pid = tl.program_id(0)
    c = pid % N_CHUNKS
    g = pid // N_CHUNKS
    bh, blk = g // N_BLK, g % N_BLK
    start = blk * BS
    rows = tl.minimum(BS, T - start)
    in_n = c * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = in_n < rows
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    kv_mask = n_ok[:, None] & d_ok[None, :]
    blk_base = bh.to(tl.int64) * T + start  # row of the block's first position
    k = tl.load(K + (blk_base + in_n)[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + (blk_base + in_n)[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
    if UPCAST:
        k, v = k.to(tl.float32), v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    first = tl.load(TILE_FIRST + g)  # the block's gathered tiles, every slot's, listed in BLK_TILES
    count = tl.load(TILE_COUNT + g)
    for j in range(first, first + count):
        i = tl.load(BLK_TILES + j)
        r0 = tl.load(TILES + i * 3 + 1)
        r1 = tl.load(TILES + i * 3 + 2)
        offs_r = r0 + tl.arange(0, BLOCK_M)
        r_ok = offs_r < r1
        qrow = tl.load(ENT + offs_r, mask=r_ok, other=0).to(tl.int64) // S
        rd_mask = r_ok[:, None] & d_ok[None, :]
        q = tl.load(Q + qrow[:, None] * D + offs_d[None, :], mask=rd_mask, other=0.0)
        do = tl.load(DO + qrow[:, None] * D + offs_d[None, :], mask=rd_mask, other=0.0)
        if UPCAST:
            q, do = q.to(tl.float32), do.to(tl.float32)
        lse2 = tl.load(LSE + qrow, mask=r_ok, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + qrow, mask=r_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        p = tl.exp2(s * qk_scale - lse2[:, None])  # [BLOCK_M, BLOCK_N]
        p = tl.where(r_ok[:, None] & n_ok[None, :], p, 0.0)
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    # The current-block part: queries from this chunk's first key to the block's end, causal.
    for m0 in range(c * BLOCK_N, rows, BLOCK_M):
        in_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = in_m < rows
        md_mask = m_ok[:, None] & d_ok[None, :]
        qrow = blk_base + in_m
        q = tl.load(Q + qrow[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
        do = tl.load(DO + qrow[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
        if UPCAST:
            q, do = q.to(tl.float32), do.to(tl.float32)
        lse2 = tl.load(LSE + qrow, mask=m_ok, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + qrow, mask=m_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        p = tl.exp2(s * qk_scale - lse2[:, None])
        p = tl.where(m_ok[:, None] & n_ok[None, :] & (in_n[None, :] <= in_m[:, None]), p, 0.0)
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    tl.store(DK + (blk_base + in_n)[:, None] * D + offs_d[None, :], (dk * sm_scale).to(DK.dtype.element_ty),
             mask=kv_mask)
    tl.store(DV + (blk_base + in_n)[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _moba_bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, qk_scale, sm_scale, T, D, BS, N_BLK, N_MT,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # One query tile of one block: the current block's dq (causal). It runs before the history launches,
    # which add their blocks' shares in place.
    pid = tl.program_id(0)
    j = pid % N_MT
    g = pid // N_MT
    bh, blk = g // N_BLK, g % N_BLK
    start = blk * BS
    rows = tl.minimum(BS, T - start)
    in_m = j * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = in_m < rows
    row = bh.to(tl.int64) * T + start + in_m
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    md_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + row[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
    do = tl.load(DO + row[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
    if UPCAST:
        q, do = q.to(tl.float32), do.to(tl.float32)
    lse2 = tl.load(LSE + row, mask=m_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + row, mask=m_ok, other=0.0)
    kv_base = (bh.to(tl.int64) * T + start) * D
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = tl.where(j * BLOCK_M < rows, tl.minimum(j * BLOCK_M + BLOCK_M, rows), 0)
    for n0 in range(0, hi, BLOCK_N):
        in_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = in_n < hi
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + kv_base + in_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + kv_base + in_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        p = tl.exp2(s * qk_scale - lse2[:, None])
        p = tl.where(m_ok[:, None] & n_ok[None, :] & (in_n[None, :] <= in_m[:, None]), p, 0.0)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + row[:, None] * D + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=md_mask)


# ----------------------------------------------------------------------------------------------
# Host side: the gate and the schedule (device ops only, a fixed number of them)
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def gate_select(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    """MoBA's gate, for the kernels: ``SEL [B·H, T, S]`` int32 history block ids, ``S = min(top_k − 1,
    n_blocks − 1)``, −1 for an empty slot (fewer eligible blocks than slots); the same blocks as
    :func:`kimi_mini.moba.moba_select` (up to the order of the slots and exact ties).

    No host sync and no data-dependent Python: the op count depends on neither T nor the data. Block
    means are an fp32 reduction of K in place (no fp32 copy of K); the scores are computed in
    ``_GATE_CHUNKS`` chunks of queries, each against the blocks its last query may see."""
    B, H, T, D = q.shape
    bs = block_size
    n_hist = -(-T // bs) - 1  # the last block is nobody's history
    S = max(0, min(top_k - 1, n_hist))
    sel = torch.full((B * H, T, S), -1, dtype=torch.int32, device=q.device)
    if S == 0 or q.numel() == 0:
        return sel
    means = k[:, :, : n_hist * bs].reshape(B * H, n_hist, bs, D).mean(2, dtype=torch.float32)  # [BH, n_hist, D]
    qf = q.reshape(B * H, T, D)
    pos_blk = (torch.arange(T, device=q.device) // bs)[:, None]  # [T, 1] each query's own block
    blocks = torch.arange(n_hist, device=q.device)[None, :]  # [1, n_hist]
    step = -(-(T - bs) // _GATE_CHUNKS)  # block 0 has no history
    for s in range(bs, T, step):  # ~8 device ops per chunk
        e = min(T, s + step)
        cols = min(n_hist, (e - 1) // bs)  # blocks the chunk's last query may see
        scores = torch.matmul(qf[:, s:e].float(), means[:, :cols].transpose(1, 2))  # [BH, e-s, cols], fp32
        scores.masked_fill_(blocks[:, :cols] >= pos_blk[s:e], float("-inf"))  # not wholly in the past
        kk = min(S, cols)
        vals, idx = scores.topk(kk, dim=-1)
        sel[:, s:e, :kk] = idx.masked_fill_(vals == float("-inf"), -1)  # cast to int32 by the copy
    return sel


class MobaSchedule(NamedTuple):
    """The key-block-major schedule (all index tensors on the inputs' device, int32).

    ``sel [B·H, T, S]``: history block ids (−1 none). Entry ``e = (bh·T + t)·S + slot``.
    ``ent [E]``: the entries sorted by (slot, key block ``bh·n + block``); empty slots sorted last.
    ``tiles [max_tiles, 3]``: (key block, first, end) into ``ent``, slot-major; tiles past the real
    count are empty. ``slot_tiles [S, 2]``: each slot's (first tile, tile count). ``blk_tiles``: the real
    tiles' ids ordered by key block (every slot's); ``tile_first, tile_count [B·H·n]``: each key block's
    range in ``blk_tiles`` (what the dK/dV kernel walks). ``n_tiles``: 0-d, the real count."""

    sel: Tensor
    ent: Tensor
    tiles: Tensor
    slot_tiles: Tensor
    blk_tiles: Tensor
    tile_first: Tensor
    tile_count: Tensor
    n_tiles: Tensor
    block_size: int
    n_blocks: int
    block_m: int


@torch.no_grad()
def build_schedule(sel: Tensor, block_size: int, block_m: int) -> MobaSchedule:
    """Group the (query, slot) entries of ``sel [B·H, T, S]`` by slot and chosen key block, in tiles of
    ``block_m``: one stable sort, a searchsorted for the group starts, one for each tile's group —
    a fixed number of device ops, no host sync (works on meta tensors). Grouping by slot first lets the
    kernels merge each slot's blocks into o (and dq) in place: a query has one entry per slot."""
    BH, T, S = sel.shape
    n = -(-T // block_size)
    G1 = BH * n  # key blocks
    G, E = S * G1, BH * T * S
    dev = sel.device
    idx_dtype = torch.int32 if max(E, G) < 2**31 - 1 else torch.int64
    if G == 0:  # no heads, or no history slot: an empty schedule
        z = torch.zeros(0, dtype=idx_dtype, device=dev)
        zb = torch.zeros(G1, dtype=idx_dtype, device=dev)  # the dK/dV kernel reads a count of 0 per block
        return MobaSchedule(sel.contiguous(), z, z.view(0, 3), z.view(0, 2), z, zb, zb, z.sum(), block_size, n,
                            block_m)
    flat = sel.reshape(-1)
    e = torch.arange(E, device=dev, dtype=idx_dtype)
    bh, slot = e // (T * S), e % S
    key = torch.where(flat >= 0, slot * G1 + bh * n + flat, G)  # empty slots sort last
    key_sorted, order = torch.sort(key, stable=True)
    ent = order.to(idx_dtype)
    bounds = torch.searchsorted(key_sorted, torch.arange(G + 1, device=dev, dtype=key_sorted.dtype),
                                out_int32=idx_dtype == torch.int32)  # [G+1]: first entry of each group
    start, counts = bounds[:-1], bounds[1:] - bounds[:-1]
    tile_count = (counts + block_m - 1) // block_m
    tile_end = torch.cumsum(tile_count, 0, dtype=idx_dtype)
    tile_first = tile_end - tile_count
    max_tiles = -(-E // block_m) + G  # Σ ⌈c_g / M⌉ ≤ E / M + G
    i = torch.arange(max_tiles, device=dev, dtype=idx_dtype)
    tg = torch.searchsorted(tile_end, i, right=True, out_int32=idx_dtype == torch.int32).clamp_(max=G - 1)
    r0 = start[tg] + (i - tile_first[tg]) * block_m
    real = i < tile_end[-1]
    r1 = torch.where(real, torch.minimum(r0 + block_m, bounds[1:][tg]), r0)  # empty past the count
    tiles = torch.stack([tg % G1, r0, r1], 1).to(idx_dtype).contiguous()
    slot_first = tile_first.view(S, G1)[:, 0]
    slot_tiles = torch.stack([slot_first, tile_end.view(S, G1)[:, -1] - slot_first], 1).contiguous()
    # the dK/dV kernel's view: each key block's tiles over all slots (a stable sort of the tiles by block)
    blk_key_sorted, blk_order = torch.sort(torch.where(real, tiles[:, 0], G1), stable=True)
    blk_bounds = torch.searchsorted(blk_key_sorted, torch.arange(G1 + 1, device=dev, dtype=blk_key_sorted.dtype),
                                    out_int32=idx_dtype == torch.int32)
    return MobaSchedule(sel.contiguous(), ent, tiles, slot_tiles, blk_order.to(idx_dtype), blk_bounds[:-1].contiguous(),
                        (blk_bounds[1:] - blk_bounds[:-1]).contiguous(), tile_end[-1], block_size, n, block_m)


def _tiles(block_size: int, D: int, dtype: torch.dtype, interpreted: bool | None = None) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D). Half-precision tiles are 64 × 64 (wgmma's M on sm_90, 4 warps);
    fp32 tiles half as tall (4-byte tiles in shared memory); small tiles in the interpreter, so that
    tiny tests still cut groups into several tiles."""
    interpreted = K.INTERPRETED if interpreted is None else interpreted
    block_d = max(16, triton.next_power_of_2(D))
    block_n = max(16, min(64, triton.next_power_of_2(block_size)))
    if interpreted:
        return 16, min(block_n, 32), block_d
    if dtype == torch.float32:
        return 32, min(block_n, 32), block_d
    return 64, block_n, block_d


def _dkdv_launch(block_d: int) -> dict:
    """Launch options of the dK/dV kernel. It holds K, V and two [BLOCK_N, BLOCK_D] fp32 accumulators
    while it walks gathered query tiles; ptxas (bf16) spills with Triton's default of 4 warps and 3
    pipeline stages on sm_80 at head dim 64, and at 128 on both archs until 8 warps and one stage."""
    return dict(num_warps=8, num_stages=1) if block_d >= 128 else dict(num_warps=4, num_stages=2)


def schedule_for(q: Tensor, sel: Tensor, block_size: int) -> MobaSchedule:
    """The schedule the wrappers use for ``q`` (its dtype and D decide the tile height)."""
    return build_schedule(sel, block_size, _tiles(block_size, q.shape[-1], q.dtype)[0])


def schedule_pairs(sched: MobaSchedule, block_n: int) -> tuple[int, int]:
    """(computed, needed) (query, key) pairs of a schedule, counted from its index tensors (host sync):
    computed = the history tiles (``BLOCK_M`` rows, padding included, × the block in ``block_n`` chunks)
    plus the current-block tiles (each tile's queries × the keys up to its last query, in chunks);
    needed = Σ_t (t mod B + 1) + B × (chosen history blocks)."""
    BH, T, S = sched.sel.shape
    bs, bm, n = sched.block_size, sched.block_m, sched.n_blocks
    chunk = lambda x: -(-x // block_n) * block_n  # noqa: E731
    hist = int(sched.n_tiles) * bm * chunk(bs)
    diag = 0
    for blk in range(n):
        rows = min(bs, T - blk * bs)
        diag += sum(bm * chunk(min(j + bm, rows)) for j in range(0, rows, bm))
    t = torch.arange(T)
    needed = BH * int((t % bs + 1).sum()) + bs * int((sched.sel >= 0).sum())
    return BH * diag + hist, needed


# ----------------------------------------------------------------------------------------------
# Wrappers
# ----------------------------------------------------------------------------------------------


def memory_plan(B: int, H: int, T: int, D: int, block_size: int, top_k: int,
                dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Bytes the wrapper allocates beyond the inputs and the output, from the buffers it would allocate
    (built on meta tensors: no memory, no compute): ``schedule`` (the int32 selections, the sorted
    entries and the tiles, kept for the backward), ``lse`` (fp32, kept for the backward), ``delta`` (the
    backward's fp32 δ), and ``sdpa`` = q, k, v, o — what causal SDPA holds in a forward. There are no
    partial outputs or partial dq: each slot's history blocks are merged into o and dq in place. Not
    counted: the gate's transient scores (T·H·n/8 fp32 per chunk, freed before o is allocated) and the
    sort's transient int64 permutation (8 bytes per entry, likewise)."""
    q = torch.empty(B, H, T, D, device="meta", dtype=dtype)
    n = -(-T // block_size)
    S = min(top_k - 1, n - 1) if n else 0
    sched = schedule_for(q, torch.empty(B * H, T, S, device="meta", dtype=torch.int32), block_size)
    nbytes = lambda *ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    return {"sdpa": 4 * nbytes(q), "lse": B * H * T * 4, "delta": B * H * T * 4,
            "schedule": nbytes(sched.sel, sched.ent, sched.tiles, sched.slot_tiles, sched.blk_tiles,
                               sched.tile_first, sched.tile_count)}


def _slot_grid(BH: int, T: int, n: int, block_m: int) -> int:
    """Programs of one slot's history launch: an upper bound on its tiles (≤ one entry per query, and
    ``⌈c / M⌉ ≤ c / M + 1`` per key block); the programs past the slot's real count do nothing."""
    return -(-BH * T // block_m) + BH * n


def _launch_args(q: Tensor) -> dict:
    return dict(UPCAST=K.INTERPRETED, PRECISION=K.dot_precision(q.dtype))


def moba_fwd(q: Tensor, k: Tensor, v: Tensor, sched: MobaSchedule) -> tuple[Tensor, Tensor]:
    """Forward on contiguous ``[B, H, T, D]`` inputs (no checks); returns ``o`` (q's dtype) and
    ``lse [B·H, T]`` fp32. The current blocks first (o, lse), then one launch per slot merging that
    slot's history blocks in place."""
    B, H, T, D = q.shape
    o = torch.empty_like(q)
    lse = torch.empty(B * H, T, device=q.device, dtype=torch.float32)
    if o.numel() == 0:
        return o, lse
    bs, n = sched.block_size, sched.n_blocks
    BM, BN, BD = _tiles(bs, D, q.dtype)
    S = sched.sel.shape[-1]
    qk_scale = _LOG2E / math.sqrt(D)
    n_mt = triton.cdiv(bs, BM)
    _moba_fwd_kernel[(B * H * n * n_mt,)](q, k, v, o, lse, qk_scale, T, D, bs, n, n_mt, BLOCK_M=BM, BLOCK_N=BN,
                                          BLOCK_D=BD, **_launch_args(q))
    for slot in range(S):
        _moba_hist_fwd_kernel[(_slot_grid(B * H, T, n, BM),)](
            q, k, v, sched.ent, sched.tiles, sched.slot_tiles, o, lse, qk_scale, slot, T, D, bs, n, S=S,
            BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, **_launch_args(q))
    return o, lse


def moba_bwd(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor,
             sched: MobaSchedule) -> tuple[Tensor, Tensor, Tensor]:
    """Backward on contiguous inputs (no checks): ``dq, dk, dv`` in q's dtype. dq: the current blocks
    first, then one launch per slot adding that slot's history share in place."""
    B, H, T, D = q.shape
    do = do.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if q.numel() == 0:
        return dq, dk, dv
    bs, n = sched.block_size, sched.n_blocks
    BM, BN, BD = _tiles(bs, D, q.dtype)
    S = sched.sel.shape[-1]
    qk_scale, sm_scale = _LOG2E / math.sqrt(D), 1.0 / math.sqrt(D)
    args = _launch_args(q)
    R = B * H * T
    delta = torch.empty(R, device=q.device, dtype=torch.float32)
    BR = 16 if K.INTERPRETED else 64
    _moba_bwd_preprocess_kernel[(triton.cdiv(R, BR),)](o, do, delta, R, D, BLOCK_R=BR, BLOCK_D=BD)
    n_chunks = triton.cdiv(bs, BN)
    _moba_bwd_dkdv_kernel[(B * H * n * n_chunks,)](q, k, v, do, lse, delta, sched.ent, sched.tiles,
                                                    sched.blk_tiles, sched.tile_first, sched.tile_count, dk, dv,
                                                    qk_scale, sm_scale, T, D, bs, n, n_chunks, S=max(S, 1),
                                                    BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, **_dkdv_launch(BD), **args)
    n_mt = triton.cdiv(bs, BM)
    _moba_bwd_dq_kernel[(B * H * n * n_mt,)](q, k, v, do, lse, delta, dq, qk_scale, sm_scale, T, D, bs, n, n_mt,
                                             BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, **args)
    for slot in range(S):
        _moba_hist_bwd_dq_kernel[(_slot_grid(B * H, T, n, BM),)](
            q, k, v, do, lse, delta, sched.ent, sched.tiles, sched.slot_tiles, dq, qk_scale, sm_scale, slot, T, D,
            bs, n, S=S, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, **args)
    return dq, dk, dv


class MobaFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, sched: MobaSchedule) -> Tensor:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = moba_fwd(q, k, v, sched)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.sched = sched
        return o

    @staticmethod
    def backward(ctx, do: Tensor):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = moba_bwd(do, q, k, v, o, lse, ctx.sched)
        return dq, dk, dv, None


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, hist: Tensor, block_size: int) -> None:
    """Everything the kernels rely on, before launch: they index k, v, hist with q's sizes."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        K.check_tensor(name, t, ndim=4, like=q)
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"k, v: expected the shape of q {tuple(q.shape)}, got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v: expected one dtype, got {q.dtype}/{k.dtype}/{v.dtype}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected a positive int, got {block_size!r}")
    K.check_tensor("hist", hist, ndim=4, dtypes=(torch.int32, torch.int64), like=q)
    if hist.shape[:3] != q.shape[:3]:
        raise ValueError(f"hist: expected shape [B, H, T, S] matching q {tuple(q.shape[:3])}, "
                         f"got {tuple(hist.shape)}")
    if hist.numel():
        lo, hi = torch.stack(torch.aminmax(hist)).tolist()  # one device sync for both
        n_blocks = triton.cdiv(q.shape[2], block_size)
        if lo < -1 or hi >= n_blocks:
            raise ValueError(f"hist: expected block ids in -1..{n_blocks - 1} (-1 = none), got {lo}..{hi}")


def moba_attention_triton(q: Tensor, k: Tensor, v: Tensor, hist: Tensor, block_size: int) -> Tensor:
    """MoBA attention with the Triton kernels for a given selection (differentiable in q, k, v).

    Args: q, k, v ``[B, H, T, D]`` (same shape, dtype fp32/fp16/bf16 and device: CUDA when compiled,
    CPU in the interpreter), ``hist`` the history selection ``[B, H, T, S]`` int32/int64 from
    ``kimi_mini.moba.moba_select`` (block ids in ``-1 .. n_blocks - 1``; ids of the query's own or later
    blocks, and repeats, add nothing: the current block is always attended, causally), ``block_size`` > 0.
    Returns ``[B, H, T, D]`` in q's dtype. ``moba_attention(..., impl="triton")`` gates on the device
    instead (:func:`moba_attention_gated`). Raises ``ValueError`` naming the argument for anything else.
    """
    _check_inputs(q, k, v, hist, block_size)
    B, H, T, _ = q.shape
    sel = hist.reshape(B * H, T, hist.shape[-1]).to(torch.int32)
    # A block that is not wholly in the query's past (its own block, a later one) or listed twice adds no
    # keys to the query's set: drop it, or the schedule would attend it unmasked or twice.
    own = (torch.arange(T, device=q.device, dtype=torch.int32) // block_size)[None, :, None]
    sel = torch.where(sel < own, sel, -1)
    for s in range(1, sel.shape[-1]):
        sel[..., s].masked_fill_((sel[..., s : s + 1] == sel[..., :s]).any(-1), -1)
    return MobaFunction.apply(q, k, v, schedule_for(q, sel, block_size))


def moba_attention_gated(q: Tensor, k: Tensor, v: Tensor, block_size: int, top_k: int) -> Tensor:
    """MoBA attention, gate included, on the device: :func:`gate_select` → :func:`build_schedule` →
    the kernels, without a host sync. Args as :func:`moba_attention_triton`, with ``top_k`` ≥ 1 (the
    current block included) in place of ``hist``. Returns ``[B, H, T, D]`` in q's dtype."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        K.check_tensor(name, t, ndim=4, like=q)
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"k, v: expected the shape of q {tuple(q.shape)}, got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v: expected one dtype, got {q.dtype}/{k.dtype}/{v.dtype}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected a positive int, got {block_size!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k: expected an int >= 1 (it counts the current block), got {top_k!r}")
    sel = gate_select(q, k, block_size, top_k)
    return MobaFunction.apply(q, k, v, schedule_for(q, sel, block_size))


if __name__ == "__main__":  # python -m kimi_mini.kernels.moba: the kernel vs causal SDPA, side by side
    import time

    from kimi_mini.moba import moba_attention

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    sizes = (8192, 32768, 131072) if dev == "cuda" else (512, 1024)
    bs, topk = (512, 3) if dev == "cuda" else (64, 3)

    def clock(fn, repeat=3):
        fn()
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        if dev == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / repeat

    print(f"{'T':>7} {'sdpa ms':>9} {'moba-triton ms':>15} {'speed-up':>9}   "
          f"({dev}, {dtype}, block {bs}, top-{topk})")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for T in sizes:
        q, k, v = (torch.randn(1, 4, T, 64, device=dev, dtype=dtype) for _ in range(3))
        with torch.no_grad():
            t_sdpa = clock(lambda q=q, k=k, v=v: sdpa(q, k, v, is_causal=True))
            t_moba = clock(lambda q=q, k=k, v=v: moba_attention(q, k, v, bs, topk, impl="triton"))
        print(f"{T:>7} {t_sdpa * 1e3:>9.2f} {t_moba * 1e3:>15.2f} {t_sdpa / t_moba:>8.1f}×")
