"""Fused polynomial fusion in Triton: forward and backward without the ``[N, P, R, K]`` projections.

Paper: *Multimodal Polynomial Fusion for Detecting Driver Distraction* (arXiv 1810.10565). For
z ``[N, D]`` (modalities and the constant 1 concatenated) and factors W ``[P, R, D, K]``:

    a_{p,r} = z W[p, r]                         [N, K]   (the P·R projections)
    y       = Σ_r Π_p a_{p,r}                                                  (forward)
    g_{p,r} = dy ∘ Π_{q≠p} a_{q,r}              (∂y/∂a_{p,r} applied to dy)
    dz      = Σ_{p,r} g_{p,r} W[p, r]ᵀ,   dW[p, r] = zᵀ g_{p,r}                (backward)

The PyTorch path (``impl="torch"`` in :func:`kimi_mini.fusion.polynomial_fusion`) materialises every
a_{p,r} for all rows (``[N, P, R, K]``, kept for backward). Here one program owns a tile of rows and a
tile of outputs and walks r, holding only the P projections of the current r in registers; the backward
recomputes them (nothing but z and W is saved). Three kernels: forward over (row tile, K tile); dz over
(row tile, D tile); dW over (r, D tile, K tile), each looping over what it reduces. The order P is a
compile-time constant ≤ 4, so the P projections are named registers and "the product of the others"
is written out; z and W are upcast to fp32 right after loading (the interpreter's bf16 is wrong).

Order, as in Triton's tutorials: reference (``impl="naive"``/``"torch"``), kernels, host wrapper +
``autograd.Function``, check (``tests/test_fusion_kernel.py``), benchmark (``__main__``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K

__all__ = ["polynomial_fusion", "PolynomialFusionFunction", "MAX_ORDER"]

MAX_ORDER = 4


@triton.jit
def _project(Z, W, rows64, cols, stride_z, N, D, K, pr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
             BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """z[rows] @ W[pr][:, cols] in fp32, pr = p·R + r: one ``[BLOCK_N, BLOCK_K]`` projection tile."""
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    w_base = W + pr * D * K  # factors hold < 2³¹ numbers (checked by the wrapper)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        z = tl.load(Z + rows64[:, None] * stride_z + ds[None, :], mask=(rows64[:, None] < N) & (ds[None, :] < D),
                    other=0.0).to(tl.float32)
        w = tl.load(w_base + ds[:, None] * K + cols[None, :], mask=(ds[:, None] < D) & (cols[None, :] < K),
                    other=0.0).to(tl.float32)
        acc += tl.dot(z, w, input_precision=PRECISION)
    return acc


@triton.jit
def _projections(Z, W, rows64, cols, stride_z, N, D, K, R, r, P: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """The P ≤ 4 projections a_{p,r} of one tile (ones for p ≥ P, so products ignore them)."""
    one = tl.full((BLOCK_N, BLOCK_K), 1.0, tl.float32)
    a0 = _project(Z, W, rows64, cols, stride_z, N, D, K, r, BLOCK_N, BLOCK_D, BLOCK_K, PRECISION)
    a1 = one
    a2 = one
    a3 = one
    if P > 1:
        a1 = _project(Z, W, rows64, cols, stride_z, N, D, K, R + r, BLOCK_N, BLOCK_D, BLOCK_K, PRECISION)
    if P > 2:
        a2 = _project(Z, W, rows64, cols, stride_z, N, D, K, 2 * R + r, BLOCK_N, BLOCK_D, BLOCK_K, PRECISION)
    if P > 3:
        a3 = _project(Z, W, rows64, cols, stride_z, N, D, K, 3 * R + r, BLOCK_N, BLOCK_D, BLOCK_K, PRECISION)
    return a0, a1, a2, a3


@triton.jit
def _fusion_fwd_kernel(Z, W, Y, stride_z, stride_y, N, D, K, R, P: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    n_k = tl.cdiv(K, BLOCK_K)
    rows64 = ((pid // n_k) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols = (pid % n_k) * BLOCK_K + tl.arange(0, BLOCK_K)
    y = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for r in range(R):
        a0, a1, a2, a3 = _projections(Z, W, rows64, cols, stride_z, N, D, K, R, r, P, BLOCK_N, BLOCK_D,
                                      BLOCK_K, PRECISION)
        y += a0 * a1 * a2 * a3
    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty),
             mask=(rows64[:, None] < N) & (cols[None, :] < K))


@triton.jit
def _fusion_bwd_dz_kernel(Z, W, DY, DZ, stride_z, stride_dy, stride_dz, N, D, K, R, P: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    n_d = tl.cdiv(D, BLOCK_D)
    rows64 = ((pid // n_d) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    ds = (pid % n_d) * BLOCK_D + tl.arange(0, BLOCK_D)
    dz = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for r in range(R):
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            a0, a1, a2, a3 = _projections(Z, W, rows64, cols, stride_z, N, D, K, R, r, P, BLOCK_N, BLOCK_D,
                                      BLOCK_K, PRECISION)
            dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :],
                         mask=(rows64[:, None] < N) & (cols[None, :] < K), other=0.0).to(tl.float32)
            wmask = (cols[:, None] < K) & (ds[None, :] < D)
            for p in tl.static_range(P):  # g_p = dy ∘ Π_{q≠p} a_q, then dz += g_p W[p, r]ᵀ
                if p == 0:
                    g = dy * a1 * a2 * a3
                elif p == 1:
                    g = dy * a0 * a2 * a3
                elif p == 2:
                    g = dy * a0 * a1 * a3
                else:
                    g = dy * a0 * a1 * a2
                wt = tl.load(W + (p * R + r) * D * K + ds[None, :] * K + cols[:, None], mask=wmask,
                             other=0.0).to(tl.float32)  # [BLOCK_K, BLOCK_D] = W[p, r]ᵀ tile
                dz += tl.dot(g, wt, input_precision=PRECISION)
    tl.store(DZ + rows64[:, None] * stride_dz + ds[None, :], dz.to(DZ.dtype.element_ty),
             mask=(rows64[:, None] < N) & (ds[None, :] < D))


@triton.jit
def _fusion_bwd_dw_kernel(Z, W, DY, DW, stride_z, stride_dy, N, D, K, R, P: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    n_d = tl.cdiv(D, BLOCK_D)
    n_k = tl.cdiv(K, BLOCK_K)
    r = pid // (n_d * n_k)
    ds = ((pid // n_k) % n_d) * BLOCK_D + tl.arange(0, BLOCK_D)
    cols = (pid % n_k) * BLOCK_K + tl.arange(0, BLOCK_K)
    dw0 = tl.zeros((BLOCK_D, BLOCK_K), dtype=tl.float32)
    dw1 = tl.zeros((BLOCK_D, BLOCK_K), dtype=tl.float32)
    dw2 = tl.zeros((BLOCK_D, BLOCK_K), dtype=tl.float32)
    dw3 = tl.zeros((BLOCK_D, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows64 = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        a0, a1, a2, a3 = _projections(Z, W, rows64, cols, stride_z, N, D, K, R, r, P, BLOCK_N, BLOCK_D,
                                      BLOCK_K, PRECISION)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :],
                     mask=(rows64[:, None] < N) & (cols[None, :] < K), other=0.0).to(tl.float32)
        zt = tl.load(Z + rows64[None, :] * stride_z + ds[:, None], mask=(rows64[None, :] < N) & (ds[:, None] < D),
                     other=0.0).to(tl.float32)  # [BLOCK_D, BLOCK_N] = z tileᵀ
        dw0 += tl.dot(zt, dy * a1 * a2 * a3, input_precision=PRECISION)
        if P > 1:
            dw1 += tl.dot(zt, dy * a0 * a2 * a3, input_precision=PRECISION)
        if P > 2:
            dw2 += tl.dot(zt, dy * a0 * a1 * a3, input_precision=PRECISION)
        if P > 3:
            dw3 += tl.dot(zt, dy * a0 * a1 * a2, input_precision=PRECISION)
    offs = ds[:, None] * K + cols[None, :]
    mask = (ds[:, None] < D) & (cols[None, :] < K)
    tl.store(DW + r * D * K + offs, dw0.to(DW.dtype.element_ty), mask=mask)
    if P > 1:
        tl.store(DW + (R + r) * D * K + offs, dw1.to(DW.dtype.element_ty), mask=mask)
    if P > 2:
        tl.store(DW + (2 * R + r) * D * K + offs, dw2.to(DW.dtype.element_ty), mask=mask)
    if P > 3:
        tl.store(DW + (3 * R + r) * D * K + offs, dw3.to(DW.dtype.element_ty), mask=mask)


def _precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision: the shared rule of ``kimi_mini.kernels`` where it exists (fp32 inputs
    keep fp32 accuracy), else ``"ieee"``."""
    rule = getattr(K, "dot_precision", None)
    return rule(dtype) if rule is not None else "ieee"


