"""Fused column means and central moments in Triton — the statistics of the Central Moment Discrepancy.

For ``X [N, D]`` (DMR, arXiv 2106.00320; CMD of Zellinger et al., arXiv 1702.08811):

    m = (1/N) Σ_n x_n,      c_k = (1/N) Σ_n (x_n − m)^k,   k = 2 … K               (forward)

With upstream gradients g_m = ∂L/∂m and g_k = ∂L/∂c_k (all ``[D]``), and the power means
s_p = (1/N) Σ_n (x_n − m)^p (s_1 ≈ 0 in exact arithmetic; the computed value is used, as autograd does):

    ∂L/∂x_n = g_m/N + Σ_{k=2..K} (k/N) · g_k · ((x_n − m)^{k−1} − s_{k−1})           (backward)

Forward: one program per block of ``BLOCK_D`` columns loops twice over the rows in tiles of ``BLOCK_N``
(first the mean, then the central powers 1 … K together, each from the running product), so X is read
twice and nothing but the ``[K, D]`` statistics is written. Backward: the per-element gradient is a
polynomial of degree K−1 in (x − m), evaluated by Horner's rule; row tiles go on grid axis 0 (big counts
there), column blocks on axis 1. Loads are upcast to fp32 right away; statistics are fp32.

Order, as in Triton's tutorials: reference (``kimi_mini.rationale.cmd.central_moments_reference``),
kernels, host wrapper + ``autograd.Function``, check (``tests/test_moments_kernel.py``), benchmark.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K_

__all__ = ["central_moments", "CentralMomentsFunction", "MAX_K"]

MAX_K = 8  # the unrolled power loop grows with K; CMD uses K = 5


@triton.jit
def _moments_fwd_kernel(X, MEAN, S, stride_x, N, D, inv_n, K: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    cols = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    rows0 = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        rows = start + rows0
        m2 = (rows[:, None] < N) & cmask[None, :]
        x = tl.load(X + rows[:, None].to(tl.int64) * stride_x + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        acc += tl.sum(x, axis=0)
    mean = acc * inv_n
    tl.store(MEAN + cols, mean, mask=cmask)
    kidx = tl.arange(0, BLOCK_K)
    sums = tl.zeros([BLOCK_K, BLOCK_D], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        rows = start + rows0
        m2 = (rows[:, None] < N) & cmask[None, :]
        x = tl.load(X + rows[:, None].to(tl.int64) * stride_x + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        d = tl.where(m2, x - mean[None, :], 0.0)
        pw = d
        for p in tl.static_range(1, K + 1):  # row p-1 of S holds the mean of (x − m)^p
            sums = tl.where(kidx[:, None] == p - 1, sums + tl.sum(pw, axis=0)[None, :], sums)
            pw = pw * d
    smask = (kidx[:, None] < K) & cmask[None, :]
    tl.store(S + kidx[:, None] * D + cols[None, :], sums * inv_n, mask=smask)


@triton.jit
def _moments_bwd_kernel(X, DX, MEAN, S, G, stride_x, stride_dx, N, D, inv_n, K: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    # G [K, D]: row 0 = dL/dm, row k-1 = dL/dc_k (k = 2..K). S [K, D]: row p-1 = mean (x − m)^p.
    pid_n = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    m2 = (rows[:, None] < N) & cmask[None, :]
    x = tl.load(X + rows[:, None].to(tl.int64) * stride_x + cols[None, :], mask=m2, other=0.0).to(tl.float32)
    mean = tl.load(MEAN + cols, mask=cmask, other=0.0)
    d = x - mean[None, :]
    # constant term: g_m/N − Σ_k (k/N) g_k s_{k−1}
    const = tl.load(G + cols, mask=cmask, other=0.0).to(tl.float32) * inv_n
    poly = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for i in tl.static_range(0, K - 1):
        k = K - i  # Horner from the highest power (k − 1) down to power 1
        gk = tl.load(G + (k - 1) * D + cols, mask=cmask, other=0.0).to(tl.float32) * (k * inv_n)
        sk = tl.load(S + (k - 2) * D + cols, mask=cmask, other=0.0)
        const -= gk * sk
        poly = (poly + gk[None, :]) * d
    dx = poly + const[None, :]
    tl.store(DX + rows[:, None].to(tl.int64) * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=m2)


def _check(x: Tensor, K: int) -> None:
    if not torch.is_tensor(x) or x.dim() != 2:
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x: expected a 2-D tensor [N, D], got {got}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"x: expected float32, float16 or bfloat16, got {x.dtype}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x: expected N >= 1 and D >= 1, got {tuple(x.shape)}")
    if not isinstance(K, int) or isinstance(K, bool) or not 1 <= K <= MAX_K:
        raise ValueError(f"K: expected an integer in [1, {MAX_K}], got {K!r}")
    K_.check_device("x", x)  # a CUDA tensor on the current device when compiled; any data tensor when interpreted


def _blocks(N: int, D: int) -> tuple[int, int]:
    return min(64, triton.next_power_of_2(N)), min(64, triton.next_power_of_2(D))


def moments_fwd(x: Tensor, K: int) -> tuple[Tensor, Tensor]:
    """``x [N, D]`` (contiguous rows) → ``mean [D]`` and power means ``S [K, D]`` (row p−1: mean (x−m)^p), fp32."""
    N, D = x.shape
    mean = torch.empty(D, device=x.device, dtype=torch.float32)
    s = torch.empty(K, D, device=x.device, dtype=torch.float32)
    bn, bd = _blocks(N, D)
    _moments_fwd_kernel[(triton.cdiv(D, bd),)](x, mean, s, x.stride(0), N, D, 1.0 / N, K=K, BLOCK_N=bn,
                                                BLOCK_D=bd, BLOCK_K=triton.next_power_of_2(K))
    return mean, s


def moments_bwd(g: Tensor, x: Tensor, mean: Tensor, s: Tensor) -> Tensor:
    """``g [K, D]`` (row 0: dL/dmean, row k−1: dL/dc_k) → ``dx [N, D]`` in x's dtype."""
    N, D = x.shape
    K = g.shape[0]
    dx = torch.empty_like(x)
    bn, bd = _blocks(N, D)
    _moments_bwd_kernel[(triton.cdiv(N, bn), triton.cdiv(D, bd))](
        x, dx, mean, s, g.contiguous().float(), x.stride(0), dx.stride(0), N, D, 1.0 / N, K=K, BLOCK_N=bn,
        BLOCK_D=bd)
    return dx


class CentralMomentsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, K: int) -> Tensor:
        mean, s = moments_fwd(x, K)
        ctx.save_for_backward(x, mean, s)
        out = s.clone()
        out[0] = mean  # row 0: the mean; rows 1..K-1: c_2..c_K
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, mean, s = ctx.saved_tensors
        return moments_bwd(g, x, mean, s), None


def central_moments(x: Tensor, K: int = 5) -> Tensor:
    """Fused, differentiable: ``x [N, D]`` → fp32 ``[K, D]`` whose row 0 is the column mean and row k−1
    the k-th central moment c_k (k = 2 … K), true powers. ``K`` in 1 … ``MAX_K``."""
    _check(x, K)
    if x.stride(1) != 1:
        x = x.contiguous()
    return CentralMomentsFunction.apply(x, K)


if __name__ == "__main__":  # python -m kimi_mini.kernels.moments: the kernel vs torch, side by side
    from kimi_mini.bench import format_table, time_it
    from kimi_mini.rationale.cmd import central_moments_torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [(4096, 256), (65536, 512)] if device == "cuda" else [(200, 32)]
    rows = []
    for N, D in sizes:
        x = torch.randn(N, D, device=device)
        t_ref = time_it(lambda x=x: central_moments_torch(x, 5))
        t_tri = time_it(lambda x=x: central_moments(x, 5))
        rows.append({"N": N, "D": D, "torch ms": 1e3 * t_ref, "triton ms": 1e3 * t_tri, "torch/triton": t_ref / t_tri})
    print(format_table(rows))
    if device == "cpu":
        print("note: on CPU the kernel runs in Triton's interpreter — correctness, not speed")
