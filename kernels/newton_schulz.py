"""Triton kernels for the symmetric products of a Newton–Schulz step (Muon / Moonlight, arXiv 2502.16982).

One quintic NS step on ``X [m, n]`` (m ≤ n) is::

    A = X·Xᵀ                    [m, m]  symmetric               → _ns_gram_fwd_kernel
    B = b·A + c·A·A             [m, m]  symmetric (A·A = A·Aᵀ)  → _ns_poly_fwd_kernel
    X ← a·X + B·X               [m, n]                          → _ns_update_fwd_kernel (a·X in the epilogue)

Three launches per step and nothing else: the inputs are checked once per step, A and B live in a
workspace kept per (batch, m, dtype, device) — a step allocates only its output — and the tile lists
are built once per size. Tiles are visited in *grouped* order (GROUP row blocks, then the next column):
neighbouring programs share row and column blocks, which stay in L2 at 8192².

Both kernels exploit symmetry: with square ``BLOCK×BLOCK`` tiles, a program is launched only for the
tiles on or above the diagonal (``T·(T+1)/2`` of the ``T²``, T = ⌈m / BLOCK⌉ — about half the FLOPs),
and each program stores its tile twice, at ``(i, j)`` and transposed at ``(j, i)``. Inside diagonal
tiles only the entries with row ≤ column are stored (to both places), so the output is *bitwise*
symmetric — a plain matmul is symmetric only up to rounding, and NS would amplify the asymmetry.

Because ``A`` is symmetric, ``A·A = A·Aᵀ``: the second kernel is the first applied to ``A`` with a fused
epilogue ``b·A[i, j] + c·acc`` (one read of the ``A`` tile, no ``A·A`` temporary in memory).

Accumulation is fp32; the stored result has the input's dtype. Inputs in the CPU interpreter are upcast
to fp32 right after loading (``UPCAST``) because the interpreter computes bf16 wrongly; on a GPU the
16-bit tiles go straight to the tensor cores; fp32 uses :func:`kimi_mini.kernels.dot_precision`. Batched
over a leading dim, flattened with the tiles into one 1-D grid (CUDA caps grid axis 1 at 65,535).

Order, as in Triton's tutorials: reference (:func:`kimi_mini.optim.newton_schulz_step`), kernels, host
wrappers, check (``tests/test_newton_schulz_kernel.py``), benchmark (``__main__``).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K


@triton.jit
def _gram_tile(X, stride_m, stride_k, ti, tj, M, K, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
               UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """fp32 tile ``(X·Xᵀ)[ti-block, tj-block]``: rows ``ti`` of X times rows ``tj`` of X, transposed."""
    rm = ti * BLOCK + tl.arange(0, BLOCK)
    rn = tj * BLOCK + tl.arange(0, BLOCK)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        a = tl.load(X + rm[:, None] * stride_m + kk[None, :] * stride_k,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)  # [BLOCK, BLOCK_K]
        bt = tl.load(X + kk[:, None] * stride_k + rn[None, :] * stride_m,
                     mask=(kk[:, None] < K) & (rn[None, :] < M), other=0.0)  # [BLOCK_K, BLOCK] = X[rn, kk]ᵀ
        if UPCAST:
            a = a.to(tl.float32)
            bt = bt.to(tl.float32)
        acc += tl.dot(a, bt, input_precision=PRECISION)
    return acc


@triton.jit
def _store_symmetric(C, stride_cm, stride_cn, tile, ti, tj, M, BLOCK: tl.constexpr):
    """Store ``tile`` at block ``(ti, tj)`` and its transpose at ``(tj, ti)``, entries with row ≤ col only."""
    rm = ti * BLOCK + tl.arange(0, BLOCK)
    rn = tj * BLOCK + tl.arange(0, BLOCK)
    upper = (rm[:, None] <= rn[None, :]) & (rm[:, None] < M) & (rn[None, :] < M)  # all-true off the diagonal
    tile = tile.to(C.dtype.element_ty)
    tl.store(C + rm[:, None] * stride_cm + rn[None, :] * stride_cn, tile, mask=upper)
    lower = (rn[:, None] >= rm[None, :]) & (rn[:, None] < M) & (rm[None, :] < M)  # upperᵀ
    tl.store(C + rn[:, None] * stride_cm + rm[None, :] * stride_cn, tl.trans(tile), mask=lower)


@triton.jit
def _ns_gram_fwd_kernel(X, C, TILE_I, TILE_J, stride_xb, stride_xm, stride_xk,
                        stride_cb, stride_cm, stride_cn, M, K, N_TILES, BLOCK: tl.constexpr,
                        BLOCK_K: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``C = X·Xᵀ`` for ``X [batch, M, K]``; program ``b·N_TILES + pid`` computes the upper tile
    ``(TILE_I[pid], TILE_J[pid])`` of matrix ``b``."""
    pid = tl.program_id(0) % N_TILES
    bid = (tl.program_id(0) // N_TILES).to(tl.int64)
    ti = tl.load(TILE_I + pid)
    tj = tl.load(TILE_J + pid)
    acc = _gram_tile(X + bid * stride_xb, stride_xm, stride_xk, ti, tj, M, K,
                     BLOCK, BLOCK_K, UPCAST, PRECISION)
    _store_symmetric(C + bid * stride_cb, stride_cm, stride_cn, acc, ti, tj, M, BLOCK)


@triton.jit
def _ns_poly_fwd_kernel(A, C, TILE_I, TILE_J, stride_ab, stride_am, stride_an,
                        stride_cb, stride_cm, stride_cn, M, coef_b, coef_c, N_TILES, BLOCK: tl.constexpr,
                        BLOCK_K: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``C = b·A + c·A·A`` for symmetric ``A [batch, M, M]`` (``A·A = A·Aᵀ``: the Gram tile of A)."""
    pid = tl.program_id(0) % N_TILES
    bid = (tl.program_id(0) // N_TILES).to(tl.int64)
    ti = tl.load(TILE_I + pid)
    tj = tl.load(TILE_J + pid)
    base = A + bid * stride_ab
    acc = _gram_tile(base, stride_am, stride_an, ti, tj, M, M, BLOCK, BLOCK_K, UPCAST, PRECISION)
    rm = ti * BLOCK + tl.arange(0, BLOCK)
    rn = tj * BLOCK + tl.arange(0, BLOCK)
    a_ij = tl.load(base + rm[:, None] * stride_am + rn[None, :] * stride_an,
                   mask=(rm[:, None] < M) & (rn[None, :] < M), other=0.0).to(tl.float32)
    out = coef_b * a_ij + coef_c * acc
    _store_symmetric(C + bid * stride_cb, stride_cm, stride_cn, out, ti, tj, M, BLOCK)


@triton.jit
def _ns_update_fwd_kernel(B, X, Y, stride_bb, stride_bm, stride_bk, stride_xb, stride_xm, stride_xn,
                          stride_yb, stride_ym, stride_yn, M, N, coef_a, TILES_M, TILES_N,
                          BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          GROUP_M: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``Y = a·X + B·X`` for ``B [batch, M, M]``, ``X [batch, M, N]``: one [BLOCK, BLOCK_N] tile of Y per
    program, in grouped order (GROUP_M row blocks, then the next column block); a·X in the epilogue."""
    per_matrix = TILES_M * TILES_N
    bid = (tl.program_id(0) // per_matrix).to(tl.int64)
    pid = tl.program_id(0) % per_matrix
    per_group = GROUP_M * TILES_N
    first_m = (pid // per_group) * GROUP_M
    rows_here = tl.minimum(TILES_M - first_m, GROUP_M)
    ti = first_m + (pid % per_group) % rows_here
    tn = (pid % per_group) // rows_here
    rm = ti * BLOCK + tl.arange(0, BLOCK)
    rn = tn * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    Bb, Xb = B + bid * stride_bb, X + bid * stride_xb
    acc = tl.zeros((BLOCK, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, M, BLOCK_K):
        kk = k0 + rk
        b = tl.load(Bb + rm[:, None] * stride_bm + kk[None, :] * stride_bk,
                    mask=(rm[:, None] < M) & (kk[None, :] < M), other=0.0)  # [BLOCK, BLOCK_K]
        x = tl.load(Xb + kk[:, None] * stride_xm + rn[None, :] * stride_xn,
                    mask=(kk[:, None] < M) & (rn[None, :] < N), other=0.0)  # [BLOCK_K, BLOCK_N]
        if UPCAST:
            b, x = b.to(tl.float32), x.to(tl.float32)
        acc = tl.dot(b, x, acc, input_precision=PRECISION)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    x_own = tl.load(Xb + rm[:, None] * stride_xm + rn[None, :] * stride_xn, mask=mask, other=0.0)
    out = coef_a * x_own.to(tl.float32) + acc
    tl.store(Y + bid * stride_yb + rm[:, None] * stride_ym + rn[None, :] * stride_yn,
             out.to(Y.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------
# host wrappers
# ----------------------------------------------------------------------------------------------------


GROUP = 8  # row blocks per group of the grouped tile order


@functools.lru_cache(maxsize=64)
def _upper_tiles(n_tiles: int, device: str) -> tuple[Tensor, Tensor]:
    """Block coordinates ``(i, j)`` with ``i ≤ j``: the programs the symmetric kernels launch, in grouped
    order — GROUP row blocks at a time, column by column — so neighbouring programs read the same blocks."""
    i, j = torch.triu_indices(n_tiles, n_tiles)
    order = torch.argsort((i // GROUP) * n_tiles * n_tiles + j * n_tiles + i)
    i, j = i[order], j[order]
    return i.to(torch.int32).to(device), j.to(torch.int32).to(device)


def _config(m: int, block: int | None, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK, BLOCK_K, num_warps). fp32 stays at 64×64 tiles: 128×128 fp32 tiles need 196,608 B of
    shared memory, over the A100's 166,912 (``kimi_mini.kernels.aot`` measures every choice)."""
    if block is None:
        if K.INTERPRETED:  # few, large programs: the interpreter's cost is per program
            block = max(16, min(64, triton.next_power_of_2(m)))
        else:
            block = 64 if m <= 1024 or dtype == torch.float32 else 128
    if isinstance(block, bool) or not isinstance(block, int) or block < 16 or block & (block - 1):
        raise ValueError(f"block: expected a power of two >= 16, got {block!r}")
    block_k = block if K.INTERPRETED else 64
    num_warps = 8 if block >= 128 else 4
    return block, block_k, num_warps


def _check(X: Tensor, name: str) -> Tensor:
    if not isinstance(X, Tensor) or X.dim() < 2:
        got = tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__
        raise ValueError(f"{name}: expected a tensor [..., m, n], got {got}")
    K.check_tensor(name, X)
    return X.reshape(math.prod(X.shape[:-2]), X.shape[-2], X.shape[-1])  # not -1: ambiguous when empty


def _precision(dtype: torch.dtype) -> str:
    return K.dot_precision(dtype)


def ns_gram(X: Tensor, block: int | None = None) -> Tensor:
    """``X·Xᵀ`` for ``X [..., m, n]`` → ``[..., m, m]`` in X's dtype, bitwise symmetric (upper tiles only)."""
    X3 = _check(X, "X")
    batch, m, k = X3.shape
    C = torch.zeros(batch, m, m, device=X.device, dtype=X.dtype) if k == 0 else \
        torch.empty(batch, m, m, device=X.device, dtype=X.dtype)
    BLOCK, BLOCK_K, num_warps = _config(m, block, X.dtype)
    if C.numel() == 0 or k == 0:  # empty shapes: nothing to launch (X·Xᵀ of [m, 0] is zeros)
        return C.view(*X.shape[:-1], m)
    ti, tj = _upper_tiles(triton.cdiv(m, BLOCK), str(X.device))
    _ns_gram_fwd_kernel[(ti.numel() * batch,)](
        X3, C, ti, tj, X3.stride(0), X3.stride(1), X3.stride(2), C.stride(0), C.stride(1), C.stride(2),
        m, k, ti.numel(), BLOCK=BLOCK, BLOCK_K=BLOCK_K, UPCAST=K.INTERPRETED, PRECISION=_precision(X.dtype),
        num_warps=num_warps)
    return C.view(*X.shape[:-1], m)


def ns_poly(A: Tensor, b: float, c: float, block: int | None = None) -> Tensor:
    """``b·A + c·A·A`` for symmetric ``A [..., m, m]`` → same shape and dtype, bitwise symmetric.

    Only valid for symmetric ``A`` (it computes ``A·Aᵀ``); :func:`ns_gram`'s output is."""
    A3 = _check(A, "A")
    batch, m, m2 = A3.shape
    if m != m2:
        raise ValueError(f"A: expected square matrices [..., m, m], got {tuple(A.shape)}")
    for name, v in (("b", b), ("c", c)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name}: expected a finite float, got {v!r}")
    C = torch.empty_like(A3, memory_format=torch.contiguous_format)
    BLOCK, BLOCK_K, num_warps = _config(m, block, A.dtype)
    if C.numel() == 0:
        return C.view(A.shape)
    ti, tj = _upper_tiles(triton.cdiv(m, BLOCK), str(A.device))
    _ns_poly_fwd_kernel[(ti.numel() * batch,)](
        A3, C, ti, tj, A3.stride(0), A3.stride(1), A3.stride(2), C.stride(0), C.stride(1), C.stride(2),
        m, float(b), float(c), ti.numel(), BLOCK=BLOCK, BLOCK_K=BLOCK_K, UPCAST=K.INTERPRETED,
        PRECISION=_precision(A.dtype), num_warps=num_warps)
    return C.view(A.shape)


_WORKSPACE: dict[tuple, tuple[Tensor, Tensor]] = {}


def _workspace(batch: int, m: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """A and B of a step, [batch, m, m] each, kept per (batch, m, dtype, device) and reused by every later
    step of that size (launches on one stream run in order, so a step's A and B are free when it returns)."""
    key = (batch, m, dtype, str(device))
    if key not in _WORKSPACE:
        if len(_WORKSPACE) >= 16:  # a few layer shapes at a time; forget the oldest
            _WORKSPACE.pop(next(iter(_WORKSPACE)))
        _WORKSPACE[key] = (torch.empty(batch, m, m, device=device, dtype=dtype),
                           torch.empty(batch, m, m, device=device, dtype=dtype))
    return _WORKSPACE[key]


def ns_update(B: Tensor, X: Tensor, a: float, block: int | None = None, out: Tensor | None = None) -> Tensor:
    """``a·X + B·X`` for ``B [..., m, m]``, ``X [..., m, n]`` → ``[..., m, n]`` in X's dtype, in one kernel
    (a·X in the epilogue); ``out`` (optional) receives it."""
    B3, X3 = _check(B, "B"), _check(X, "X")
    batch, m, n = X3.shape
    if B3.shape != (batch, m, m):
        raise ValueError(f"B: expected [..., {m}, {m}] matching X {tuple(X.shape)}, got {tuple(B.shape)}")
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
        raise ValueError(f"a: expected a finite float, got {a!r}")
    Y = torch.empty_like(X3, memory_format=torch.contiguous_format) if out is None else out.view(batch, m, n)
    _launch_update(B3, X3, Y, float(a), block)
    return Y.view(X.shape)


def _launch_update(B3: Tensor, X3: Tensor, Y: Tensor, a: float, block: int | None) -> None:
    batch, m, n = X3.shape
    if Y.numel() == 0:
        return
    BLOCK, BLOCK_K, num_warps = _config(m, block, X3.dtype)
    BLOCK_N = 64 if K.INTERPRETED or X3.dtype == torch.float32 else 128
    tiles_m, tiles_n = triton.cdiv(m, BLOCK), triton.cdiv(n, BLOCK_N)
    _ns_update_fwd_kernel[(batch * tiles_m * tiles_n,)](
        B3, X3, Y, B3.stride(0), B3.stride(1), B3.stride(2), X3.stride(0), X3.stride(1), X3.stride(2),
        Y.stride(0), Y.stride(1), Y.stride(2), m, n, a, tiles_m, tiles_n, BLOCK=BLOCK, BLOCK_N=BLOCK_N,
        BLOCK_K=BLOCK_K, GROUP_M=GROUP, UPCAST=K.INTERPRETED, PRECISION=_precision(X3.dtype), num_warps=num_warps)


def newton_schulz_step_triton(X: Tensor, coefficients: tuple[float, float, float], block: int | None = None
                              ) -> Tensor:
    """One NS step ``a·X + (b·A + c·A·A)·X``, ``A = X·Xᵀ``: three launches (X·Xᵀ, the polynomial, the
    update with a·X fused), A and B in a reused workspace. ``X [..., m, n]`` with m ≤ n (what
    :func:`kimi_mini.optim.newton_schulz` passes)."""
    a, b, c = coefficients
    X3 = _check(X, "X")
    batch, m, k = X3.shape
    if X3.numel() == 0 or k == 0:  # empty shapes: the checked, unfused path
        return ns_update(ns_poly(ns_gram(X, block), b, c, block), X, a, block)
    A, B = _workspace(batch, m, X.dtype, X.device)
    BLOCK, BLOCK_K, num_warps = _config(m, block, X.dtype)
    ti, tj = _upper_tiles(triton.cdiv(m, BLOCK), str(X.device))
    common = dict(BLOCK=BLOCK, BLOCK_K=BLOCK_K, UPCAST=K.INTERPRETED, PRECISION=_precision(X.dtype),
                  num_warps=num_warps)
    _ns_gram_fwd_kernel[(ti.numel() * batch,)](
        X3, A, ti, tj, X3.stride(0), X3.stride(1), X3.stride(2), A.stride(0), A.stride(1), A.stride(2),
        m, k, ti.numel(), **common)
    _ns_poly_fwd_kernel[(ti.numel() * batch,)](
        A, B, ti, tj, A.stride(0), A.stride(1), A.stride(2), B.stride(0), B.stride(1), B.stride(2),
        m, float(b), float(c), ti.numel(), **common)
    Y = torch.empty(batch, m, k, device=X.device, dtype=X.dtype)
    _launch_update(B, X3, Y, float(a), block)
    return Y.view(X.shape)


if __name__ == "__main__":  # python -m kimi_mini.kernels.newton_schulz: the kernels vs torch, side by side
    from kimi_mini.bench import format_table, time_it
    from kimi_mini.optim import NS_COEFFICIENTS, newton_schulz, newton_schulz_step

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sizes = [1024, 2048, 4096, 8192] if device == "cuda" else [64]
    rows = []
    for n in sizes:
        X = torch.randn(n, n, device=device, dtype=dtype) / n**0.5
        t_gram_torch = time_it(lambda X=X: X @ X.mT)
        t_gram_tri = time_it(lambda X=X: ns_gram(X))
        t_step_torch = time_it(lambda X=X: newton_schulz_step(X, NS_COEFFICIENTS))
        t_step_tri = time_it(lambda X=X: newton_schulz_step_triton(X, NS_COEFFICIENTS))
        t_ns_torch = time_it(lambda X=X: newton_schulz(X, impl="torch"))
        t_ns_tri = time_it(lambda X=X: newton_schulz(X, impl="triton"))
        rows.append({"n": n, "dtype": str(dtype).replace("torch.", ""),
                     "X·Xᵀ torch ms": 1e3 * t_gram_torch, "X·Xᵀ triton ms": 1e3 * t_gram_tri,
                     "NS5 torch ms": 1e3 * t_ns_torch, "NS5 triton ms": 1e3 * t_ns_tri,
                     "step torch/triton": t_step_torch / t_step_tri})
    print(format_table(rows))
    if device == "cpu":
        print("note: on CPU the kernels run in Triton's interpreter — correctness, not speed")
