"""MoBA attention in Triton: flash-style forward and backward (dq, dk, dv) over the selected blocks.

Paper: MoBA: Mixture of Block Attention for Long-Context LLMs (Lu et al., arXiv 2502.13189). Per head,
with key blocks of ``BS`` positions and ``I_t`` the blocks query t selected (its own block plus the
gate's top-(k−1) history blocks, computed by ``kimi_mini.moba.moba_select``)::

    s_tj = q_t · k_j / √D        for j ∈ ∪_{i ∈ I_t} block i, j ≤ t        (masked otherwise)
    lse_t = log Σ_j exp(s_tj),   o_t = Σ_j exp(s_tj − lse_t) v_j                         (forward)
    P_tj = exp(s_tj − lse_t),    δ_t = do_t · o_t,   dS = P ⊙ (dO Vᵀ − δ)
    dQ = dS K / √D,   dK = dSᵀ Q / √D,   dV = Pᵀ dO                                      (backward)

Design: *per-query selection honoured by masking* (FlashAttention-2's loop structure), not the
authors' per-key-block query gathering. A program owns a tile of ``BLOCK_M`` consecutive queries and
walks the key blocks up to its last query's block; a key block no query of the tile selected is
skipped outright, and inside a visited block the queries that did not select it are masked. Why this
choice:

- one pass produces o and the exact lse — no partial outputs per (query, block) pair to store and
  merge afterwards (the varlen version keeps k−1 extra copies of the output: the source of its
  reported 3× memory over flash attention);
- no sort, no varlen metadata, no atomics: dK/dV come from a second kernel in which each program owns
  a key tile and walks the query tiles that may select its block, so the backward is deterministic;
- the cost: a visited block is paid in full for the whole tile, so the work is the *union* of the
  tile's selections. Neighbouring queries of a trained model tend to pick the same blocks (the gate
  scores are smooth in t), and a small ``BLOCK_M`` bounds the waste. The PyTorch path
  (``kimi_mini.moba``, ``impl="torch"``) shows the other, gathering design.

The selection enters as ``SEL [B·H, T, S1]`` int32: each query's block ids (current block included),
padded with −1 to a power of two. On a GPU, bf16/fp16 tiles go to the tensor cores as loaded (fp32
accumulation); only in the CPU interpreter are loads upcast to fp32 (``UPCAST``: it computes bf16 wrongly
otherwise) — upcasting on the GPU would double the tiles' shared memory and spill. fp32 inputs use the
``tl.dot`` precision of :func:`kimi_mini.kernels.dot_precision`. Softmax statistics are fp32, in base 2
(``exp2``) as in Triton's tutorial. Every kernel runs on a 1-D grid (CUDA caps grid axis 1 at 65,535;
B·H may exceed it).

Order, as in Triton's tutorials: reference (``kimi_mini.moba``, ``impl="naive"``), kernels, host
wrapper + ``autograd.Function``, check (``tests/test_moba_kernel.py``), benchmark (``__main__``).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K
from kimi_mini.kernels.flash_attention import online_softmax_update

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


@triton.jit
def _moba_fwd_kernel(Q, K, V, SEL, O, LSE, qk_scale, T, D, BS, N_M,
                     S1: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    pid_m = tl.program_id(0) % N_M
    bh = tl.program_id(0) // N_M
    base = bh.to(tl.int64) * T * D  # q, k, v, o are contiguous [B·H, T, D]
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    d_ok = offs_d < D
    q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :],
                other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    sel = tl.load(SEL + bh.to(tl.int64) * T * S1 + offs_m[:, None] * S1 + tl.arange(0, S1)[None, :],
                  mask=m_ok[:, None], other=-1)  # [BLOCK_M, S1] chosen block ids
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite: a fully masked chunk leaves the state alone
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    last_blk = (tl.minimum(pid_m * BLOCK_M + BLOCK_M, T) - 1) // BS
    for blk in range(0, last_blk + 1):
        hit = tl.sum((sel == blk).to(tl.int32), axis=1) > 0  # [BLOCK_M] which queries chose blk
        if tl.max(hit.to(tl.int32), axis=0) > 0:  # nobody in the tile chose it: skip the block
            for n0 in range(0, BS, BLOCK_N):
                in_blk = n0 + tl.arange(0, BLOCK_N)
                offs_n = blk * BS + in_blk
                n_ok = (in_blk < BS) & (offs_n < T)
                kv_mask = n_ok[:, None] & d_ok[None, :]
                k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
                v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
                if UPCAST:
                    k, v = k.to(tl.float32), v.to(tl.float32)
                s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N], base 2
                ok = hit[:, None] & n_ok[None, :] & (offs_n[None, :] <= offs_m[:, None])
                s = tl.where(ok, s, float("-inf"))
                m_i, l_i, acc = online_softmax_update(s, v, m_i, l_i, acc, PRECISION)  # shared with flash
    l_safe = tl.where(l_i > 0, l_i, 1.0)  # rows past T only
    o = acc / l_safe[:, None]
    tl.store(O + base + offs_m[:, None] * D + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=m_ok[:, None] & d_ok[None, :])
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, (m_i + tl.log2(l_safe)) * 0.6931471805599453, mask=m_ok)


@triton.jit
def _moba_bwd_dq_kernel(Q, K, V, DO, SEL, LSE, DELTA, DQ, qk_scale, sm_scale, T, D, BS, N_M,
                        S1: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    pid_m = tl.program_id(0) % N_M
    bh = tl.program_id(0) // N_M
    base = bh.to(tl.int64) * T * D
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    d_ok = offs_d < D
    md_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
    do = tl.load(DO + base + offs_m[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
    if UPCAST:
        q, do = q.to(tl.float32), do.to(tl.float32)
    sel = tl.load(SEL + bh.to(tl.int64) * T * S1 + offs_m[:, None] * S1 + tl.arange(0, S1)[None, :],
                  mask=m_ok[:, None], other=-1)
    lse2 = tl.load(LSE + bh.to(tl.int64) * T + offs_m, mask=m_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + bh.to(tl.int64) * T + offs_m, mask=m_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    last_blk = (tl.minimum(pid_m * BLOCK_M + BLOCK_M, T) - 1) // BS
    for blk in range(0, last_blk + 1):
        hit = tl.sum((sel == blk).to(tl.int32), axis=1) > 0
        if tl.max(hit.to(tl.int32), axis=0) > 0:
            for n0 in range(0, BS, BLOCK_N):
                in_blk = n0 + tl.arange(0, BLOCK_N)
                offs_n = blk * BS + in_blk
                n_ok = (in_blk < BS) & (offs_n < T)
                kv_mask = n_ok[:, None] & d_ok[None, :]
                k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
                v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
                if UPCAST:
                    k, v = k.to(tl.float32), v.to(tl.float32)
                ok = hit[:, None] & n_ok[None, :] & (offs_n[None, :] <= offs_m[:, None])
                s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
                p = tl.exp2(s * qk_scale - lse2[:, None])  # with the final lse
                p = tl.where(ok, p, 0.0)
                ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
                dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    tl.store(DQ + base + offs_m[:, None] * D + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty),
             mask=md_mask)


@triton.jit
def _moba_bwd_dkdv_kernel(Q, K, V, DO, SEL, LSE, DELTA, DK, DV, qk_scale, sm_scale, T, D, BS, N_CHUNKS,
                          N_PID, S1: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0) % N_PID  # (key block, chunk of BLOCK_N keys inside it)
    bh = tl.program_id(0) // N_PID
    blk = pid // N_CHUNKS
    in_blk = (pid % N_CHUNKS) * BLOCK_N + tl.arange(0, BLOCK_N)
    base = bh.to(tl.int64) * T * D
    offs_n = blk * BS + in_blk
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = (in_blk < BS) & (offs_n < T)
    d_ok = offs_d < D
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
    if UPCAST:
        k, v = k.to(tl.float32), v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    # Queries before this block can never select it; walk the rest, tile by tile.
    for m0 in range(blk * BS, T, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < T
        sel = tl.load(SEL + bh.to(tl.int64) * T * S1 + offs_m[:, None] * S1 + tl.arange(0, S1)[None, :],
                      mask=m_ok[:, None], other=-1)
        hit = tl.sum((sel == blk).to(tl.int32), axis=1) > 0  # [BLOCK_M]
        if tl.max(hit.to(tl.int32), axis=0) > 0:
            md_mask = m_ok[:, None] & d_ok[None, :]
            q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
            do = tl.load(DO + base + offs_m[:, None] * D + offs_d[None, :], mask=md_mask, other=0.0)
            if UPCAST:
                q, do = q.to(tl.float32), do.to(tl.float32)
            lse2 = tl.load(LSE + bh.to(tl.int64) * T + offs_m, mask=m_ok, other=0.0) * 1.4426950408889634
            delta = tl.load(DELTA + bh.to(tl.int64) * T + offs_m, mask=m_ok, other=0.0)
            ok = hit[:, None] & n_ok[None, :] & (offs_n[None, :] <= offs_m[:, None])
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
            p = tl.exp2(s * qk_scale - lse2[:, None])  # [BLOCK_M, BLOCK_N]
            p = tl.where(ok, p, 0.0)
            dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
            ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
            dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    tl.store(DK + base + offs_n[:, None] * D + offs_d[None, :], (dk * sm_scale).to(DK.dtype.element_ty),
             mask=kv_mask)
    tl.store(DV + base + offs_n[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


def selection_table(hist: Tensor, block_size: int) -> Tensor:
    """``hist [B, H, T, S]`` (history block ids, −1 = none) → ``SEL [B·H, T, S1]`` int32 with the
    current block appended and −1 padding up to a power of two ``S1``."""
    B, H, T, S = hist.shape
    cur = (torch.arange(T, device=hist.device) // block_size).expand(B, H, T)[..., None]
    sel = torch.cat([hist, cur], dim=-1)
    S1 = max(2, triton.next_power_of_2(S + 1))
    if S1 > S + 1:
        sel = torch.nn.functional.pad(sel, (0, S1 - S - 1), value=-1)
    return sel.reshape(B * H, T, S1).to(torch.int32).contiguous()


def _tiles(block_size: int, D: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D). fp32 tiles are half as tall: 4-byte tiles in shared memory."""
    block_d = max(16, triton.next_power_of_2(D))
    block_n = max(16, min(64, triton.next_power_of_2(block_size)))
    if K.INTERPRETED:  # the interpreter pays per program and per op: few, big tiles
        return 32, block_n, block_d
    if dtype == torch.float32:
        return 32, min(block_n, 32), block_d
    return 64, block_n, block_d