def _blocks(D: int, K: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """Powers of two ≥ 16 (``tl.dot``'s minimum) for rows, the D chunk and the K tile; fp32 tiles take a
    narrower D chunk (its three-pass fp32 dot needs more registers)."""
    d_max = 32 if dtype == torch.float32 else 64
    return 32, max(16, min(d_max, triton.next_power_of_2(D))), max(16, min(32, triton.next_power_of_2(K)))


def polynomial_fusion_fwd(z: Tensor, factors: Tensor) -> Tensor:
    P, R, D, K = factors.shape
    N = z.shape[0]
    y = torch.empty(N, K, device=z.device, dtype=z.dtype)
    BN, BD, BK = _blocks(D, K, z.dtype)
    grid = (triton.cdiv(N, BN) * triton.cdiv(K, BK),)
    _fusion_fwd_kernel[grid](z, factors, y, z.stride(0), y.stride(0), N, D, K, R, P=P, BLOCK_N=BN, BLOCK_D=BD,
                             BLOCK_K=BK, PRECISION=_precision(z.dtype))
    return y


def polynomial_fusion_bwd(dy: Tensor, z: Tensor, factors: Tensor) -> tuple[Tensor, Tensor]:
    P, R, D, K = factors.shape
    N = z.shape[0]
    dy = dy.contiguous()
    dz = torch.empty_like(z)
    dw = torch.empty_like(factors)
    BN, BD, BK = _blocks(D, K, z.dtype)
    n_d = triton.cdiv(D, BD)
    _fusion_bwd_dz_kernel[(triton.cdiv(N, BN) * n_d,)](z, factors, dy, dz, z.stride(0), dy.stride(0), dz.stride(0),
                                                        N, D, K, R, P=P, BLOCK_N=BN, BLOCK_D=BD, BLOCK_K=BK,
                                                        PRECISION=_precision(z.dtype))
    _fusion_bwd_dw_kernel[(R * n_d * triton.cdiv(K, BK),)](z, factors, dy, dw, z.stride(0), dy.stride(0), N, D, K, R,
                                                            P=P, BLOCK_N=BN, BLOCK_D=BD, BLOCK_K=BK,
                                                            PRECISION=_precision(z.dtype))
    return dz, dw


class PolynomialFusionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, factors: Tensor) -> Tensor:
        ctx.save_for_backward(z, factors)  # only the inputs: the projections are recomputed
        return polynomial_fusion_fwd(z, factors)

    @staticmethod
    def backward(ctx, dy: Tensor):
        z, factors = ctx.saved_tensors
        dz, dw = polynomial_fusion_bwd(dy, z, factors)
        return dz, dw


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def polynomial_fusion(z: Tensor, factors: Tensor) -> Tensor:
    """Fused y_{n,k} = Σ_r Π_p ⟨factors[p, r, :, k], z_n⟩: z ``[N, D]``, factors ``[P, R, D, K]`` (P ≤ 4), both
    contiguous, same dtype (fp32/fp16/bf16) and device → ``[N, K]`` in z's dtype; differentiable."""
    for name, t in (("z", z), ("factors", factors)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: expected dtype float32, float16 or bfloat16, got {t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"{name}: expected a contiguous tensor (call .contiguous())")
        if getattr(K, "COMPILE_ONLY", False):  # kimi_mini.kernels.aot: compiled for a GPU, never launched
            continue
        if t.device.type == "meta" or (not K.INTERPRETED and t.device.type != "cuda"):
            raise ValueError(f"{name}: expected a CUDA tensor (a CPU one only in Triton's interpreter), "
                             f"got device {t.device}")
    if z.dim() != 2 or z.shape[1] < 1:
        raise ValueError(f"z: expected an [N, D] tensor with D >= 1, got shape {tuple(z.shape)}")
    if factors.dim() != 4 or min(factors.shape) < 1:
        raise ValueError(f"factors: expected [P, R, {z.shape[1]}, K] with P, R, K >= 1, got {tuple(factors.shape)}")
    if factors.shape[2] != z.shape[1]:
        raise ValueError(f"z: expected [N, {factors.shape[2]}] (the D of factors {tuple(factors.shape)}), "
                         f"got shape {tuple(z.shape)}")
    if factors.shape[0] > MAX_ORDER:
        raise ValueError(f"factors: the kernel supports order P <= {MAX_ORDER}, got P = {factors.shape[0]}")
    if factors.numel() >= 2**31:
        raise ValueError(f"factors: expected fewer than 2**31 numbers, got {factors.numel()}")
    if factors.dtype != z.dtype:
        raise ValueError(f"factors: expected z's dtype {z.dtype}, got {factors.dtype}")
    if factors.device != z.device:
        raise ValueError(f"factors: expected z's device {z.device}, got {factors.device}")
    if z.shape[0] == 0:  # empty in, empty out (README): nothing to launch, but still differentiable
        return torch.einsum("nd,prdk->nprk", z, factors).prod(dim=1).sum(dim=1)
    return PolynomialFusionFunction.apply(z, factors)


if __name__ == "__main__":  # python -m kimi_mini.kernels.fusion: the kernel vs the torch path, side by side
    from kimi_mini.bench import format_table, time_it
    from kimi_mini.fusion import polynomial_fusion as polynomial_fusion_ref

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [(65536, 97, 3, 8, 32), (65536, 257, 3, 16, 64)] if device == "cuda" else [(64, 25, 3, 4, 16)]
    rows = []
    for N, D, P, R, K in sizes:
        z = torch.randn(N, D, device=device, requires_grad=True)
        w = (torch.randn(P, R, D, K, device=device) / D ** 0.5).requires_grad_()
        t_ref = time_it(lambda z=z, w=w: polynomial_fusion_ref(z, w, "torch").sum().backward())
        t_tri = time_it(lambda z=z, w=w: polynomial_fusion(z, w).sum().backward())
        rows.append({"N": N, "D": D, "P": P, "R": R, "K": K, "torch ms": 1e3 * t_ref, "triton ms": 1e3 * t_tri,
                     "torch/triton": t_ref / t_tri})
    print(format_table(rows))
    if device == "cpu":
        print("note: on CPU the kernel runs in Triton's interpreter — correctness, not speed")
