"""Fused RMSNorm in Triton — the course's first kernel and the template for the others.

    y = x · rstd · g,   rstd = 1 / sqrt(mean(x²) + ε)                       (forward)
    dx = rstd · (dy·g − x · rstd² · mean(dy·g·x)),   dg = Σ_rows dy · x · rstd  (backward)

One forward program normalises one row (the whole row fits in a block: model widths are ≤ 64K). Row
offsets are 64-bit (``row.to(tl.int64) * stride``): at 4 × 128K tokens × 7168 a tensor has 3.8·10⁹
elements and a 32-bit ``row * stride`` would wrap past 2³¹. The backward runs ``G = min(rows, 1024)``
programs, each walking the rows ``g, g + G, g + 2G, …`` and keeping its share of dg in registers; it
writes one ``[G, N]`` fp32 partial-sum buffer that torch sums — no atomics, deterministic, and
``G·N·4`` bytes (29 MB at N = 7168) instead of a ``[rows, N]`` buffer (15 GB at 512K rows). Statistics
are always fp32; loads are upcast right away (the CPU interpreter computes bf16 wrongly otherwise).

Order, as in Triton's tutorials: reference (``kimi_mini.layers.rmsnorm_reference``), kernels, host
wrapper + ``autograd.Function``, check (``tests/test_kernel_rmsnorm.py``), benchmark (``__main__``).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K


@triton.jit
def _rmsnorm_fwd_kernel(X, W, Y, RSTD, stride_x, stride_y, N, eps, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    tl.store(RSTD + row, rstd)
    tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rmsnorm_bwd_kernel(DY, X, W, RSTD, DX, DW_PART, stride_dy, stride_x, stride_dx, M, N,
                        BLOCK_N: tl.constexpr):
    g = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    row = g.to(tl.int64)
    for _ in range(g, M, n_programs):  # rows g, g + G, g + 2G, … (64-bit offsets)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        dyw = dy * w
        c = tl.sum(dyw * x, axis=0) / N
        dx = rstd * (dyw - x * rstd * rstd * c)
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * x * rstd
        row += n_programs
    tl.store(DW_PART + g.to(tl.int64) * N + cols, dw, mask=mask)


MAX_BWD_PROGRAMS = 1024  # rows per backward program = ⌈rows / 1024⌉; the dg partial buffer is [≤1024, N]


def _rows(x: Tensor) -> Tensor:
    x2 = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # not -1: ambiguous when N = 0
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _block(n: int) -> int:
    if n > 65536:
        raise ValueError(f"x: last dimension {n} exceeds the kernel's one-block row limit of 65536")
    return triton.next_power_of_2(n)


def _warps(block_n: int) -> int:
    """Wide rows get more warps: the backward holds dy, x, w and its dg share per thread (at 4 warps,
    N = 7168 needs 255 registers and spills; measured by kimi_mini.kernels.aot)."""
    return min(16, max(4, block_n // 512))


def bwd_programs(rows: int) -> int:
    """Programs of the backward (= rows of its dg partial-sum buffer)."""
    return max(1, min(rows, MAX_BWD_PROGRAMS))


def rmsnorm_fwd(x: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(y, rstd [rows] fp32)`` for checked inputs; y has x's shape and dtype."""
    x2 = _rows(x)
    M, N = x2.shape
    y = torch.empty_like(x2)
    rstd = torch.empty(M, device=x.device, dtype=torch.float32)
    if x2.numel():
        _rmsnorm_fwd_kernel[(M,)](x2, weight, y, rstd, x2.stride(0), y.stride(0), N, eps, BLOCK_N=_block(N),
                                  num_warps=_warps(_block(N)))
    return y.view(x.shape), rstd


def rmsnorm_bwd(dy: Tensor, x: Tensor, weight: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    """``(dx, dweight)`` for checked inputs."""
    dy2, x2 = _rows(dy), _rows(x)
    M, N = x2.shape
    dx = torch.empty_like(x2)
    if x2.numel() == 0:
        return dx.view(x.shape), torch.zeros_like(weight)
    G = bwd_programs(M)
    dw_part = torch.empty(G, N, device=x.device, dtype=torch.float32)
    _rmsnorm_bwd_kernel[(G,)](dy2, x2, weight, rstd, dx, dw_part, dy2.stride(0), x2.stride(0), dx.stride(0),
                              M, N, BLOCK_N=_block(N), num_warps=_warps(_block(N)))
    return dx.view(x.shape), dw_part.sum(0).to(weight.dtype)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        y, rstd = rmsnorm_fwd(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = rmsnorm_bwd(dy, x, weight, rstd)
        return dx, dw, None


def rmsnorm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """Fused RMSNorm: ``x [..., N]``, ``weight [N]`` → ``[..., N]`` in x's dtype; differentiable.

    x and weight: fp32/fp16/bf16 on one device (CUDA when the kernels are compiled, CPU in the
    interpreter); ``eps`` > 0 and finite. Empty inputs give empty outputs."""
    K.check_tensor("x", x)
    if x.dim() < 1:
        raise ValueError("x: expected a tensor [..., N], got a scalar")
    K.check_tensor("weight", weight, like=x)
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight: expected shape [{x.shape[-1]}], got {tuple(weight.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < math.inf):
        raise ValueError(f"eps: expected a positive finite float, got {eps!r}")
    _block(x.shape[-1])
    return RMSNormFunction.apply(x, weight, float(eps))


if __name__ == "__main__":  # python -m kimi_mini.kernels.rmsnorm: the kernel vs torch, side by side
    from kimi_mini.bench import format_table, time_it
    from kimi_mini.layers import rmsnorm_reference

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [(4096, 1024), (8192, 4096)] if device == "cuda" else [(64, 256)]
    rows = []
    for M, N in sizes:
        x = torch.randn(M, N, device=device)
        w = torch.randn(N, device=device)
        t_ref = time_it(lambda x=x, w=w: rmsnorm_reference(x, w))
        t_tri = time_it(lambda x=x, w=w: rmsnorm(x, w))
        rows.append({"M": M, "N": N, "torch ms": 1e3 * t_ref, "triton ms": 1e3 * t_tri,
                     "torch/triton": t_ref / t_tri})
    print(format_table(rows))
    if device == "cpu":
        print("note: on CPU the kernel runs in Triton's interpreter — correctness, not speed")
