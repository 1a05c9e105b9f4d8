"""Grouped GEMM for Mixture-of-Experts layers (Kimi K2, arXiv 2507.20534; the router of DeepSeek-V3).

Each of the N tokens is sent to k experts, giving P = N·k *token–expert pairs*; pair p = t·k + j is token t's
j-th choice. Running expert e on its pairs is one small matmul per expert, with ragged, data-dependent
row counts. In the style of vLLM's ``fused_moe`` and scattermoe we turn it into *one* kernel launch:

1. **Align** (:func:`align_to_tiles`, device ops only — no host sync): sort the pairs by expert and pad
   each expert's run to a multiple of the tile height ``BLOCK_M``. Row r of the padded layout holds pair
   ``sorted_pair[r]`` (or the sentinel P on padding rows), and every ``BLOCK_M``-row tile belongs to one
   expert ``tile_expert[r // BLOCK_M]``. Experts with no pair get no tile. The number of tiles depends on
   the routing, so the layout is sized by its upper bound ``⌊(P + min(E, P)·(BLOCK_M − 1)) / BLOCK_M⌋``
   (known without reading the routing back); the tiles past the real ones have expert ``E`` and run
   zero K-iterations (their rows are written as zeros).
2. **Grouped GEMM** (:func:`_grouped_gemm_fwd_kernel`): a 1-D grid in *grouped* order — ``GROUP_M`` row
   tiles × every column tile, row tile fastest — so a row tile's gathered activations and an expert's
   weight tile are both reused from L2 across neighbouring programs. Program (m, n) loads its tile's
   expert id, gathers its ``BLOCK_M`` input rows by index, and computes
   ``Y[rows, n-block] = X[rows] @ W[e][:, n-block]`` (``+ X₂[rows] @ W₂[e][:, n-block]`` for the
   backward of the fused gate/up projection), optionally multiplied by the routing weight of each pair,
   and stores (scatters) the rows. :func:`_swiglu_gemm_fwd_kernel` is the fused gate/up projection: both
   ``X W₁[e]`` and ``X W₃[e]`` from one gathered X tile, ``silu(g) ⊙ u`` in the epilogue.
   Tiles, warps and stages come from a per-architecture table (:func:`gemm_config`, compiled ahead of
   time by the compile test); on a CUDA GPU each wrapper also times the table's configuration against
   a few neighbours once per shape and keeps the fastest (:func:`tuning_candidates`,
   :mod:`kimi_mini.kernels.tune`: the token-row mode's atomic adds are timed into a scratch output).

Input rows are addressed in one of three *row spaces* (``ROWS_*``): the padded sorted layout itself
(row r), pair order (row p), or token order (row p // k, the gather that avoids copying x k times).
Output rows go to the sorted layout, to pair order, or to token order: there each of a token's k pair
rows is added into the token's fp32 row with an atomic add — no ``[N·k, N]`` pair-order buffer and no
``.sum`` over k (the layer's output and the input gradient use it). The order of those k adds is not
fixed, so token-order results may differ between runs in the last bits (fp32 accumulation, then the
input dtype); the sorted and pair layouts are deterministic.

Backward of ``Y = diag(w) · X W`` (per expert): ``dX = diag(w) · dY Wᵀ`` (the same kernel with W's
strides swapped), ``dW = Xᵀ diag(w) dY`` (:func:`_grouped_gemm_dw_kernel`: one program per expert and
(K, N) tile, looping over that expert's row tiles), and ``dw_p = ⟨dY_p Wᵀ, X_p⟩``.

:func:`moe_swiglu_experts` chains them into the routed SwiGLU experts
``Σ_j w_j · W₂[e_j]ᵀ (silu(W₁[e_j]ᵀ x) ⊙ W₃[e_j]ᵀ x)`` used by ``MoE(impl="triton")``.

In the CPU interpreter (``TRITON_INTERPRET=1``) tiles are upcast to fp32 right after loading (its bf16
arithmetic is wrong otherwise); test fp32 and fp16 there, bf16 on a GPU. Run ``python -m
kimi_mini.kernels.moe`` for the benchmark against the PyTorch path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K
from kimi_mini.kernels import tune

__all__ = ["ExpertTiles", "align_to_tiles", "max_tiles", "gemm_config", "grouped_gemm", "grouped_gemm_dw",
           "swiglu_gemm", "GroupedGemm", "SwiGLUGroupedGemm", "moe_swiglu_experts", "ROWS_SORTED", "ROWS_PAIR",
           "ROWS_TOKEN"]

ROWS_SORTED, ROWS_PAIR, ROWS_TOKEN = 0, 1, 2
_ROW_NAMES = {ROWS_SORTED: "sorted", ROWS_PAIR: "pair", ROWS_TOKEN: "token"}


def _default_blocks(device: torch.device | None = None) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) of the forward GEMM for bf16 on this machine (the interpreter's are
    big-but-cheap: it is slow per program, not per element)."""
    cfg = gemm_config(torch.bfloat16)
    return 64 if not K.INTERPRETED else 16, cfg["BLOCK_N"], cfg["BLOCK_K"]


