"""Causal flash attention in Triton that also reports the max attention logit (for QK-Clip).

Papers: FlashAttention-2 (Dao, arXiv 2307.08691) for the algorithm; Kimi K2 (arXiv 2507.20534, §2.1
"MuonClip") for why the max logit matters. QK-Clip needs, per head h,

    S_max^h = max_{b, i, j ≤ i}  (q_i^h · k_j^h) / √d

of the step's forward pass. A flash kernel already keeps that number: the online softmax carries a
running row maximum m_i (to keep exp() from overflowing), and after the last key block m_i *is* the
row's largest scaled logit. So the kernel writes max_i m_i per (batch, head, query block) — no extra
pass, no T×T matrix — and the wrapper reduces over the blocks.

Forward, per query block Q_b and key/value blocks K_j, V_j (causal: j only up to the diagonal):

    S = Q_b K_jᵀ · scale,   m' = max(m, rowmax S),   P = exp(S − m')
    ℓ ← ℓ · exp(m − m') + rowsum P,   O ← O · exp(m − m') + P V_j,   m ← m'
    out = O / ℓ,   LSE = m + log ℓ        (LSE is saved for the backward pass)

Backward (FlashAttention-2, recomputing P from LSE instead of storing it), with Δ_i = dO_i · O_i:

    P = exp(S − LSE),  dV = Pᵀ dO,  dP = dO Vᵀ,  dS = P ⊙ (dP − Δ),  dQ = dS K · scale,  dK = dSᵀ Q · scale

Supports GQA (``H % H_kv == 0``; a key head serves a group of query heads), different q·k and v head
dims (MLA: 192 and 128 in K2), and ``t_q < t_k`` (the queries are the *last* t_q positions, as when
decoding after a KV cache). Block sizes are fixed per platform and architecture (:func:`_fwd_config`):
the Triton CPU interpreter does not run multi-config autotuning.

The causal mask is computed only where it can hide something: a query block folds the key blocks that
end before its first query without any mask (off the band), then the blocks up to its last query with
the mask (on the band), and stops there (causal early stop); the backward kernels split their loops the
same way.

Logits are kept in base 2 inside the kernels (``s₂ = q·k · scale · log₂e``, then ``exp2``), as in
Triton's fused-attention tutorial and ``kernels/moba.py``; the max logit is converted back (× ln 2).
The ``@triton.jit`` helper ``online_softmax_update`` is the online-softmax step, written once so that a
block-sparse kernel (MoBA) visiting a different set of key blocks can call it with its own mask.
In the interpreter (CPU) every load is upcast to fp32: there bf16/fp16 arithmetic is not faithful.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K

__all__ = ["flash_attention", "flash_attention_reference", "flash_attention_fwd", "flash_attention_bwd",
           "online_softmax_update"]


# --------------------------------------------------------------------------------------------------
# Reference: the equations, fp32, O(T²) memory.
# --------------------------------------------------------------------------------------------------
def flash_attention_reference(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None
                              ) -> tuple[Tensor, Tensor]:
    """``softmax(Q Kᵀ · scale + M_causal) V`` and the per-(batch, head) max scaled logit, naively.

    q: ``[B, H, t_q, D_qk]``, k: ``[B, H_kv, t_k, D_qk]``, v: ``[B, H_kv, t_k, D_v]``.
    Returns ``(out [B, H, t_q, D_v] in q.dtype, max_logit [B, H] fp32)``.
    """
    B, H, t_q, D = q.shape
    H_kv, t_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    rep = H // H_kv
    kf = k.float().repeat_interleave(rep, dim=1)  # [B, H, t_k, D_qk]
    vf = v.float().repeat_interleave(rep, dim=1)  # [B, H, t_k, D_v]
    s = (q.float() @ kf.transpose(-1, -2)) * scale  # [B, H, t_q, t_k]
    q_pos = torch.arange(t_q, device=q.device)[:, None] + (t_k - t_q)
    visible = torch.arange(t_k, device=q.device)[None, :] <= q_pos  # [t_q, t_k]
    s = s.masked_fill(~visible, float("-inf"))
    out = (s.softmax(-1) @ vf).to(q.dtype)
    return out, s.amax(dim=(-1, -2))


# --------------------------------------------------------------------------------------------------
# Kernels.
# --------------------------------------------------------------------------------------------------
@triton.jit
def online_softmax_update(s, v, m_i, l_i, acc, PRECISION: tl.constexpr):
    """One online-softmax step: fold the base-2 scores ``s [M, N]`` (fp32, ``q·k · scale · log₂e``,
    invisible pairs set to -inf) and values ``v [N, D_v]`` into the running max ``m_i [M]``, normaliser
    ``l_i [M]`` and unnormalised output ``acc [M, D_v]`` (fp32). Start ``m_i`` at a large negative
    *finite* value (-1e30): a block where a row sees nothing then leaves its state unchanged.
    ``PRECISION``: the ``tl.dot`` input precision (:func:`kimi_mini.kernels.dot_precision`)."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)  # rescales what was accumulated under the old max
    p = tl.exp2(s - m_new[:, None])  # [M, N]; exp2(-inf) = 0 for invisible pairs
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def _fwd_key_blocks(q, k_base, v_base, m_i, l_i, acc, start, end, offs_m, offset, T_K, qk_scale,
                    D_QK: tl.constexpr, D_V: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr,
                    BLOCK_DV: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Fold key blocks ``[start, end)`` into the online softmax. MASKED: the blocks on the diagonal band,
    with the causal mask and the key bound; otherwise blocks that every row of the query block sees
    whole and that lie inside t_k, so no mask is computed."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            col_ok = cols < T_K
        else:
            col_ok = cols >= 0  # all true, folded away
        kt = tl.load(k_base + cols[None, :] * D_QK + offs_dqk[:, None],
                     mask=col_ok[None, :] & (offs_dqk[:, None] < D_QK), other=0.0)  # [Dqk, N]
        v = tl.load(v_base + cols[:, None] * D_V + offs_dv[None, :],
                    mask=col_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)  # [N, Dv]
        if UPCAST:
            kt, v = kt.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # [M, N] fp32, base 2
        if MASKED:
            visible = (cols[None, :] <= offs_m[:, None] + offset) & col_ok[None, :]
            s = tl.where(visible, s, float("-inf"))
        m_i, l_i, acc = online_softmax_update(s, v, m_i, l_i, acc, PRECISION)
    return m_i, l_i, acc


@triton.jit
def _flash_attention_fwd_kernel(
    Q, K, V, O, LSE, MAXL,  # q [B,H,t_q,Dqk], k [B,Hkv,t_k,Dqk], v [B,Hkv,t_k,Dv], o [B,H,t_q,Dv]
    scale, T_Q, T_K, H, N_M_BLOCKS,
    GROUP: tl.constexpr, D_QK: tl.constexpr, D_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    # One 1-D grid of B·H·N_M_BLOCKS programs (grid axis 1 would cap B·H at 65,535).
    pid = tl.program_id(0)
    pid_m = pid % N_M_BLOCKS
    pid_bh = (pid // N_M_BLOCKS).to(tl.int64)  # b * H + h; int64: B·H·T·D may pass 2³¹
    h_kv_flat = (pid_bh // H) * (H // GROUP) + (pid_bh % H) // GROUP  # b * H_kv + h // GROUP
    offset = T_K - T_Q  # query row i sits at absolute position i + offset

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < T_Q

    q = tl.load(Q + pid_bh * T_Q * D_QK + offs_m[:, None] * D_QK + offs_dqk[None, :],
                mask=row_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)  # [M, Dqk]
    if UPCAST:
        q = q.to(tl.float32)
    k_base = K + h_kv_flat * T_K * D_QK
    v_base = V + h_kv_flat * T_K * D_V
    qk_scale = scale * 1.4426950408889634  # × log₂ e: base-2 logits, exp(x) = exp2(x · log₂ e)

    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    # Off the band: key blocks that end at or before the block's first query see no mask (and lie
    # inside t_k). On the band: the rest up to the block's last query, masked. Keys past the block's last
    # query are invisible to every row of the block: the loop stops there (causal early stop).
    band = (pid_m * BLOCK_M + offset + 1) // BLOCK_N * BLOCK_N
    hi = tl.minimum(T_K, (pid_m + 1) * BLOCK_M + offset)
    m_i, l_i, acc = _fwd_key_blocks(q, k_base, v_base, m_i, l_i, acc, 0, band, offs_m, offset, T_K, qk_scale,
                                    D_QK, D_V, BLOCK_N, BLOCK_DQK, BLOCK_DV, False, UPCAST, PRECISION)
    m_i, l_i, acc = _fwd_key_blocks(q, k_base, v_base, m_i, l_i, acc, band, hi, offs_m, offset, T_K, qk_scale,
                                    D_QK, D_V, BLOCK_N, BLOCK_DQK, BLOCK_DV, True, UPCAST, PRECISION)

    out = acc / l_i[:, None]
    tl.store(O + pid_bh * T_Q * D_V + offs_m[:, None] * D_V + offs_dv[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None] & (offs_dv[None, :] < D_V))
    tl.store(LSE + pid_bh * T_Q + offs_m, m_i + tl.log2(l_i), mask=row_ok)  # base 2, for the backward
    # The running max is now each row's largest visible logit: reduce over the block's real rows and
    # convert from base 2 back to the scaled logit q·k·scale.
    block_max = tl.max(tl.where(row_ok, m_i, float("-inf")), 0) * 0.6931471805599453  # × ln 2
    tl.store(MAXL + pid_bh * N_M_BLOCKS + pid_m, block_max)


@triton.jit
def _dkdv_query_blocks(Q, DO, LSE, DELTA, k, v, dk, dv, bh, start, end, cols, col_ok, offset, T_Q, qk_scale,
                       D_QK: tl.constexpr, D_V: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DQK: tl.constexpr,
                       BLOCK_DV: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr,
                       PRECISION: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks ``[start, end)`` of head ``bh``. MASKED: the
    band where some row misses some key (causal mask, key bound); otherwise every row sees every key of
    the block. Rows past t_q load zeros (q, dO) and add nothing either way; keys past t_k are not stored."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_m in range(start, end, BLOCK_M):
        rows = start_m + offs_m
        row_ok = rows < T_Q
        q = tl.load(Q + bh * T_Q * D_QK + rows[:, None] * D_QK + offs_dqk[None, :],
                    mask=row_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)  # [M, Dqk]
        do = tl.load(DO + bh * T_Q * D_V + rows[:, None] * D_V + offs_dv[None, :],
                     mask=row_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)  # [M, Dv]
        if UPCAST:
            q, do = q.to(tl.float32), do.to(tl.float32)
        lse = tl.load(LSE + bh * T_Q + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh * T_Q + rows, mask=row_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [M, N], base 2
        p = tl.exp2(s - lse[:, None])  # P recomputed from the saved LSE
        if MASKED:
            visible = (cols[None, :] <= rows[:, None] + offset) & col_ok[None, :] & row_ok[:, None]
            p = tl.where(visible, p, 0.0)
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # [M, N]
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _dq_key_blocks(q, do, lse, delta, k_base, v_base, dq, start, end, rows, row_ok, offset, T_K, qk_scale,
                   D_QK: tl.constexpr, D_V: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr,
                   BLOCK_DV: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Accumulate dQ of one query block over key blocks ``[start, end)``; MASKED as in the forward."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            col_ok = cols < T_K
        else:
            col_ok = cols >= 0  # all true, folded away
        k = tl.load(k_base + cols[:, None] * D_QK + offs_dqk[None, :],
                    mask=col_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)  # [N, Dqk]
        v = tl.load(v_base + cols[:, None] * D_V + offs_dv[None, :],
                    mask=col_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)  # [N, Dv]
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        if MASKED:
            visible = (cols[None, :] <= rows[:, None] + offset) & col_ok[None, :] & row_ok[:, None]
            p = tl.where(visible, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    return dq


@triton.jit
def _flash_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    scale, T_Q, T_K, H, N_N_BLOCKS,
    GROUP: tl.constexpr, D_QK: tl.constexpr, D_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per (key block, batch·kv-head), on a 1-D grid: accumulate dK, dV over every query
    row (of every query head in the GQA group) that can see the block."""
    pid = tl.program_id(0)
    pid_n = pid % N_N_BLOCKS
    pid_bhkv = (pid // N_N_BLOCKS).to(tl.int64)  # b * H_kv + h_kv
    H_KV = H // GROUP
    b = pid_bhkv // H_KV
    h_kv = pid_bhkv % H_KV
    offset = T_K - T_Q

    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    col_ok = cols < T_K
    k = tl.load(K + pid_bhkv * T_K * D_QK + cols[:, None] * D_QK + offs_dqk[None, :],
                mask=col_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)  # [N, Dqk]
    v = tl.load(V + pid_bhkv * T_K * D_V + cols[:, None] * D_V + offs_dv[None, :],
                mask=col_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)  # [N, Dv]
    if UPCAST:
        k, v = k.to(tl.float32), v.to(tl.float32)
    qk_scale = scale * 1.4426950408889634
    dk = tl.zeros([BLOCK_N, BLOCK_DQK], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)

    # Query rows before (first key − offset) never see this block; query blocks from `full` on see all
    # of it (their first row sees the block's last key), so only [lo, full) is masked.
    lo = tl.maximum(pid_n * BLOCK_N - offset, 0) // BLOCK_M * BLOCK_M
    last_key = pid_n * BLOCK_N + BLOCK_N - 1
    full = lo + tl.cdiv(tl.maximum(last_key - offset - lo, 0), BLOCK_M) * BLOCK_M
    full = tl.minimum(full, T_Q)
    for g in range(GROUP):
        bh = b * H + h_kv * GROUP + g
        dk, dv = _dkdv_query_blocks(Q, DO, LSE, DELTA, k, v, dk, dv, bh, lo, full, cols, col_ok, offset, T_Q,
                                    qk_scale, D_QK, D_V, BLOCK_M, BLOCK_DQK, BLOCK_DV, True, UPCAST, PRECISION)
        dk, dv = _dkdv_query_blocks(Q, DO, LSE, DELTA, k, v, dk, dv, bh, full, T_Q, cols, col_ok, offset, T_Q,
                                    qk_scale, D_QK, D_V, BLOCK_M, BLOCK_DQK, BLOCK_DV, False, UPCAST, PRECISION)

    tl.store(DK + pid_bhkv * T_K * D_QK + cols[:, None] * D_QK + offs_dqk[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=col_ok[:, None] & (offs_dqk[None, :] < D_QK))
    tl.store(DV + pid_bhkv * T_K * D_V + cols[:, None] * D_V + offs_dv[None, :],
             dv.to(DV.dtype.element_ty), mask=col_ok[:, None] & (offs_dv[None, :] < D_V))


@triton.jit
def _flash_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    scale, T_Q, T_K, H, N_M_BLOCKS,
    GROUP: tl.constexpr, D_QK: tl.constexpr, D_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per (query block, batch·head), on a 1-D grid: dQ = Σ_j dS_j K_j · scale over the
    visible keys."""
    pid = tl.program_id(0)
    pid_m = pid % N_M_BLOCKS
    pid_bh = (pid // N_M_BLOCKS).to(tl.int64)
    h_kv_flat = (pid_bh // H) * (H // GROUP) + (pid_bh % H) // GROUP
    offset = T_K - T_Q

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < T_Q
    q = tl.load(Q + pid_bh * T_Q * D_QK + rows[:, None] * D_QK + offs_dqk[None, :],
                mask=row_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    do = tl.load(DO + pid_bh * T_Q * D_V + rows[:, None] * D_V + offs_dv[None, :],
                 mask=row_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    if UPCAST:
        q, do = q.to(tl.float32), do.to(tl.float32)
    lse = tl.load(LSE + pid_bh * T_Q + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + pid_bh * T_Q + rows, mask=row_ok, other=0.0)
    qk_scale = scale * 1.4426950408889634
    k_base = K + h_kv_flat * T_K * D_QK
    v_base = V + h_kv_flat * T_K * D_V
    dq = tl.zeros([BLOCK_M, BLOCK_DQK], dtype=tl.float32)

    band = (pid_m * BLOCK_M + offset + 1) // BLOCK_N * BLOCK_N  # as in the forward
    hi = tl.minimum(T_K, (pid_m + 1) * BLOCK_M + offset)
    dq = _dq_key_blocks(q, do, lse, delta, k_base, v_base, dq, 0, band, rows, row_ok, offset, T_K, qk_scale,
                        D_QK, D_V, BLOCK_N, BLOCK_DQK, BLOCK_DV, False, UPCAST, PRECISION)
    dq = _dq_key_blocks(q, do, lse, delta, k_base, v_base, dq, band, hi, rows, row_ok, offset, T_K, qk_scale,
                        D_QK, D_V, BLOCK_N, BLOCK_DQK, BLOCK_DV, True, UPCAST, PRECISION)

    tl.store(DQ + pid_bh * T_Q * D_QK + rows[:, None] * D_QK + offs_dqk[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None] & (offs_dqk[None, :] < D_QK))


# --------------------------------------------------------------------------------------------------
# Host wrappers.
# --------------------------------------------------------------------------------------------------
def _block_sizes(d_qk: int, d_v: int, dtype: torch.dtype) -> dict:
    """Tile sizes for the three kernels. They depend on the head dims *and* the dtype: the tiles of
    q, k, v, dO live in shared memory and an fp32 tile is twice a bf16 one — MLA's K2 heads
    (192/128 → 256/128 padded) in fp32 at the bf16 tiles needed 245,760 B in the backward, over both
    the H100's 232,448 and the A100's 166,912. ``tests/test_kernels_compile.py`` checks every choice
    against both limits with headroom."""
    bd_qk = max(16, triton.next_power_of_2(d_qk))
    bd_v = max(16, triton.next_power_of_2(d_v))
    if K.INTERPRETED:  # few, big programs: the interpreter pays per program, not per FLOP
        return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_DQK=bd_qk, BLOCK_DV=bd_v)
    wide = max(bd_qk, bd_v) > 128  # MLA's 192-dim q·k heads pad to 256
    if dtype == torch.float32:  # 4-byte tiles (and tf32x3's split operands): small tiles
        return dict(BLOCK_M=32, BLOCK_N=16 if wide else 32, BLOCK_DQK=bd_qk, BLOCK_DV=bd_v)
    return dict(BLOCK_M=64, BLOCK_N=32 if wide else 64, BLOCK_DQK=bd_qk, BLOCK_DV=bd_v)


def _fwd_config(d_qk: int, d_v: int, dtype: torch.dtype) -> tuple[dict, int, int]:
    """(tile sizes, num_warps, num_stages) of the forward, per architecture. On sm_90, 16-bit heads up to
    128 wide take 128-query tiles with 8 warps (two warpgroups of wgmma) and a 3-stage K/V pipeline
    (128 KiB of shared memory at D = 128); elsewhere, and for fp32 and MLA's wide heads, the backward's
    tiles (:func:`_block_sizes`) with 4 warps and 2 stages. The compile test checks each against the
    card's limits and for spills."""
    cfg = _block_sizes(d_qk, d_v, dtype)
    if K.INTERPRETED or dtype == torch.float32 or max(cfg["BLOCK_DQK"], cfg["BLOCK_DV"]) > 128:
        return cfg, 4, 2
    from triton.runtime import driver

    if driver.active.get_current_target().arch >= 90:
        return dict(cfg, BLOCK_M=128, BLOCK_N=64), 8, 3
    # sm_80's mma.sync: a 128-query tile spills (88 registers at D = 128, 8 warps); at D_v = 128 the
    # 64×128 accumulator needs 8 warps (4 spilled 4 B)
    return cfg, (8 if cfg["BLOCK_DV"] >= 128 else 4), 2


def _bwd_configs(d_qk: int, d_v: int, dtype: torch.dtype) -> tuple[tuple[dict, int, int], tuple[dict, int, int]]:
    """(tiles, num_warps, num_stages) of the dK/dV kernel (a BLOCK_N key tile, BLOCK_M query steps) and of
    the dQ kernel (a BLOCK_M query tile, BLOCK_N key steps). The two launches need not share tiles: each
    takes the shape that keeps its fp32 accumulators in registers. 16-bit on a GPU: 8 warps (at 4, the dK
    and dV accumulators spill from D = 64 on sm_80, 128 on sm_90), one stage, except where ptxas spilled
    (``tests/test_kernels_compile.py`` asserts no spills in every 16-bit build):

    * sm_90, MLA's wide heads (192/128 → 256/128): the 64×32 tiles spilled 64 B (dK/dV) and 28 B (dQ);
      dK/dV takes a 64-key tile with 32-query steps (wgmma's M is the key tile), dQ 64 queries × 32 keys
      in 2 stages (170 registers);
    * sm_80, D ≤ 64: the 64×64 tiles spilled 4 B in each kernel; dK/dV takes 32-key tiles, dQ 32-query
      tiles."""
    cfg = _block_sizes(d_qk, d_v, dtype)
    if K.INTERPRETED or dtype == torch.float32:
        return (cfg, 4, 1), (cfg, 4, 1)
    from triton.runtime import driver

    arch = driver.active.get_current_target().arch
    if arch >= 90 and max(cfg["BLOCK_DQK"], cfg["BLOCK_DV"]) > 128:
        return (dict(cfg, BLOCK_M=32, BLOCK_N=64), 8, 1), (dict(cfg, BLOCK_M=64, BLOCK_N=32), 8, 2)
    if arch < 90 and max(cfg["BLOCK_DQK"], cfg["BLOCK_DV"]) <= 64:
        return (dict(cfg, BLOCK_M=64, BLOCK_N=32), 8, 1), (dict(cfg, BLOCK_M=32, BLOCK_N=64), 8, 1)
    return (cfg, 8, 1), (cfg, 8, 1)


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not torch.is_tensor(t) or t.dim() != 4:
            raise ValueError(f"{name}: expected a [B, H, T, D] tensor, got "
                             f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
        K.check_tensor(name, t, like=q)
    B, H, t_q, d_qk = q.shape
    if k.shape[0] != B or k.shape[3] != d_qk or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k, v: expected k [B={B}, H_kv, t_k, {d_qk}] and v [B, H_kv, t_k, D_v] with the "
                         f"same B, H_kv, t_k; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] == 0 or H % k.shape[1]:
        raise ValueError(f"k: expected H_kv dividing H={H} (GQA), got H_kv={k.shape[1]}")
    if t_q > k.shape[2]:
        raise ValueError(f"q: expected t_q <= t_k (queries are the last t_q positions), got t_q={t_q}, "
                         f"t_k={k.shape[2]}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v: expected one dtype, got {q.dtype}/{k.dtype}/{v.dtype}")
    if d_qk == 0 or v.shape[3] == 0:
        raise ValueError(f"q, v: expected head dims >= 1, got D_qk={d_qk}, D_v={v.shape[3]}")


def flash_attention_fwd(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Forward on contiguous inputs (no checks, no autograd): ``out [B, H, t_q, D_v]``, ``lse [B, H, t_q]``
    (base 2, fp32) and the max scaled logit ``[B, H]`` fp32."""
    B, H, t_q, d_qk = q.shape
    H_kv, t_k, d_v = k.shape[1], k.shape[2], v.shape[3]
    cfg, num_warps, num_stages = _fwd_config(d_qk, d_v, q.dtype)
    n_m = triton.cdiv(t_q, cfg["BLOCK_M"])
    out = torch.empty(B, H, t_q, d_v, device=q.device, dtype=q.dtype)
    lse = torch.empty(B, H, t_q, device=q.device, dtype=torch.float32)  # base 2 (log₂ Σ 2^s₂)
    block_max = torch.empty(B, H, max(n_m, 1), device=q.device, dtype=torch.float32).fill_(float("-inf"))
    if out.numel() and t_q:
        _flash_attention_fwd_kernel[(B * H * n_m,)](
            q, k, v, out, lse, block_max, scale, t_q, t_k, H, n_m,
            GROUP=H // H_kv, D_QK=d_qk, D_V=d_v, UPCAST=K.INTERPRETED, PRECISION=K.dot_precision(q.dtype),
            num_warps=num_warps, num_stages=num_stages, **cfg)
    return out, lse, block_max.amax(-1)


def flash_attention_bwd(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, d_out: Tensor, scale: float
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """Backward on contiguous inputs (no checks): ``dq, dk, dv`` in the inputs' dtypes."""
    B, H, t_q, d_qk = q.shape
    H_kv, t_k, d_v = k.shape[1], k.shape[2], v.shape[3]
    delta = (d_out.float() * out.float()).sum(-1)  # [B, H, t_q]: Δ_i = dO_i · O_i
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if t_q == 0 or q.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    (cfg_kv, warps_kv, stages_kv), (cfg_q, warps_q, stages_q) = _bwd_configs(d_qk, d_v, q.dtype)
    common = dict(GROUP=H // H_kv, D_QK=d_qk, D_V=d_v, UPCAST=K.INTERPRETED, PRECISION=K.dot_precision(q.dtype))
    n_n, n_m = triton.cdiv(t_k, cfg_kv["BLOCK_N"]), triton.cdiv(t_q, cfg_q["BLOCK_M"])
    _flash_attention_bwd_dkdv_kernel[(B * H_kv * n_n,)](
        q, k, v, d_out, lse, delta, dk, dv, scale, t_q, t_k, H, n_n, **common, **cfg_kv,
        num_warps=warps_kv, num_stages=stages_kv)
    _flash_attention_bwd_dq_kernel[(B * H * n_m,)](
        q, k, v, d_out, lse, delta, dq, scale, t_q, t_k, H, n_m, **common, **cfg_q,
        num_warps=warps_q, num_stages=stages_q)
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """Differentiable in q, k, v; the max logit is a statistic (no gradient)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse, max_logit = flash_attention_fwd(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        ctx.mark_non_differentiable(max_logit)
        return out, max_logit

    @staticmethod
    def backward(ctx, d_out: Tensor, _d_max_logit: Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_bwd(q, k, v, out, lse, d_out.contiguous(), ctx.scale)
        return dq, dk, dv, None


def flash_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Causal attention with the max scaled logit, in one Triton pass (differentiable in q, k, v).

    Args:
        q: ``[B, H, t_q, D_qk]`` — the last t_q positions (t_q = t_k in training).
        k: ``[B, H_kv, t_k, D_qk]`` with ``H % H_kv == 0`` (GQA).
        v: ``[B, H_kv, t_k, D_v]``.
        scale: softmax scale; default ``1/√D_qk``.
        All three share one dtype (fp32, fp16, bf16; bf16 only on a GPU) and device (CUDA when the
        kernels are compiled, CPU in the interpreter). fp32 inputs are multiplied in true fp32
        (:func:`kimi_mini.kernels.dot_precision`), bf16/fp16 on the tensor cores.
    Returns:
        ``out [B, H, t_q, D_v]`` in q's dtype and ``max_logit [B, H]`` fp32: the largest
        ``scale · q_i·k_j`` over the causal pairs (j ≤ i) of each (batch, head) (-inf when t_q = 0).
    """
    _check_inputs(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale < math.inf):
        raise ValueError(f"scale: expected a positive finite float, got {scale!r}")
    return FlashAttention.apply(q, k, v, float(scale))


if __name__ == "__main__":  # benchmark: kimi_mini.kernels.flash_attention vs SDPA (GPU)
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (the tests run the kernel in the interpreter)")
    import torch.nn.functional as F

    def bench(T: int, B: int = 4, H: int = 16, D: int = 128) -> list[float]:
        """Milliseconds: ours fwd, SDPA fwd, ours fwd+bwd, SDPA fwd+bwd (bf16, causal)."""
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        do = torch.randn_like(q)
        fns = (lambda: flash_attention(q, k, v)[0],
               lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        fwd = [triton.testing.do_bench(fn) for fn in fns]
        bwd = [triton.testing.do_bench(lambda fn=fn: fn().backward(do)) for fn in fns]
        return fwd + bwd

    print(f"{'T':>6} {'fwd ms':>9} {'sdpa fwd ms':>12} {'fwd+bwd ms':>11} {'sdpa fwd+bwd':>13}")
    for T in (512, 1024, 2048, 4096):
        r = bench(T)
        print(f"{T:>6} {r[0]:>9.3f} {r[1]:>12.3f} {r[2]:>11.3f} {r[3]:>13.3f}")