def _launch_args(q: Tensor) -> dict:
    return dict(UPCAST=K.INTERPRETED, PRECISION=K.dot_precision(q.dtype))


def moba_fwd(q: Tensor, k: Tensor, v: Tensor, sel: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """Forward on contiguous ``[B, H, T, D]`` inputs (no checks); returns ``o`` (q's dtype) and
    ``lse [B·H, T]`` fp32."""
    B, H, T, D = q.shape
    o = torch.empty_like(q)
    lse = torch.empty(B * H, T, device=q.device, dtype=torch.float32)
    if o.numel() == 0:
        return o, lse
    BM, BN, BD = _tiles(block_size, D, q.dtype)
    n_m = triton.cdiv(T, BM)
    _moba_fwd_kernel[(B * H * n_m,)](q, k, v, sel, o, lse, _LOG2E / math.sqrt(D), T, D, block_size, n_m,
                                     S1=sel.shape[-1], BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, **_launch_args(q))
    return o, lse


def moba_bwd(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, sel: Tensor,
             block_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Backward on contiguous inputs (no checks): ``dq, dk, dv`` in q's dtype."""
    B, H, T, D = q.shape
    do = do.contiguous()
    delta = (do.float() * o.float()).sum(-1).reshape(B * H, T)  # δ_t = do_t · o_t
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if q.numel() == 0:
        return dq, dk, dv
    BM, BN, BD = _tiles(block_size, D, q.dtype)
    qk_scale, sm_scale = _LOG2E / math.sqrt(D), 1.0 / math.sqrt(D)
    S1 = sel.shape[-1]
    n_m = triton.cdiv(T, BM)
    _moba_bwd_dq_kernel[(B * H * n_m,)](q, k, v, do, sel, lse, delta, dq, qk_scale, sm_scale, T, D, block_size,
                                        n_m, S1=S1, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, **_launch_args(q))
    n_chunks = triton.cdiv(block_size, BN)
    n_pid = triton.cdiv(T, block_size) * n_chunks
    _moba_bwd_dkdv_kernel[(B * H * n_pid,)](q, k, v, do, sel, lse, delta, dk, dv, qk_scale, sm_scale, T, D,
                                            block_size, n_chunks, n_pid, S1=S1, BLOCK_M=BM, BLOCK_N=BN,
                                            BLOCK_D=BD, **_launch_args(q))
    return dq, dk, dv


class MobaFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, sel: Tensor, block_size: int) -> Tensor:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = moba_fwd(q, k, v, sel, block_size)
        ctx.save_for_backward(q, k, v, o, lse, sel)
        ctx.block_size = block_size
        return o

    @staticmethod
    def backward(ctx, do: Tensor):
        q, k, v, o, lse, sel = ctx.saved_tensors
        dq, dk, dv = moba_bwd(do, q, k, v, o, lse, sel, ctx.block_size)
        return dq, dk, dv, None, None


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
    """MoBA attention with the Triton kernels (differentiable in q, k, v).

    Args: q, k, v ``[B, H, T, D]`` (same shape, dtype fp32/fp16/bf16 and device: CUDA when compiled,
    CPU in the interpreter), ``hist`` the history selection ``[B, H, T, S]`` int32/int64 from
    ``kimi_mini.moba.moba_select`` (block ids in ``-1 .. n_blocks - 1``), ``block_size`` > 0.
    Returns ``[B, H, T, D]`` in q's dtype. Use ``kimi_mini.moba.moba_attention(..., impl="triton")``.
    Raises ``ValueError`` naming the argument for anything else.
    """
    _check_inputs(q, k, v, hist, block_size)
    return MobaFunction.apply(q, k, v, selection_table(hist, block_size), block_size)


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