# Tiles, warps and stages per architecture (compute capability major), for 16-bit and fp32 inputs. The
# forward's dot is [BLOCK_M = 64, BLOCK_K] @ [BLOCK_K, BLOCK_N]; the dW kernel's is
# [DW_BLOCK_K, BLOCK_M]ᵀ-side @ [BLOCK_M, DW_BLOCK_N], so DW_BLOCK_K is the MMA's M: ≥ 64 for wgmma on
# sm_90. fp32 (tf32x3: three MMAs and 4-byte tiles) keeps smaller tiles and fewer stages. Shared memory per
# stage (16-bit, fused gate/up: one X tile and two W tiles) on sm_90: (64·64 + 2·64·128)·2 B = 40 KiB. The
# fused gate/up kernel holds two fp32 accumulators: 8 warps (4 warps need 254 registers a thread at 64×128).
# Every entry is compiled ahead of time by tests/test_kernels_compile.py (kimi_mini.kernels.aot).
_GPU_CONFIGS = {
    (9, 16): dict(BLOCK_N=128, BLOCK_K=64, GROUP_M=8, DW_BLOCK_K=64, DW_BLOCK_N=128, num_warps=4, num_stages=4,
                  swiglu_warps=8),
    (9, 32): dict(BLOCK_N=64, BLOCK_K=32, GROUP_M=8, DW_BLOCK_K=64, DW_BLOCK_N=64, num_warps=4, num_stages=2,
                  swiglu_warps=8),
    (8, 16): dict(BLOCK_N=128, BLOCK_K=32, GROUP_M=8, DW_BLOCK_K=64, DW_BLOCK_N=128, num_warps=4, num_stages=3,
                  swiglu_warps=8),
    (8, 32): dict(BLOCK_N=64, BLOCK_K=32, GROUP_M=8, DW_BLOCK_K=32, DW_BLOCK_N=64, num_warps=4, num_stages=2,
                  swiglu_warps=8),
}
_INTERPRETER_CONFIG = dict(BLOCK_N=64, BLOCK_K=64, GROUP_M=4, DW_BLOCK_K=64, DW_BLOCK_N=64, num_warps=4,
                           num_stages=1, swiglu_warps=4)


