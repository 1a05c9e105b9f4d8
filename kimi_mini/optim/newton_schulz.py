"""The quintic Newton–Schulz iteration that Muon uses to orthogonalise an update (Moonlight, arXiv
2502.16982, §2; Jordan et al.'s coefficients)::

    X_0 = G / (‖G‖_F + ε)       (transposed first when A > B, so that X·Xᵀ is the small Gram matrix)
    X_{k+1} = a·X_k + (b·X_k X_kᵀ + c·(X_k X_kᵀ)²)·X_k,      (a, b, c) = (3.4445, −4.7750, 2.0315)

On each singular value σ one step is the odd polynomial φ(σ) = aσ + bσ³ + cσ⁵; five steps send every
σ ∈ (0, 1] that is not tiny into roughly [0.68, 1.2] and keep the singular vectors.

Precision: NS runs in bf16 on CUDA (as the paper) and in fp32 on CPU; pass ``dtype=`` to choose.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kimi_mini.impl import resolve_impl

__all__ = ["NS_COEFFICIENTS", "NS_IMPLS", "default_ns_dtype", "ns_polynomial", "newton_schulz_step", "newton_schulz",
           "svd_orthogonalize"]

NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
NS_IMPLS = ("torch", "triton", "auto")  # NS has no separate reference: the torch loop is the equations
MAX_NS_STEPS = 100  # far past convergence; a bound so that a typo cannot hang the process


def ns_polynomial(sigma: Tensor | float, coefficients: tuple[float, float, float] = NS_COEFFICIENTS):
    """What one NS step does to a singular value: ``φ(σ) = a·σ + b·σ³ + c·σ⁵``."""
    a, b, c = coefficients
    return a * sigma + b * sigma**3 + c * sigma**5


def newton_schulz_step(X: Tensor, coefficients: tuple[float, float, float] = NS_COEFFICIENTS) -> Tensor:
    """One quintic step ``X ← a·X + (b·A + c·A·A)·X`` with ``A = X·Xᵀ``. ``X``: ``[..., m, n]``, m ≤ n."""
    a, b, c = coefficients
    A = X @ X.mT  # [..., m, m], the Gram matrix (symmetric)
    B = b * A + c * (A @ A)  # [..., m, m]
    return a * X + B @ X  # [..., m, n]


def default_ns_dtype(G: Tensor) -> torch.dtype:
    return torch.bfloat16 if G.is_cuda else torch.float32


def newton_schulz(G: Tensor, steps: int = 5, eps: float = 1e-7, *, impl: str = "torch",
                  dtype: torch.dtype | None = None,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS) -> Tensor:
    """Approximate ``U·Vᵀ`` of ``G = U·Σ·Vᵀ`` with ``steps`` quintic Newton–Schulz steps.

    Args:
        G: ``[..., A, B]`` float tensor; leading dims are a batch of independent matrices.
        steps: number of NS steps (Moonlight: 5).
        eps: added to the Frobenius norm before normalising (so a zero matrix maps to zero).
        impl: ``"torch"`` (matmuls), ``"auto"`` (triton on CUDA) or ``"triton"``
            (:mod:`kimi_mini.kernels.newton_schulz`: the
            symmetric ``X·Xᵀ`` computed on upper tiles only and the fused ``b·A + c·A·A``).
        dtype: compute dtype; default bf16 on CUDA, fp32 on CPU.
    Returns:
        ``[..., A, B]`` in ``G.dtype``; its singular values lie in ≈[0.68, 1.2] (except where ``G`` has
        singular values far below its largest one, which five steps cannot lift all the way).
    """
    if not isinstance(G, Tensor) or G.dim() < 2 or not G.is_floating_point():
        desc = f"{G.dtype} {tuple(G.shape)}" if isinstance(G, Tensor) else type(G).__name__
        raise ValueError(f"G: expected a floating tensor [..., A, B] with at least 2 dims, got {desc}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= MAX_NS_STEPS:
        raise ValueError(f"steps: expected an int in [0, {MAX_NS_STEPS}], got {steps!r}")
    impl = resolve_impl(impl, G, NS_IMPLS)
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps: expected a finite number >= 0, got {eps!r}")
    if G.numel() == 0:  # a [0, n] matrix (or an empty batch) has nothing to orthogonalise
        return G.clone()
    X = G.to(dtype or default_ns_dtype(G))
    transposed = X.size(-2) > X.size(-1)
    if transposed:  # keep the Gram matrix X·Xᵀ the small one: min(A, B)²
        X = X.mT
    norm = torch.linalg.matrix_norm(X.float() if X.itemsize < 4 else X, keepdim=True)  # fp32+ sum of squares
    X = X / (norm.to(X.dtype) + eps)
    if impl == "triton":
        from kimi_mini.kernels.newton_schulz import newton_schulz_step_triton

        for _ in range(steps):
            X = newton_schulz_step_triton(X, coefficients)
    else:
        shape = X.shape
        X = X.reshape(-1, *shape[-2:])  # [batch, m, n]: baddbmm fuses the scalings into the matmuls
        a, b, c = coefficients
        for _ in range(steps):  # newton_schulz_step, fused: two fewer passes over memory per step
            A = X @ X.mT
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)
            X = torch.baddbmm(X, B, X, beta=a)
        X = X.reshape(shape)
    if transposed:
        X = X.mT
    return X.to(G.dtype)


def svd_orthogonalize(G: Tensor) -> Tensor:
    """The exact orthogonal factor ``U·Vᵀ`` of ``G = U·Σ·Vᵀ`` (fp64 SVD): what NS approximates."""
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return (U @ Vh).to(G.dtype)