def gemm_config(dtype: torch.dtype) -> dict:
    """The tile/warp/stage configuration for ``dtype`` on the current target: the compiling GPU's compute
    capability (the stand-in target under :func:`kimi_mini.kernels.aot.compile_only`), sm_90's table above
    sm_90, sm_80's below sm_80; one fixed configuration in the interpreter."""
    if K.INTERPRETED:
        return dict(_INTERPRETER_CONFIG)
    from triton.runtime import driver

    major = min(max(driver.active.get_current_target().arch // 10, 8), 9)
    return dict(_GPU_CONFIGS[(major, 32 if dtype == torch.float32 else 16)])


def _precision(dtype: torch.dtype) -> str:
    """fp32 inputs keep fp32 accuracy in tl.dot (see :func:`kimi_mini.kernels.dot_precision`)."""
    return K.dot_precision(dtype)


def tuning_candidates(cfg: dict, kind: str) -> list[dict]:
    """Launch configurations :func:`kimi_mini.kernels.tune.pick` times on a GPU for one wrapper
    (``kind``: "fwd", "swiglu" or "dw"): the table's ``cfg`` first, then one change each — half the N
    tile, one pipeline stage fewer, one more, twice the warps. Only the first is compiled ahead of time."""
    if kind not in ("fwd", "swiglu", "dw"):
        raise ValueError(f"kind: expected 'fwd', 'swiglu' or 'dw', got {kind!r}")
    n_key, w_key = ("DW_BLOCK_N" if kind == "dw" else "BLOCK_N"), ("swiglu_warps" if kind == "swiglu" else "num_warps")
    out = [dict(cfg)]
    for change in ({n_key: max(32, cfg[n_key] // 2)}, {"num_stages": max(1, cfg["num_stages"] - 1)},
                   {"num_stages": cfg["num_stages"] + 1}, {w_key: min(8, cfg[w_key] * 2)}):
        cand = {**cfg, **change}
        if cand not in out:
            out.append(cand)
    return out


def _tuned(kind: str, cfg: dict, key: tuple, run, *tensors) -> dict:
    """``cfg`` in the interpreter, in compile-only builds and on the CPU; on a GPU the fastest of
    :func:`tuning_candidates`, measured once per ``key`` (``run(config)`` launches into scratch)."""
    if not tune.can_time(*tensors):
        return cfg
    return tune.pick((kind, tensors[0].device.index, *key), tuning_candidates(cfg, kind), run)


# ------------------------------------------------------------------------------------ alignment
@dataclass
class ExpertTiles:
    """The routing plan shared by every grouped GEMM of one MoE forward/backward.

    sorted_pair: ``[M_pad]`` int32, the pair id at each row of the padded expert-sorted layout
        (``n_pairs`` on padding rows). tile_expert: ``[M_pad / BLOCK_M]`` int32, the expert of each row tile
        (``n_experts`` on the tiles past the real ones: M_pad is an upper bound, see :func:`max_tiles`).
    expert_tile_start, expert_tile_count: ``[E]`` int32, each expert's first tile and number of tiles.
    """

    sorted_pair: Tensor
    tile_expert: Tensor
    expert_tile_start: Tensor
    expert_tile_count: Tensor
    n_tokens: int
    top_k: int
    n_experts: int
    block_m: int

    @property
    def n_pairs(self) -> int:
        return self.n_tokens * self.top_k

    @property
    def n_tiles(self) -> int:
        return self.tile_expert.numel()

    @property
    def padded_rows(self) -> int:
        return self.sorted_pair.numel()

    def n_rows(self, rows: int) -> int:
        return {ROWS_SORTED: self.padded_rows, ROWS_PAIR: self.n_pairs, ROWS_TOKEN: self.n_tokens}[rows]


def align_to_tiles(indices: Tensor, n_experts: int, block_m: int) -> ExpertTiles:
    """Sort the token–expert pairs of ``indices [N, k]`` by expert and pad each expert to ``block_m`` rows.

    Device ops only: no host sync. Expert ids out of range raise a ``ValueError`` on the CPU and a device-side
    assertion on CUDA (``torch._assert_async``; a host-side check would wait for the GPU)."""
    if indices.dim() != 2:
        raise ValueError(f"indices: expected [N, k], got {tuple(indices.shape)}")
    if not isinstance(block_m, int) or block_m < 1:
        raise ValueError(f"block_m: expected a positive int, got {block_m!r}")
    if not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"n_experts: expected a positive int, got {n_experts!r}")
    N, k = indices.shape
    dev = indices.device
    flat = indices.reshape(-1).long()  # [P]
    P = flat.numel()
    if P and dev.type == "cuda":  # checked on the device: a host-side check would wait for the GPU
        torch._assert_async(((flat >= 0) & (flat < n_experts)).all(),
                            f"indices: expected expert ids in 0..{n_experts - 1}")
    elif P and dev.type != "meta":
        lo, hi = torch.stack(torch.aminmax(flat)).tolist()
        if lo < 0 or hi >= n_experts:
            raise ValueError(f"indices: expected expert ids in 0..{n_experts - 1}, got {lo}..{hi}")
    counts = torch.zeros(n_experts, dtype=torch.long, device=dev).scatter_add_(0, flat, torch.ones_like(flat))
    tiles = (counts + block_m - 1) // block_m  # [E]
    tile_end = torch.cumsum(tiles, 0)
    tile_start = tile_end - tiles
    order = flat.argsort(stable=True)  # pair ids grouped by expert
    expert_sorted = flat[order]
    rank = torch.arange(P, device=dev) - (torch.cumsum(counts, 0) - counts)[expert_sorted]
    row = tile_start[expert_sorted] * block_m + rank  # where each sorted pair lands in the padded layout
    n_tiles = max_tiles(P, n_experts, block_m)  # from the sizes alone: no sync
    sorted_pair = torch.full((n_tiles * block_m,), P, dtype=torch.int32, device=dev)
    sorted_pair[row] = order.to(torch.int32)
    # tile t belongs to the expert whose [tile_start, tile_end) holds it; E past the last real tile
    tile_expert = torch.searchsorted(tile_end, torch.arange(n_tiles, device=dev), right=True).to(torch.int32)
    return ExpertTiles(sorted_pair, tile_expert, tile_start.to(torch.int32), tiles.to(torch.int32),
                       N, k, n_experts, block_m)


def max_tiles(n_pairs: int, n_experts: int, block_m: int) -> int:
    """Upper bound of the row tiles of any routing of ``n_pairs`` pairs to ``n_experts`` experts: each of
    the at most min(E, P) experts with a pair pads its run by at most ``block_m − 1`` rows."""
    return (n_pairs + min(n_experts, n_pairs) * (block_m - 1)) // block_m


# -------------------------------------------------------------------------------------- kernels
@triton.jit
def _row_index(offs, pair, TOP_K: tl.constexpr, ROWS: tl.constexpr):
    """Row of a tensor addressed in row space ROWS for padded-layout rows ``offs`` holding ``pair``."""
    if ROWS == 0:
        row = offs
    elif ROWS == 1:
        row = pair
    else:
        row = pair // TOP_K
    return row.to(tl.int64)


@triton.jit
def _grouped_tile(pid, n_tiles_m, n_tiles_n, GROUP_M: tl.constexpr):
    """(row tile, column tile) of program ``pid`` in grouped order: the programs walk GROUP_M row tiles
    (row fastest) for one column tile, then the same row tiles for the next column tile, … — so the
    GROUP_M gathered X tiles and the column's weight tile are each re-read from L2, not from memory."""
    per_group = GROUP_M * n_tiles_n
    first_m = (pid // per_group) * GROUP_M
    rows_here = tl.minimum(n_tiles_m - first_m, GROUP_M)  # the last group may be short
    local = pid % per_group
    return first_m + local % rows_here, local // rows_here


@triton.jit
def _grouped_gemm_fwd_kernel(
    x_ptr, w_ptr, x2_ptr, w2_ptr, y_ptr, route_w_ptr, sorted_pair_ptr, tile_expert_ptr,
    n_pairs, n_experts, n_tiles, K, N,
    stride_xm, stride_xk, stride_we, stride_wk, stride_wn, stride_ym, stride_yn,
    TOP_K: tl.constexpr, X_ROWS: tl.constexpr, Y_ROWS: tl.constexpr, MUL_WEIGHT: tl.constexpr,
    HAS_SECOND: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Y[y_row(r)] = (w_pair(r) ·) (X[x_row(r)] @ W[e] (+ X₂[x_row(r)] @ W₂[e])) for the BLOCK_M padded rows
    r of one tile. X₂/W₂ (HAS_SECOND) share X/W's strides."""
    pid_m, pid_n = _grouped_tile(tl.program_id(0), n_tiles, tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_pair_ptr + offs_m)  # [BM]; n_pairs marks padding
    valid = pair < n_pairs
    expert = tl.load(tile_expert_ptr + pid_m)
    k_end = tl.where(expert < n_experts, K, 0)  # a tile past the real ones: no K-iteration, zeros out
    expert = tl.minimum(expert, n_experts - 1).to(tl.int64)
    x_row = _row_index(offs_m, pair, TOP_K, X_ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x_off = x_row[:, None] * stride_xm + offs_k[None, :] * stride_xk
        w_off = expert * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
        a = tl.load(x_ptr + x_off, mask=valid[:, None] & mask_k[None, :], other=0.0)  # [BM, BK] gathered
        b = tl.load(w_ptr + w_off, mask=mask_k[:, None] & mask_n[None, :], other=0.0)  # [BK, BN] of expert e
        if UPCAST:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if HAS_SECOND:
            a2 = tl.load(x2_ptr + x_off, mask=valid[:, None] & mask_k[None, :], other=0.0)
            b2 = tl.load(w2_ptr + w_off, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            if UPCAST:
                a2, b2 = a2.to(tl.float32), b2.to(tl.float32)
            acc = tl.dot(a2, b2, acc, input_precision=PRECISION)
    if MUL_WEIGHT:
        rw = tl.load(route_w_ptr + pair, mask=valid, other=0.0).to(tl.float32)
        acc = acc * rw[:, None]
    y_row = _row_index(offs_m, pair, TOP_K, Y_ROWS)
    if Y_ROWS == 0:  # padding rows of a sorted-layout output are written as zeros: later kernels read them
        row_ok = offs_m >= 0
    else:
        row_ok = valid
    y_off = y_row[:, None] * stride_ym + offs_n[None, :] * stride_yn
    if Y_ROWS == 2:  # token rows: each of a token's k pairs adds its row into the fp32 output
        tl.atomic_add(y_ptr + y_off, acc, mask=row_ok[:, None] & mask_n[None, :], sem="relaxed")
    else:
        tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & mask_n[None, :])


@triton.jit
def _swiglu_gemm_fwd_kernel(
    x_ptr, w1_ptr, w3_ptr, h_ptr, g_ptr, u_ptr, sorted_pair_ptr, tile_expert_ptr,
    n_pairs, n_experts, n_tiles, K, N,
    stride_xm, stride_xk, stride_we, stride_wk, stride_wn, stride_hm, stride_hn,
    TOP_K: tl.constexpr, X_ROWS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """The fused gate/up projection of one tile, sorted layout out: g = X W₁[e], u = X W₃[e] from one
    gathered X tile, h = silu(g) ⊙ u in the epilogue; g and u are stored too (the backward needs them).
    W₁ and W₃ share strides."""
    pid_m, pid_n = _grouped_tile(tl.program_id(0), n_tiles, tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_pair_ptr + offs_m)
    valid = pair < n_pairs
    expert = tl.load(tile_expert_ptr + pid_m)
    k_end = tl.where(expert < n_experts, K, 0)
    expert = tl.minimum(expert, n_experts - 1).to(tl.int64)
    x_row = _row_index(offs_m, pair, TOP_K, X_ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(x_ptr + x_row[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=valid[:, None] & mask_k[None, :], other=0.0)  # [BM, BK], gathered once for both
        w_off = expert * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
        b1 = tl.load(w1_ptr + w_off, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        b3 = tl.load(w3_ptr + w_off, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            a, b1, b3 = a.to(tl.float32), b1.to(tl.float32), b3.to(tl.float32)
        acc_g = tl.dot(a, b1, acc_g, input_precision=PRECISION)
        acc_u = tl.dot(a, b3, acc_u, input_precision=PRECISION)
    # rounded to the storage dtype first, so h is exactly silu(g)·u of the g and u the backward reads
    g = acc_g.to(g_ptr.dtype.element_ty).to(tl.float32)
    u = acc_u.to(u_ptr.dtype.element_ty).to(tl.float32)
    h = g * tl.sigmoid(g) * u
    off = offs_m[:, None].to(tl.int64) * stride_hm + offs_n[None, :] * stride_hn
    mask = (offs_m >= 0)[:, None] & mask_n[None, :]  # padding rows: zeros (later kernels read them)
    tl.store(g_ptr + off, g.to(g_ptr.dtype.element_ty), mask=mask)
    tl.store(u_ptr + off, u.to(u_ptr.dtype.element_ty), mask=mask)
    tl.store(h_ptr + off, h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grouped_gemm_dw_kernel(
    x_ptr, dy_ptr, dw_ptr, route_w_ptr, sorted_pair_ptr, tile_start_ptr, tile_count_ptr,
    n_pairs, K, N,
    stride_xm, stride_xk, stride_dym, stride_dyn, stride_we, stride_wk, stride_wn,
    TOP_K: tl.constexpr, X_ROWS: tl.constexpr, DY_ROWS: tl.constexpr, MUL_WEIGHT: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dW[e][k-block, n-block] = Σ over expert e's rows r of X[x_row(r)]ᵀ (w_pair(r) ·) dY[dy_row(r)]."""
    pid_kn = tl.program_id(0)  # the (K, N) tiles on axis 0, the experts on axis 1 (≤ 65,535)
    expert = tl.program_id(1)
    n_blocks_n = tl.cdiv(N, BLOCK_N)
    offs_k = (pid_kn // n_blocks_n) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = (pid_kn % n_blocks_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    mask_n = offs_n < N
    first = tl.load(tile_start_ptr + expert)
    count = tl.load(tile_count_ptr + expert)
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    for t in range(first, first + count):  # 0 iterations for an expert without tokens: dW[e] = 0
        offs_m = t * BLOCK_M + tl.arange(0, BLOCK_M)
        pair = tl.load(sorted_pair_ptr + offs_m)
        valid = pair < n_pairs
        x_row = _row_index(offs_m, pair, TOP_K, X_ROWS)
        dy_row = _row_index(offs_m, pair, TOP_K, DY_ROWS)
        a = tl.load(x_ptr + x_row[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=valid[:, None] & mask_k[None, :], other=0.0)  # [BM, BK]
        g = tl.load(dy_ptr + dy_row[:, None] * stride_dym + offs_n[None, :] * stride_dyn,
                    mask=valid[:, None] & mask_n[None, :], other=0.0)  # [BM, BN]
        if UPCAST:
            a, g = a.to(tl.float32), g.to(tl.float32)
        if MUL_WEIGHT:
            rw = tl.load(route_w_ptr + pair, mask=valid, other=0.0).to(tl.float32)
            g = (g.to(tl.float32) * rw[:, None]).to(a.dtype)
        acc = tl.dot(tl.trans(a), g, acc, input_precision=PRECISION)
    tl.store(dw_ptr + expert.to(tl.int64) * stride_we + offs_k[:, None] * stride_wk
             + offs_n[None, :] * stride_wn,
             acc.to(dw_ptr.dtype.element_ty), mask=mask_k[:, None] & mask_n[None, :])


# ------------------------------------------------------------------------------ host wrappers
def _check_plan(plan: ExpertTiles, x: Tensor) -> None:
    if not isinstance(plan, ExpertTiles):
        raise ValueError(f"plan: expected an ExpertTiles from align_to_tiles, got {type(plan).__name__}")
    for name in ("sorted_pair", "tile_expert", "expert_tile_start", "expert_tile_count"):
        K.check_tensor(f"plan.{name}", getattr(plan, name), ndim=1, dtypes=(torch.int32,), like=x)
    if plan.n_experts > 65_535:
        raise ValueError(f"plan.n_experts: expected at most 65,535 (CUDA grid axis 1), got {plan.n_experts}")


def _check_rows(name: str, t: Tensor, plan: ExpertTiles, rows: int) -> None:
    if rows not in _ROW_NAMES:
        raise ValueError(f"{name}_rows: expected one of {sorted(_ROW_NAMES)}, got {rows!r}")
    if t.dim() != 2 or t.shape[0] != plan.n_rows(rows):
        raise ValueError(f"{name}: expected {plan.n_rows(rows)} rows ({_ROW_NAMES[rows]} layout), "
                         f"got shape {tuple(t.shape)}")


def grouped_gemm(x: Tensor, w: Tensor, plan: ExpertTiles, x_rows: int, y_rows: int,
                 route_weights: Tensor | None = None, block_n: int | None = None,
                 block_k: int | None = None, x2: Tensor | None = None, w2: Tensor | None = None) -> Tensor:
    """``Y[y_row] = (w_pair ·) (X[x_row] @ W[expert] (+ X₂[x_row] @ W₂[expert]))`` over every row of the
    plan (no autograd).

    Args:
        x: ``[rows, K]`` addressed in row space ``x_rows`` (ROWS_SORTED / ROWS_PAIR / ROWS_TOKEN).
        w: ``[E, K, N]``, any strides (pass ``w.transpose(1, 2)`` for Wᵀ).
        y_rows: ROWS_SORTED (output ``[M_pad, N]``, padding rows zero), ROWS_PAIR (``[N·k, N]``) or
            ROWS_TOKEN (``[N_tokens, N]``: each token's k pair rows summed, by fp32 atomic adds — no
            ``[N·k, N]`` buffer; the order of the k adds varies, so the last bits may differ between runs).
        route_weights: optional ``[N·k]`` routing weight per pair multiplying its output row.
        x2, w2: an optional second product summed into the same accumulator (x2 like x, w2 like w).
    Returns: Y in x.dtype, accumulated in fp32.
    """
    _check_plan(plan, x)
    K.check_tensor("x", x)
    _check_rows("x", x, plan, x_rows)
    K.check_tensor("w", w, like=x)
    if route_weights is not None:
        K.check_tensor("route_weights", route_weights, like=x)
    if y_rows not in _ROW_NAMES:
        raise ValueError(f"y_rows: expected ROWS_SORTED, ROWS_PAIR or ROWS_TOKEN, got {y_rows!r}")
    if w.dim() != 3 or w.shape[0] != plan.n_experts or w.shape[1] != x.shape[1]:
        raise ValueError(f"w: expected [{plan.n_experts}, {x.shape[1]}, N], got {tuple(w.shape)}")
    if route_weights is not None and route_weights.shape != (plan.n_pairs,):
        raise ValueError(f"route_weights: expected [{plan.n_pairs}], got {tuple(route_weights.shape)}")
    if (x2 is None) != (w2 is None):
        raise ValueError("x2, w2: expected both or neither")
    if x2 is not None:
        K.check_tensor("x2", x2, like=x)
        K.check_tensor("w2", w2, like=x)
        if x2.shape != x.shape or w2.shape != w.shape:
            raise ValueError(f"x2, w2: expected the shapes of x {tuple(x.shape)} and w {tuple(w.shape)}, "
                             f"got {tuple(x2.shape)} and {tuple(w2.shape)}")
    k_dim, N = w.shape[1], w.shape[2]
    if y_rows == ROWS_SORTED:
        y = x.new_empty(plan.padded_rows, N)
    else:  # pair rows: zeros where no tile writes; token rows: the fp32 sums start at zero
        y = x.new_zeros(plan.n_rows(y_rows), N, dtype=torch.float32 if y_rows == ROWS_TOKEN else x.dtype)
    if plan.n_tiles == 0 or N == 0:
        return y.to(x.dtype)
    cfg = gemm_config(x.dtype)
    bn, bk = block_n or cfg["BLOCK_N"], block_k or cfg["BLOCK_K"]
    w = w.to(x.dtype)
    if x2 is not None:  # the kernel addresses the second product with the first's strides
        x2, w2 = x2.to(x.dtype), w2.to(x.dtype)
        if x2.stride() != x.stride():
            x, x2 = x.contiguous(), x2.contiguous()
        if w2.stride() != w.stride():
            w, w2 = w.contiguous(), w2.contiguous()
    rw = route_weights if route_weights is not None else plan.sorted_pair  # dummy pointer when unused

    def launch(c: dict, out: Tensor) -> None:
        _grouped_gemm_fwd_kernel[(plan.n_tiles * triton.cdiv(N, c["BLOCK_N"]),)](
            x, w, x2 if x2 is not None else x, w2 if w2 is not None else w, out, rw, plan.sorted_pair,
            plan.tile_expert, plan.n_pairs, plan.n_experts, plan.n_tiles, k_dim, N,
            x.stride(0), x.stride(1), w.stride(0), w.stride(1), w.stride(2), out.stride(0), out.stride(1),
            TOP_K=plan.top_k, X_ROWS=x_rows, Y_ROWS=y_rows, MUL_WEIGHT=route_weights is not None,
            HAS_SECOND=x2 is not None, PRECISION=_precision(x.dtype), UPCAST=K.INTERPRETED,
            BLOCK_M=plan.block_m, BLOCK_N=c["BLOCK_N"], BLOCK_K=c["BLOCK_K"], GROUP_M=c["GROUP_M"],
            num_warps=c["num_warps"], num_stages=c["num_stages"],
        )

    cfg = {**cfg, "BLOCK_N": bn, "BLOCK_K": bk}
    if block_n is None and block_k is None:
        scratch: list[Tensor] = []  # allocated by the first timed run only, never once the shape is tuned

        def trial(c: dict) -> None:  # token rows add atomically: timed runs go to a scratch copy, not y
            if not scratch:
                scratch.append(torch.zeros_like(y) if y_rows == ROWS_TOKEN else y)
            launch(c, scratch[0])

        cfg = _tuned("fwd", cfg, (x.dtype, k_dim, N, plan.block_m, plan.n_tiles, plan.top_k, x_rows, y_rows,
                                  route_weights is not None, x2 is not None), trial, x, w)
    launch(cfg, y)
    return y.to(x.dtype)


def swiglu_gemm(x: Tensor, w1: Tensor, w3: Tensor, plan: ExpertTiles, x_rows: int = ROWS_TOKEN
                ) -> tuple[Tensor, Tensor, Tensor]:
    """The fused gate/up projection (no autograd): ``g = X[x_row] @ W₁[e]``, ``u = X[x_row] @ W₃[e]`` and
    ``h = silu(g) ⊙ u``, each ``[M_pad, H]`` in the sorted layout (padding rows zero), from one kernel that
    gathers each X tile once. x: ``[rows, d]`` in row space ``x_rows``; w1, w3: ``[E, d, H]``.
    Returns: (h, g, u) in x.dtype."""
    _check_plan(plan, x)
    K.check_tensor("x", x)
    _check_rows("x", x, plan, x_rows)
    for name, w in (("w1", w1), ("w3", w3)):
        K.check_tensor(name, w, ndim=3, like=x)
        if w.shape[0] != plan.n_experts or w.shape[1] != x.shape[1] or w.shape != w1.shape:
            raise ValueError(f"{name}: expected [{plan.n_experts}, {x.shape[1]}, H] like w1, got {tuple(w.shape)}")
    k_dim, H = w1.shape[1], w1.shape[2]
    w1, w3 = w1.to(x.dtype).contiguous(), w3.to(x.dtype).contiguous()
    h, g, u = (x.new_empty(plan.padded_rows, H) for _ in range(3))
    if plan.n_tiles == 0 or H == 0:
        return h, g, u
    def launch(c: dict) -> None:  # plain stores: a re-run (tuning) rewrites the same values
        _swiglu_gemm_fwd_kernel[(plan.n_tiles * triton.cdiv(H, c["BLOCK_N"]),)](
            x, w1, w3, h, g, u, plan.sorted_pair, plan.tile_expert, plan.n_pairs, plan.n_experts, plan.n_tiles,
            k_dim, H, x.stride(0), x.stride(1), w1.stride(0), w1.stride(1), w1.stride(2), h.stride(0), h.stride(1),
            TOP_K=plan.top_k, X_ROWS=x_rows, PRECISION=_precision(x.dtype), UPCAST=K.INTERPRETED,
            BLOCK_M=plan.block_m, BLOCK_N=c["BLOCK_N"], BLOCK_K=c["BLOCK_K"], GROUP_M=c["GROUP_M"],
            num_warps=c["swiglu_warps"], num_stages=c["num_stages"],
        )

    cfg = _tuned("swiglu", gemm_config(x.dtype), (x.dtype, k_dim, H, plan.block_m, plan.n_tiles, plan.top_k, x_rows),
                 launch, x, w1)
    launch(cfg)
    return h, g, u


def grouped_gemm_dw(x: Tensor, dy: Tensor, plan: ExpertTiles, x_rows: int, dy_rows: int,
                    route_weights: Tensor | None = None, block_n: int | None = None,
                    block_k: int | None = None) -> Tensor:
    """``dW[e] = Σ_{rows of e} X[x_row]ᵀ (w_pair ·) dY[dy_row]`` → ``[E, K, N]`` in x.dtype."""
    _check_plan(plan, x)
    K.check_tensor("x", x)
    K.check_tensor("dy", dy, like=x)
    _check_rows("x", x, plan, x_rows)
    _check_rows("dy", dy, plan, dy_rows)
    if route_weights is not None:
        K.check_tensor("route_weights", route_weights, like=x)
        if route_weights.shape != (plan.n_pairs,):
            raise ValueError(f"route_weights: expected [{plan.n_pairs}], got {tuple(route_weights.shape)}")
    k_dim, N = x.shape[1], dy.shape[1]
    dw = x.new_zeros(plan.n_experts, k_dim, N)
    if plan.n_experts == 0 or k_dim == 0 or N == 0:
        return dw
    cfg = gemm_config(x.dtype)
    bn, bk = block_n or cfg["DW_BLOCK_N"], block_k or cfg["DW_BLOCK_K"]
    dy = dy.to(x.dtype)
    rw = route_weights if route_weights is not None else plan.sorted_pair
    def launch(c: dict) -> None:  # plain stores: a re-run (tuning) rewrites the same values
        grid = (triton.cdiv(k_dim, c["DW_BLOCK_K"]) * triton.cdiv(N, c["DW_BLOCK_N"]), plan.n_experts)
        _grouped_gemm_dw_kernel[grid](
            x, dy, dw, rw, plan.sorted_pair, plan.expert_tile_start, plan.expert_tile_count,
            plan.n_pairs, k_dim, N,
            x.stride(0), x.stride(1), dy.stride(0), dy.stride(1), dw.stride(0), dw.stride(1), dw.stride(2),
            TOP_K=plan.top_k, X_ROWS=x_rows, DY_ROWS=dy_rows, MUL_WEIGHT=route_weights is not None,
            PRECISION=_precision(x.dtype), UPCAST=K.INTERPRETED, BLOCK_M=plan.block_m, BLOCK_N=c["DW_BLOCK_N"],
            BLOCK_K=c["DW_BLOCK_K"], num_warps=c["num_warps"], num_stages=c["num_stages"],
        )

    cfg = {**cfg, "DW_BLOCK_N": bn, "DW_BLOCK_K": bk}
    if block_n is None and block_k is None:
        cfg = _tuned("dw", cfg, (x.dtype, k_dim, N, plan.block_m, plan.n_tiles, plan.top_k, x_rows, dy_rows,
                                 route_weights is not None), launch, x, dy)
    launch(cfg)
    return dw


def _rows_to_pairs(values: Tensor, plan: ExpertTiles, rows: int) -> Tensor:
    """Per-row values ``[rows]`` (each row used by exactly one pair) → per-pair ``[N·k]``."""
    if rows == ROWS_PAIR:
        return values
    out = values.new_zeros(plan.n_pairs)
    sp = plan.sorted_pair.long()
    valid = sp < plan.n_pairs
    out[sp[valid]] = values[valid]
    return out


def _pair_weight_per_row(route_weights: Tensor, plan: ExpertTiles, rows: int) -> Tensor:
    """Routing weight of the pair behind each row of a ROWS_SORTED / ROWS_PAIR tensor (0 on padding)."""
    if rows == ROWS_PAIR:
        return route_weights
    padded = torch.cat([route_weights, route_weights.new_zeros(1)])  # index n_pairs → 0
    return padded[plan.sorted_pair.long()]


class GroupedGemm(torch.autograd.Function):
    """Differentiable :func:`grouped_gemm`: gradients for x, w and the routing weights."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, route_weights: Tensor | None, plan: ExpertTiles,
                x_rows: int, y_rows: int) -> Tensor:
        if route_weights is not None and x_rows == ROWS_TOKEN:
            raise ValueError("route_weights: weighting is supported for sorted/pair inputs only "
                             "(a token row is shared by k pairs)")
        ctx.save_for_backward(x, w, route_weights)
        ctx.plan, ctx.x_rows, ctx.y_rows = plan, x_rows, y_rows
        return grouped_gemm(x, w, plan, x_rows, y_rows, route_weights)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, w, rw = ctx.saved_tensors
        plan, x_rows, y_rows = ctx.plan, ctx.x_rows, ctx.y_rows
        dy = dy.contiguous()
        dx = dw = drw = None
        need_x, need_w, need_rw = ctx.needs_input_grad[:3]
        if need_x or need_rw:
            # unweighted dY Wᵀ; a token row feeds k pairs, whose rows the kernel adds into it (token rows
            # take no routing weight, see forward)
            dx = grouped_gemm(dy, w.transpose(1, 2), plan, y_rows, x_rows)
            if rw is not None:
                if need_rw:
                    drw = _rows_to_pairs((dx.float() * x.float()).sum(-1), plan, x_rows).to(rw.dtype)
                dx = dx * _pair_weight_per_row(rw, plan, x_rows).to(dx.dtype)[:, None]
            if not need_x:
                dx = None
        if need_w:
            dw = grouped_gemm_dw(x, dy, plan, x_rows, y_rows, rw).to(w.dtype)
        return dx, dw, drw, None, None, None


class SwiGLUGroupedGemm(torch.autograd.Function):
    """Differentiable :func:`swiglu_gemm` (token-row input x): ``h = silu(X W₁) ⊙ X W₃`` per expert, sorted
    layout out. Backward: ``dg = dh ⊙ u ⊙ σ(g)(1 + g(1 − σ(g)))``, ``du = dh ⊙ silu(g)``;
    ``dX = dg W₁ᵀ + du W₃ᵀ`` in one grouped GEMM (two products, one accumulator) per pair, added into
    its token's row; ``dW₁ = Xᵀ dg``, ``dW₃ = Xᵀ du``."""

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, w3: Tensor, plan: ExpertTiles) -> Tensor:
        h, g, u = swiglu_gemm(x, w1, w3, plan, ROWS_TOKEN)
        ctx.save_for_backward(x, w1, w3, g, u)
        ctx.plan = plan
        return h

    @staticmethod
    def backward(ctx, dh: Tensor):
        x, w1, w3, g, u = ctx.saved_tensors
        plan = ctx.plan
        gf, uf, dhf = g.float(), u.float(), dh.float()
        sg = torch.sigmoid(gf)
        dg = (dhf * uf * sg * (1 + gf * (1 - sg))).to(x.dtype)  # [M_pad, H]; 0 on padding rows
        du = (dhf * gf * sg).to(x.dtype)
        dx = dw1 = dw3 = None
        if ctx.needs_input_grad[0]:
            dx = grouped_gemm(dg, w1.transpose(1, 2), plan, ROWS_SORTED, ROWS_TOKEN, x2=du, w2=w3.transpose(1, 2))
        if ctx.needs_input_grad[1]:
            dw1 = grouped_gemm_dw(x, dg, plan, ROWS_TOKEN, ROWS_SORTED).to(w1.dtype)
        if ctx.needs_input_grad[2]:
            dw3 = grouped_gemm_dw(x, du, plan, ROWS_TOKEN, ROWS_SORTED).to(w3.dtype)
        return dx, dw1, dw3, None


def moe_swiglu_experts(x: Tensor, indices: Tensor, weights: Tensor, w1: Tensor, w3: Tensor, w2: Tensor,
                       block_m: int | None = None) -> Tensor:
    """Routed SwiGLU experts with the grouped GEMM: ``Σ_j w_j · (silu(x W₁[e_j]) ⊙ x W₃[e_j]) W₂[e_j]``.

    Args:
        x: ``[N, d]``. indices: ``[N, k]`` expert ids. weights: ``[N, k]`` routing weights.
        w1, w3: ``[E, d, h]``; w2: ``[E, h, d]``.
        block_m: tile height (default 64 on GPU, 16 in the interpreter).
    Returns: ``[N, d]`` in x.dtype; differentiable in x, weights, w1, w3, w2.
    """
    K.check_tensor("x", x, ndim=2)
    K.check_tensor("indices", indices, ndim=2, dtypes=(torch.int32, torch.int64), like=x)
    K.check_tensor("weights", weights, ndim=2, like=x)
    for name, w in (("w1", w1), ("w3", w3), ("w2", w2)):
        K.check_tensor(name, w, ndim=3, like=x)
    if indices.shape != weights.shape or indices.shape[0] != x.shape[0]:
        raise ValueError(f"indices: expected [N, k] like weights, with x [N, d]; got x {tuple(x.shape)}, "
                         f"indices {tuple(indices.shape)}, weights {tuple(weights.shape)}")
    N, d = x.shape
    E = w1.shape[0]
    for name, w, want in (("w1", w1, (E, d, w1.shape[2])), ("w3", w3, tuple(w1.shape)),
                          ("w2", w2, (E, w1.shape[2], d))):
        if tuple(w.shape) != want or (name == "w1" and w.shape[1] != d):
            raise ValueError(f"{name}: expected shape {list(want)} (w1, w3 [E, d={d}, h], w2 [E, h, d]), "
                             f"got {tuple(w.shape)}")
    if torch.is_autocast_enabled(x.device.type):  # a custom op: do autocast's cast ourselves
        dt = torch.get_autocast_dtype(x.device.type)
        x, weights, w1, w3, w2 = (t.to(dt) for t in (x, weights, w1, w3, w2))
    plan = align_to_tiles(indices, E, block_m or _default_blocks()[0])
    x = x.contiguous()
    hidden = SwiGLUGroupedGemm.apply(x, w1, w3, plan)  # [M_pad, h]: silu(x W₁) ⊙ x W₃, padding rows 0
    pair_w = weights.reshape(-1).to(x.dtype)
    # [N, d]: the weighted down projection of each pair added into its token's row (no [N·k, d] buffer)
    return GroupedGemm.apply(hidden, w2, pair_w, plan, ROWS_SORTED, ROWS_TOKEN)


if __name__ == "__main__":
    # Benchmark: grouped GEMM vs the sorted-segment PyTorch path (forward + backward of the routed experts).
    from kimi_mini.bench import time_it
    from kimi_mini.moe import moe_experts, sigmoid_topk_route

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    N, d, E, k, h = (32768, 2048, 64, 8, 1024) if dev == "cuda" else (256, 64, 8, 2, 32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, d, generator=gen).to(dev, dtype).requires_grad_()
    w1, w3 = (torch.randn(E, d, h, generator=gen).mul(d**-0.5).to(dev, dtype).requires_grad_() for _ in "ab")
    w2 = torch.randn(E, h, d, generator=gen).mul(h ** -0.5).to(dev, dtype).requires_grad_()
    idx, wts = sigmoid_topk_route(torch.randn(N, E, generator=gen).to(dev), None, k, 1.0)
    for impl in ("torch", "triton"):
        def step(impl=impl):
            moe_experts(x, idx, wts, w1, w3, w2, impl=impl).float().square().mean().backward()
        print(f"{impl:>7}: {time_it(step, warmup=1, repeat=3) * 1e3:8.2f} ms  (N={N}, d={d}, E={E}, k={k}, "
              f"h={h}, {dtype})")
